"""Pixel translation accuracy: the paper's map-translation metric."""

from __future__ import annotations

import torch


def pixel_accuracy(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Fraction of pixels whose colour is within ``threshold`` of the target, per image.

    ``pred``, ``target``: [N, C, H, W] in [-1, 1]. A pixel is right when every channel differs by at most
    ``threshold`` on the [0, 1] scale (0.1 = about 25 of 255 grey levels). Returns [N].
    """
    if pred.shape != target.shape:
        raise ValueError(f"pixel_accuracy needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
    diff = (pred.float() - target.float()).abs() / 2  # [-1, 1] -> [0, 1] scale
    right = (diff <= threshold).all(dim=1)  # [N, H, W]
    return right.float().mean(dim=(1, 2))
