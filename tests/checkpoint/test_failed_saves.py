"""A failed checkpoint save loses nothing: a full disk or an unwritable folder leaves the previous checkpoint
intact, and the error is one line naming the file and the reason."""

from __future__ import annotations

import errno
import os

import pytest
import torch
from conftest import assert_cli_error, tiny_config, tiny_overrides

import unitgan.checkpoint as checkpoint_mod
import unitgan.runtime as runtime_mod
from unitgan.checkpoint import list_checkpoints, load_checkpoint, newest_loadable
from unitgan.errors import UnitganError
from unitgan.train.loop import train

# -- failed saves lose nothing -----------------------------------------------------------------------------


def _fail_on_second_save(monkeypatch, exc: OSError, where: str) -> None:
    """Let the first checkpoint write succeed, then make ``where`` raise ``exc`` (simulated disk trouble)."""
    calls = {"n": 0}
    if where == "torch.save":
        real = torch.save

        def fake(obj, f, *a, **k):
            calls["n"] += 1
            if calls["n"] >= 2:
                real(obj, f, *a, **k)  # part of the data reaches the disk, then the disk is full
                raise exc
            return real(obj, f, *a, **k)

        monkeypatch.setattr(checkpoint_mod.torch, "save", fake)
    else:
        real_mkstemp = runtime_mod.tempfile.mkstemp

        def fake_mkstemp(*a, **k):
            if ".ckpt_" in k.get("prefix", ""):  # checkpoints only (config.yaml is written the same way)
                calls["n"] += 1
                if calls["n"] >= 2:
                    raise exc
            return real_mkstemp(*a, **k)

        monkeypatch.setattr(runtime_mod.tempfile, "mkstemp", fake_mkstemp)


@pytest.mark.parametrize(
    "exc, where, reason",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "torch.save", "No space left on device"),
        (PermissionError(errno.EACCES, "Permission denied"), "mkstemp", "Permission denied"),
        (OSError(errno.EROFS, "Read-only file system"), "mkstemp", "Read-only file system"),
    ],
)
def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, exc, where, reason):
    cfg = tiny_config(tmp_path, **{"train.steps": 4, "train.ckpt_every": 2})
    _fail_on_second_save(monkeypatch, exc, where)
    with pytest.raises(UnitganError) as e:
        train(cfg, progress=False)
    msg = str(e.value)
    assert "ckpt_000000004.pt" in msg and reason in msg and "previous checkpoint is intact" in msg
    assert "\n" not in msg
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_000000002.pt"]
    assert load_checkpoint(list_checkpoints(tmp_path)[0])["step"] == 2
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))  # the partial file was removed
    # and the run resumes from it
    assert train(cfg, progress=False).step == 4


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions (the monkeypatched case covers it)")
def test_a_read_only_checkpoint_folder(tmp_path):
    cfg = tiny_config(tmp_path, **{"train.steps": 2, "train.ckpt_every": 2})
    train(cfg, progress=False)
    ckpts = tmp_path / "checkpoints"
    ckpts.chmod(0o555)
    try:
        with pytest.raises(UnitganError, match="could not write checkpoint .*previous checkpoint is intact"):
            train(tiny_config(tmp_path, **{"train.steps": 4, "train.ckpt_every": 2}), progress=False)
    finally:
        ckpts.chmod(0o755)
    assert newest_loadable(tmp_path)["step"] == 2


def test_disk_full_through_the_cli_is_one_line(tmp_path, monkeypatch, capsys):
    _fail_on_second_save(monkeypatch, OSError(errno.ENOSPC, "No space left on device"), "torch.save")
    run = tmp_path / "r"
    assert_cli_error(capsys, ["train", "demo", "--no-progress", *tiny_overrides(run)], "No space left", "intact")


def test_an_unwritable_run_folder_is_one_line(tmp_path, monkeypatch):
    import unitgan.train.loop as loop_mod

    def denied(cfg, path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(loop_mod, "save_config", denied)
    with pytest.raises(UnitganError, match=r"run folder '.*' is not writable: Permission denied$"):
        train(tiny_config(tmp_path), progress=False)
