"""Pixel translation accuracy: the paper's map-translation metric, and its scoring of the synthetic domains."""

from __future__ import annotations

import torch

from unitgan.data.synthetic import render

THRESHOLD = 0.1  # pixel accuracy threshold on the [0, 1] scale (about 25 of 255 grey levels)
TARGET_STYLE = {"a2b": "paint", "b2a": "sketch"}  # the synthetic style each direction translates into


def pixel_accuracy(pred: torch.Tensor, target: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """Fraction of pixels whose colour is within ``threshold`` of the target, per image.

    ``pred``, ``target``: [N, C, H, W] in [-1, 1]. A pixel is right when every channel differs by at most
    ``threshold`` on the [0, 1] scale (0.1 = about 25 of 255 grey levels). Returns [N].
    """
    if pred.shape != target.shape:
        raise ValueError(f"pixel_accuracy needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
    return right_pixels(pred, target, threshold).float().mean(dim=(1, 2))


def right_pixels(pred: torch.Tensor, target: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """[N, C, H, W] x 2 in [-1, 1] -> [N, H, W] bool: every channel within ``threshold`` on the [0, 1] scale."""
    diff = (pred.float() - target.float()).abs() / 2  # [-1, 1] -> [0, 1] scale
    return (diff <= threshold).all(dim=1)


def synthetic_accuracy(
    pred: torch.Tensor, target: torch.Tensor, direction: str, threshold: float = THRESHOLD
) -> dict[str, float | list[float]]:
    """The scoring of the built-in synthetic domains (demo, evaluate, ablation benchmark).

    ``pred``: translations [N, C, S, S]; ``target``: the same scenes rendered in the target style.
    Returns ``all`` (mean pixel accuracy over all pixels), ``per_image`` ([N] of it) and ``shapes``: the
    accuracy over the shape pixels only, pooled over the images (the pixels where the target differs from
    the empty background by more than ``threshold``), so that a blank background cannot pass for a
    translation.
    """
    per_image = pixel_accuracy(pred, target, threshold)  # [N]
    background = render([], target.shape[-1], TARGET_STYLE[direction])[None]  # [1, C, S, S]
    shapes = (target.float() - background).abs().div(2).gt(threshold).any(dim=1)  # [N, S, S]
    right = right_pixels(pred, target, threshold)  # [N, S, S]
    return {
        "all": float(per_image.mean()),
        "shapes": float(right[shapes].float().mean()),
        "per_image": per_image.tolist(),
    }
