"""Scores of a multimodal translation against a ground truth with K right answers per input.

For each of N inputs a model gives S samples (different style codes), and the data set knows the K valid
renderings (``SyntheticDomain.multimodal_pair``). With ``acc(x, y)`` the pixel accuracy of
:func:`unitgan.metrics.pixel.pixel_accuracy` (a pixel is right when every channel is within ``threshold``):

- mode coverage: per input, the fraction of the K ground truths that at least one sample matches, a match
  being ``acc >= match``; averaged over inputs. A unimodal model (one output per input) covers at most 1/K
  when the modes are far apart, as those of the synthetic domain are;
- accuracy to the nearest ground truth: the mean over inputs and samples of ``max_k acc(sample, truth_k)``.
  Diverse garbage covers nothing and scores low here;
- diversity: the mean over inputs of the mean distance between two different samples of that input, in
  pixels (mean absolute difference on the [0, 1] scale) and, optionally, in the Inception feature space that
  FID uses (Euclidean distance between pool features).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from unitgan.config import Config
from unitgan.data import SyntheticDomain, build_domain
from unitgan.errors import UnitganError
from unitgan.metrics.fid import extract_features, load_inception
from unitgan.metrics.pixel import pixel_accuracy

log = logging.getLogger(__name__)

MATCH_ACCURACY = 0.75  # a sample matches a ground truth when its pixel accuracy against it is at least this


def _accuracy_table(samples: torch.Tensor, truths: torch.Tensor, threshold: float) -> torch.Tensor:
    """Pixel accuracy of every sample against every ground truth of its input: [N, S, K]."""
    if samples.ndim != 5 or truths.ndim != 5 or samples.shape[0] != truths.shape[0]:
        raise ValueError(
            f"need samples [N, S, C, H, W] and truths [N, K, C, H, W], got {tuple(samples.shape)}, {tuple(truths.shape)}"
        )
    n, s, k = samples.shape[0], samples.shape[1], truths.shape[1]
    pred = samples[:, :, None].expand(-1, -1, k, -1, -1, -1).flatten(0, 2)  # [N*S*K, C, H, W]
    target = truths[:, None].expand(-1, s, -1, -1, -1, -1).flatten(0, 2)
    return pixel_accuracy(pred, target, threshold).view(n, s, k)


def mode_coverage(
    samples: torch.Tensor, truths: torch.Tensor, threshold: float = 0.1, match: float = MATCH_ACCURACY
) -> float:
    """Mean over inputs of the fraction of the K ground truths matched by some sample.

    ``samples`` [N, S, C, H, W], ``truths`` [N, K, C, H, W], both in [-1, 1]."""
    acc = _accuracy_table(samples, truths, threshold)  # [N, S, K]
    return float((acc.amax(dim=1) >= match).float().mean())


def nearest_accuracy(samples: torch.Tensor, truths: torch.Tensor, threshold: float = 0.1) -> float:
    """Mean over inputs and samples of the pixel accuracy against the closest of the K ground truths."""
    return float(_accuracy_table(samples, truths, threshold).amax(dim=2).mean())


def _mean_pairwise(x: torch.Tensor, dist) -> float:
    """Mean of ``dist(x[:, i], x[:, j])`` over inputs and sample pairs i < j; ``x`` [N, S, ...], S >= 2."""
    if x.shape[1] < 2:
        raise ValueError(f"diversity needs at least 2 samples per input, got {x.shape[1]}")
    i, j = torch.triu_indices(x.shape[1], x.shape[1], offset=1)
    return float(dist(x[:, i], x[:, j]).mean())


def pixel_diversity(samples: torch.Tensor) -> float:
    """Mean absolute difference (on the [0, 1] scale) between two samples of one input, ``samples``
    [N, S, C, H, W] in [-1, 1]."""
    return _mean_pairwise(samples.float(), lambda p, q: (p - q).abs().mean(dim=(2, 3, 4)) / 2)


def feature_diversity(samples: torch.Tensor, features: nn.Module, device: torch.device | str = "cpu") -> float:
    """Mean Euclidean distance between the feature vectors (e.g. Inception pool features, ``features`` from
    :func:`unitgan.metrics.fid.load_inception`) of two samples of one input. ``samples`` [N, S, C, H, W]."""
    n, s = samples.shape[:2]
    feats = extract_features(features, samples.flatten(0, 1).split(32), device).view(n, s, -1)  # [N, S, D]
    return _mean_pairwise(feats.double(), lambda p, q: (p - q).norm(dim=-1))


def optional_inception(path: str | Path | None = None) -> nn.Module | None:
    """The FID feature network (a named file, else the bundled one), or None when there is none here.

    Never downloads; the caller skips the feature diversity when this returns None."""
    try:
        return load_inception(path, download=False)
    except UnitganError as e:
        log.info("no Inception features, feature diversity skipped: %s", e)
        return None


def multimodal_scores(
    samples: torch.Tensor,
    truths: torch.Tensor,
    threshold: float = 0.1,
    match: float = MATCH_ACCURACY,
    features: nn.Module | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float | None]:
    """All the scores above as a dict for reports; ``feature_diversity`` is None without ``features``."""
    return {
        "coverage": mode_coverage(samples, truths, threshold, match),
        "nearest_accuracy": nearest_accuracy(samples, truths, threshold),
        "pixel_diversity": pixel_diversity(samples) if samples.shape[1] > 1 else None,
        "feature_diversity": feature_diversity(samples, features, device)
        if features is not None and samples.shape[1] > 1
        else None,
        "threshold": threshold,
        "match": match,
        "n_inputs": samples.shape[0],
        "n_samples": samples.shape[1],
        "n_modes": truths.shape[1],
    }


def synthetic_ground_truth(cfg: Config, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out scenes of a synthetic config as inputs and all their right answers: sketches ``x_a``
    [N, 1, S, S] and renderings [N, K, 3, S, S] (K = ``data.synthetic_modes``); ``n`` caps N."""
    ds = build_domain(cfg, "b", "test")
    if not isinstance(ds, SyntheticDomain):
        raise UnitganError("config key 'data.source' must be synthetic to score modes (a known ground truth)")
    pairs = [ds.multimodal_pair(i) for i in range(min(len(ds), n or len(ds)))]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


@torch.no_grad()
def style_samples(gen: nn.Module, x_a: torch.Tensor, n_styles: int, seed: int = 0, batch: int = 50) -> torch.Tensor:
    """``n_styles`` A -> B translations of every input ``x_a`` [N, C, H, W] -> [N, S, 3, H, W].

    A generator with ``sample_style`` (MUNIT) gets S styles per input from its test-time prior (a generator seeded
    with ``seed``: the same samples every call); a unimodal one (UNIT) gives its one translation S times."""
    param = next(gen.parameters())
    g = torch.Generator(param.device).manual_seed(seed)
    out = []
    for x in x_a.split(batch):
        x = x.to(param.device)
        if hasattr(gen, "sample_style"):
            # the S styles of one input are drawn together (from a bank they spread over its looks)
            s = torch.stack([gen.sample_style(n_styles, x, g, domain="b") for _ in range(len(x))], 1)  # [S, n, D]
            ys = [gen.translate(x, "a2b", style=s[i]) for i in range(n_styles)]
        else:
            ys = [gen.translate(x, "a2b")] * n_styles
        out.append(torch.stack(ys, 1).float().cpu())  # [n, S, 3, H, W]
    return torch.cat(out)
