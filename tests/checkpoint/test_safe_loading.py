"""Safe loading: checkpoint and Inception files are read with weights_only, whatever torch's default is."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from unitgan.checkpoint import load_checkpoint
from unitgan.errors import UnitganError

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
