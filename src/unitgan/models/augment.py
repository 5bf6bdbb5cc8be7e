"""Differentiable augmentation in front of the discriminators (DiffAugment: Zhao et al., "Differentiable
Augmentation for Data-Efficient GAN Training", NeurIPS 2020).

With few training images a discriminator memorises them and its gradients stop helping the generator. The
remedy is to show it only augmented images, real and translated alike, in both phases: D(T(x)) for the
discriminator update and D(T(G(z))) for the generator update. Every transform below is differentiable in its
input, so the generator still gets gradients through it, and is drawn per image from torch's global RNG (so
a resumed run draws the same transforms). Images are [N, C, H, W] in [-1, 1].

Policies (``loss.diffaug``, comma-separated, applied in this order):
    color        brightness +- 0.5, saturation x [0, 2], contrast x [0.5, 1.5]  (saturation skipped for grey)
    translation  shift by up to 1/8 of the size in each axis, zero-filled
    cutout       a square of half the size set to zero at a random place
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def color(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)  # brightness
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)  # [N, 1, H, W]
        x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # [N, 1, 1, 1]
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean  # contrast


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1) + dy  # [N, H, 1] source row of each output row
    xs = torch.arange(w, device=x.device).view(1, 1, w) + dx  # [N, 1, W]
    ys, xs = ys.clamp(-1, h).add(1), xs.clamp(-1, w).add(1)  # into the zero-padded frame
    padded = F.pad(x, (1, 1, 1, 1))  # [N, C, H+2, W+2]; the border is the zero fill
    flat = (ys * (w + 2) + xs).view(n, 1, h * w).expand(-1, x.shape[1], -1)  # [N, C, H*W]
    return padded.flatten(2).gather(2, flat).view_as(x)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device) - ch // 2  # [N, 1, 1] first row
    left = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device) - cw // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1) - top  # [N, H, 1] row inside the square from 0
    cols = torch.arange(w, device=x.device).view(1, 1, w) - left  # [N, 1, W]
    inside = (rows >= 0) & (rows < ch) & (cols >= 0) & (cols < cw)  # [N, H, W]
    return x * (~inside).unsqueeze(1).to(x.dtype)


TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """``x`` [N, C, H, W] with each transform of ``policy`` applied (a new draw per image); ``()`` = ``x``."""
    for name in policy:
        x = TRANSFORMS[name](x)
    return x
