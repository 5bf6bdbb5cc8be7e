"""Safe loading: a checkpoint that would run code is refused by every reader and never runs; checkpoint and
Inception files are read with weights_only, whatever torch's default is."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from conftest import assert_cli_error, tiny_config

from unitgan.checkpoint import load_checkpoint, newest_loadable
from unitgan.errors import UnitganError
from unitgan.train.loop import train

ROOT = Path(__file__).resolve().parents[2]


class _RunsCode:
    """Unpickling this calls ``os.system``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def test_torch_floor_is_a_version_whose_load_defaults_to_weights_only():
    """torch.load defaults to weights_only=True from torch 2.6 on; older versions would unpickle anything."""
    text = (ROOT / "pyproject.toml").read_text()
    floors = dict(re.findall(r'^\s*"(torch|torchvision)>=([0-9.]+)"', text, re.M))
    assert _version(floors["torch"]) >= (2, 6), floors
    assert _version(floors["torchvision"]) >= (0, 21), floors


def test_checkpoint_loading_passes_weights_only_even_where_the_default_is_unsafe(tmp_path, monkeypatch):
    """Simulate torch < 2.6 (default weights_only=False): loading must still refuse the crafted file."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"config": tiny_config(tmp_path).to_dict(), "gen": {}, "step": 1, "x": _RunsCode(marker)}, evil)
    real_load = torch.load

    def old_default_load(*args, weights_only=None, **kwargs):
        return real_load(*args, weights_only=bool(weights_only), **kwargs)

    monkeypatch.setattr(torch, "load", old_default_load)
    with pytest.raises(UnitganError, match="refused"):
        load_checkpoint(evil)
    assert not marker.exists()
    from unitgan.metrics.fid import load_inception

    with pytest.raises(UnitganError, match="evil.pt"):
        load_inception(evil)
    assert not marker.exists()


# -- safe loading ------------------------------------------------------------------------------------------


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"config": cfg.to_dict(), "gen": {}, "step": 1, "payload": _RunsCode(marker)}, evil)

    with pytest.raises(UnitganError, match="refused.*could run code"):
        load_checkpoint(evil)
    assert not marker.exists()
    raw = tmp_path / "raw.pkl"  # a plain pickle (no torch zip container) with the same payload
    with open(raw, "wb") as f:
        pickle.dump({"config": cfg.to_dict(), "gen": _RunsCode(marker)}, f, protocol=2)
    with pytest.raises(UnitganError, match="raw.pkl' (was refused|cannot be loaded)"):
        load_checkpoint(raw)
    assert not marker.exists()
    assert_cli_error(
        capsys,
        ["translate", tmp_path, "--checkpoint", evil, "--direction", "a2b", "--output", tmp_path / "o"],
        "evil.pt",
        "refused",
    )
    assert not marker.exists()
    # as the newest file of a run folder it is passed over, never executed
    run = tmp_path / "run"
    train(tiny_config(run, **{"train.steps": 2}), progress=False)
    (run / "checkpoints" / "ckpt_000000009.pt").write_bytes(evil.read_bytes())
    assert newest_loadable(run)["step"] == 2
    assert not marker.exists()

    # the file really is dangerous: an unsafe load would have run the command
    torch.load(evil, weights_only=False)
    assert marker.exists()
