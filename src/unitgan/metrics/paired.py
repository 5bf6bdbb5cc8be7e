"""Scores of translations against paired ground truth: L1, PSNR, SSIM and pixel accuracy.

Used by ``unitgan evaluate --gt-a2b/--gt-b2a`` and the emoji benchmark. Every score is computed per image on
the [0, 1] scale and averaged over images. SSIM is scikit-image's (``structural_similarity``, Gaussian
window of sigma 1.5 as in Wang et al. 2004, colour channels averaged); install ``scikit-image`` for it, the
other scores need nothing beyond torch.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from unitgan.metrics.pixel import THRESHOLD, pixel_accuracy

log = logging.getLogger(__name__)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] in [-1, 1] -> float64 in [0, 1] (clamped: a generator's tanh can only round past the ends)."""
    return ((x.double() + 1) / 2).clamp(0, 1)


def ssim_per_image(pred: torch.Tensor, target: torch.Tensor) -> list[float] | None:
    """SSIM of each image pair ([N, C, H, W] in [-1, 1]), or None when scikit-image is not installed."""
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        log.warning("SSIM needs scikit-image (pip install scikit-image); it is left out of the scores")
        return None
    p, t = to_unit(pred).numpy(), to_unit(target).numpy()
    return [
        float(
            structural_similarity(
                t[i].transpose(1, 2, 0),  # [H, W, C]
                p[i].transpose(1, 2, 0),
                channel_axis=2,
                data_range=1.0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
        )
        for i in range(len(p))
    ]


def paired_scores(pred: torch.Tensor, target: torch.Tensor, threshold: float = THRESHOLD) -> dict:
    """Scores of translations ``pred`` against their true counterparts ``target`` ([N, C, H, W] in [-1, 1]).

    Returns the means (``l1``, ``psnr``, ``ssim``, ``pixel_accuracy``), the ``threshold`` and ``per_image``
    lists of each. L1 is the mean absolute difference on the [0, 1] scale; PSNR is 10 log10(1 / MSE) on that
    scale, per image (an exact copy counts as 100 dB); pixel accuracy is the fraction of pixels whose every
    channel is within ``threshold`` (:func:`unitgan.metrics.pixel.pixel_accuracy`).
    """
    if pred.shape != target.shape:
        raise ValueError(f"paired scores need equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
    p, t = to_unit(pred), to_unit(target)
    l1 = (p - t).abs().mean(dim=(1, 2, 3))  # [N]
    mse = (p - t).pow(2).mean(dim=(1, 2, 3))  # [N]
    psnr = torch.where(mse > 0, 10 * torch.log10(1 / mse.clamp_min(1e-10)), torch.full_like(mse, 100.0))
    acc = pixel_accuracy(pred, target, threshold).double()  # [N]
    per_image = {"l1": l1.tolist(), "psnr": psnr.tolist(), "pixel_accuracy": acc.tolist()}
    ssim = ssim_per_image(pred, target)
    if ssim is not None:
        per_image["ssim"] = ssim
    means = {key: float(np.mean(values)) for key, values in per_image.items()}
    return {**means, "threshold": threshold, "per_image": per_image}
