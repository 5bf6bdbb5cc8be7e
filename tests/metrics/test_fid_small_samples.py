"""FID on small sets: the low-rank computation and the small-sample warning (no Inception network needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from PIL import Image

from unitgan.cli import main
from unitgan.config import load_config
from unitgan.errors import UnitganError
from unitgan.metrics.fid import (
    FID_MIN_IMAGES,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    small_sample_warning,
)
from unitgan.train.loop import train


@pytest.mark.parametrize("n1, n2, d", [(5, 7, 20), (20, 20, 20), (3, 4, 300)])
def test_fewer_samples_than_dimensions_give_the_textbook_value(n1, n2, d):
    rng = np.random.default_rng(n1 + d)
    f1 = rng.normal(size=(n1, d))
    f2 = rng.normal(size=(n2, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + 0.3
    full = frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    assert fid_from_features(f1, f2) == pytest.approx(full, rel=1e-6)
    assert fid_from_features(f1, f1) == pytest.approx(0.0, abs=1e-9)


def test_a_shift_of_a_small_set_gives_the_squared_shift():
    f = np.random.default_rng(0).normal(size=(6, 50))
    assert fid_from_features(f, f + 0.5) == pytest.approx(50 * 0.25, rel=1e-9)


def test_small_sets_with_different_widths_are_refused():
    with pytest.raises(UnitganError, match="differ in width"):
        fid_from_features(np.zeros((3, 4)), np.zeros((3, 5)))


def test_small_sample_warning_names_the_counts_and_points_to_kid():
    msg = small_sample_warning(18, 12)
    assert msg is not None and "18 real and 12 translated images" in msg and "KID" in msg and "\n" not in msg
    assert small_sample_warning(FID_MIN_IMAGES, 50_000) is None
    assert small_sample_warning(50_000, FID_MIN_IMAGES - 1) is not None  # either side small is enough
    assert small_sample_warning(100, 100, min_images=100) is None
    assert FID_MIN_IMAGES == 2048


class MeanColour(torch.nn.Module):
    """A stand-in feature network: mean colour and its square, 6 features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(2, 3))
        return torch.cat([m, m * m], 1)


def test_evaluate_on_small_sets_warns_names_the_counts_and_points_to_kid(tmp_path, capsys, caplog):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    counts = {"trainA": 4, "trainB": 4, "testA": 5, "testB": 3}
    for split, n in counts.items():
        (root / split).mkdir(parents=True)
        for i in range(n):
            shape = (16, 16) if split.endswith("A") else (16, 16, 3)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(root / split / f"img{i}.png")
    run = tmp_path / "run"
    cfg = load_config("demo", [*tiny_overrides(run, **{"train.steps": 1}), "data.source=folder", f"data.root={root}"])
    train(cfg, progress=False)
    net = tmp_path / "features.pt"
    torch.jit.script(MeanColour()).save(str(net))
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(run), "--inception", str(net), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    a2b, b2a = res["fid_kid_a2b"], res["fid_kid_b2a"]
    assert (a2b["n_real"], a2b["n_fake"], b2a["n_real"], b2a["n_fake"]) == (3, 5, 5, 3)
    assert a2b["fid_warning"] == small_sample_warning(3, 5) and b2a["fid_warning"] == small_sample_warning(5, 3)
    assert small_sample_warning(3, 5) in caplog.text
    table = capsys.readouterr().out
    assert "n_real" in table and "n_fake" in table and "KID" in table
