"""Domain-adaptation accuracy: the classifier head's accuracy on the target test set."""

from __future__ import annotations

from collections.abc import Callable

import torch

from unitgan.config import Config
from unitgan.data import build_domain
from unitgan.errors import UnitganError


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


def load_split(cfg: Config, domain: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All images [N, C, S, S] and labels [N] of one domain's split (for evaluation)."""
    ds = build_domain(cfg, domain, split, return_labels=True)
    if not getattr(ds, "return_labels", False):
        raise UnitganError(f"data.{domain} has no labels for split '{split}'; DA accuracy needs them")
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def da_accuracy(
    classify: Callable[[torch.Tensor, str], torch.Tensor],
    target_path: str,
    cfg: Config,
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> dict[str, float]:
    """Accuracy of a DA classifier on the target test set (and on the source test set, for reference).

    ``classify(x, domain)``: class logits [N, K] of images x [N, C, H, W] read through the first layer of
    ``domain``; target images go through ``target_path`` ('a' or 'b'), source images through 'a'. ``splits``
    caches the loaded test sets between calls (filled on the first call when given)."""
    splits = {} if splits is None else splits
    if not splits:
        splits["b"], splits["a"] = load_split(cfg, "b", "test"), load_split(cfg, "a", "test")
    (x_b, y_b), (x_a, y_a) = splits["b"], splits["a"]
    return {
        "target_acc": classification_accuracy(lambda x: classify(x, target_path), x_b, y_b),
        "source_acc": classification_accuracy(lambda x: classify(x, "a"), x_a, y_a),
        "n_target_test": len(x_b),
    }
