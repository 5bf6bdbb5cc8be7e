"""translate: damaged or mismatched checkpoints are refused by name, and existing outputs are never clobbered."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import assert_cli_error, tiny_config

from unitgan.checkpoint import load_checkpoint
from unitgan.cli import main
from unitgan.train.loop import train

# -- translate: bad checkpoints and outputs that must not be clobbered ---------------------------------------


@pytest.fixture
def tiny_ckpt(tmp_path) -> Path:
    result = train(tiny_config(tmp_path / "run", **{"train.steps": 2}), progress=False)
    return result.checkpoint


def _translate(inputs, ckpt, out, *extra) -> list[str]:
    return ["translate", *inputs, "--checkpoint", ckpt, "--direction", "a2b", "--output", out, *extra]


def test_translate_refuses_damaged_or_mismatched_checkpoints(tiny_ckpt, tmp_path, capsys):
    from conftest import write_images

    images = write_images(tmp_path / "in", 2, mode="L")
    out = tmp_path / "out"
    data = tiny_ckpt.read_bytes()
    for n in (len(data) // 2, 100, 0):
        cut = tmp_path / f"cut_{n}.pt"
        cut.write_bytes(data[:n])
        assert_cli_error(capsys, _translate(images, cut, out), f"cut_{n}.pt", "cannot be loaded")
    state = load_checkpoint(tiny_ckpt)
    other = {**state, "config": {**state["config"], "model": {**state["config"]["model"], "ch": 8}}}
    torch.save(other, tmp_path / "other.pt")
    assert_cli_error(capsys, _translate(images, tmp_path / "other.pt", out), "other.pt", "does not match its config")
    broken = {**state, "config": {**state["config"], "model": {**state["config"]["model"], "norm": "group"}}}
    torch.save(broken, tmp_path / "broken.pt")
    assert_cli_error(
        capsys, _translate(images, tmp_path / "broken.pt", out), "broken.pt", "invalid config", "model.norm"
    )
    torch.save({**state, "gen": {"weight": "not a tensor"}}, tmp_path / "odd.pt")
    assert_cli_error(capsys, _translate(images, tmp_path / "odd.pt", out), "odd.pt", "does not match")
    assert not out.exists() or not list(out.iterdir())  # nothing was written


def test_translate_writes_nothing_when_one_output_exists(tiny_ckpt, tmp_path, capsys):
    from conftest import write_images

    images = write_images(tmp_path / "in", 3, mode="L")
    out = tmp_path / "out"
    out.mkdir()
    (out / "img_001.png").write_bytes(b"precious")
    assert_cli_error(capsys, _translate([tmp_path / "in"], tiny_ckpt, out), "img_001.png", "exists", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["img_001.png"]
    assert (out / "img_001.png").read_bytes() == b"precious"
    # inside the input folder, or the input folder itself: refused before anything is written
    for inside in (tmp_path / "in" / "sub", tmp_path / "in"):
        assert_cli_error(capsys, _translate([tmp_path / "in"], tiny_ckpt, inside), "inside input folder")
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == [p.name for p in images]
    # a bad input image names the file
    (tmp_path / "in" / "img_002.png").write_bytes(b"")
    assert_cli_error(capsys, _translate([tmp_path / "in"], tiny_ckpt, tmp_path / "o2"), "img_002.png", "not a readable")
    assert main([str(a) for a in _translate(images[:2], tiny_ckpt, out, "--overwrite")]) == 0
    assert (out / "img_001.png").read_bytes() != b"precious"
