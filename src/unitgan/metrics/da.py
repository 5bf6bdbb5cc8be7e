"""Domain-adaptation accuracy: the classifier head's accuracy on the target test set."""

from __future__ import annotations

from collections.abc import Callable

import torch


@torch.inference_mode()
def classification_accuracy(
    classify: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, batch_size: int = 500
) -> float:
    """Fraction of images ``x`` [N, C, H, W] whose arg-max class logit (``classify`` -> [n, K]) equals ``y`` [N]."""
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"classification_accuracy needs as many labels as images (> 0), got {len(x)} and {len(y)}")
    right = 0
    for i in range(0, len(x), batch_size):
        logits = classify(x[i : i + batch_size])  # [n, K]
        right += int((logits.argmax(1).cpu() == y[i : i + batch_size].cpu()).sum())
    return right / len(x)
