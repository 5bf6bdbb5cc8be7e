"""Exact resume: a run stopped and resumed equals a run never stopped, bit for bit, across a learning-rate
drop, for UNIT and UNIT-DA alike (docs/reliability.md lists which breakage each test was shown to catch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from unitgan.checkpoint import load_checkpoint
from unitgan.config import load_config
from unitgan.train.loop import train


def flat_tensors(obj, prefix: str = "") -> dict[str, torch.Tensor | float | int]:
    """Every tensor and number inside nested dicts / lists, keyed by its path (for exact comparisons)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flat_tensors(v, f"{prefix}/{k}"))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(flat_tensors(v, f"{prefix}/{i}"))
        return out
    if isinstance(obj, (torch.Tensor, float, int)) and not isinstance(obj, bool):
        return {prefix: obj}
    return {}


def assert_states_equal(a: dict, b: dict) -> int:
    """Weights, optimiser and scheduler states (lr included), RNG: all equal bit for bit. Returns the count."""
    fa, fb = flat_tensors(a), flat_tensors(b)
    fa.pop("/_path", None), fb.pop("/_path", None)
    assert sorted(fa) == sorted(fb)
    differ = [k for k in fa if not (torch.equal(fa[k], fb[k]) if isinstance(fa[k], torch.Tensor) else fa[k] == fb[k])]
    assert not differ, f"{len(differ)} of {len(fa)} entries differ, e.g. {differ[:5]}"
    return len(fa)


# -- exact resume across an lr drop, for each preset family ------------------------------------------------


def test_exact_resume_across_a_learning_rate_drop(tmp_path):
    """Stop at step 3, resume to 8 with the rate halved at step 4 and 8: equal to a run never stopped."""
    extra = {"optim.lr_step": 4, "train.ckpt_every": 3, "train.image_every": 100}
    full = train(tiny_config(tmp_path / "full", **{"train.steps": 8, **extra}), progress=False)
    part = train(tiny_config(tmp_path / "part", **{"train.steps": 3, **extra}), progress=False)
    assert part.step == 3
    resumed = train(tiny_config(tmp_path / "part", **{"train.steps": 8, **extra}), progress=False)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a["step"] == b["step"] == 8
    cfg = tiny_config(tmp_path)
    for opt, lr in (("opt_gen", cfg.optim.lr), ("opt_dis", cfg.optim.dis_lr)):
        assert b[opt]["param_groups"][0]["lr"] == pytest.approx(lr * cfg.optim.lr_gamma**2)  # two drops
    assert assert_states_equal(a, b) > 50


def write_digits_npz(path: Path, n: int, size: int, channels: int, seed: int) -> Path:
    """Tiny labelled 'digit' arrays (3 classes, a bright band whose row depends on the label)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in ("train", "test"):
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 60, (n, size, size) + ((channels,) if channels == 3 else ())).astype(np.uint8)
        for i, label in enumerate(y):
            x[i, label * size // 3 : (label + 1) * size // 3] = 250
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    np.savez(path, **arrays)
    return path


def da_config(tmp_path: Path, out: str, steps: int):
    a = write_digits_npz(tmp_path / "src.npz", 16, 12, 1, seed=0)
    b = write_digits_npz(tmp_path / "tgt.npz", 16, 12, 3, seed=1)
    overrides = [f"data.a={a}", f"data.b={b}", f"train.out_dir={tmp_path / out}", f"train.steps={steps}"]
    overrides += ["train.ckpt_every=3", "train.log_every=1", "data.crop_size=16", "data.batch_size=4"]
    overrides += ["model.ch=4", "model.dis_ch=4", "model.n_res=1", "da.n_classes=3", "optim.lr_step=4"]
    return load_config("da_mnist2mnistm_reduced", overrides)


def test_exact_resume_of_unit_da_across_a_learning_rate_drop(tmp_path):
    cfg = da_config(tmp_path, "full", 8)
    assert cfg.da.enabled
    full = train(cfg, progress=False)
    assert train(da_config(tmp_path, "part", 3), progress=False).step == 3
    resumed = train(da_config(tmp_path, "part", 8), progress=False)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a["step"] == b["step"] == 8
    assert b["opt_gen"]["param_groups"][0]["lr"] == pytest.approx(cfg.optim.lr * cfg.optim.lr_gamma**2)
    assert assert_states_equal(a, b) > 20
