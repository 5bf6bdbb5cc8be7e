"""Resize, crop, flip and normalise, driven by an explicit torch.Generator so runs resume exactly."""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF


def resize_shorter(x: torch.Tensor, size: int) -> torch.Tensor:
    """[..., H, W] -> the shorter side resized to ``size``, aspect kept (antialiased); ``size`` 0 keeps it."""
    return TF.resize(x, [size], antialias=True) if size else x


def augment(
    x: torch.Tensor,
    load_size: int,
    crop_size: int,
    train: bool,
    flip: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """[C, H, W] -> [C, crop, crop]: resize shorter side to ``load_size`` (if set), random crop and flip
    while training (centre crop at test). Images whose shorter side is under ``crop_size`` are resized up
    to it only when ``load_size`` is 0 and the caller allowed it."""
    x = resize_shorter(x, load_size)
    _, h, w = x.shape
    if train:
        top = int(torch.randint(0, h - crop_size + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - crop_size + 1, (1,), generator=generator))
        x = x[:, top : top + crop_size, left : left + crop_size]
        if flip and bool(torch.rand((), generator=generator) < 0.5):
            x = x.flip(-1)
    else:
        x = TF.center_crop(x, [crop_size, crop_size])
    return x.contiguous()
