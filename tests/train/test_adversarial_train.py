"""Hostile and careless use of training: resuming with changed settings, fewer steps or a mismatched
checkpoint; two trainings in one run folder. Each gives one line or does what the config says, and loses nothing
(docs/hostile_input.md maps each case to its test).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import assert_cli_error, tiny_config, tiny_overrides

from unitgan.checkpoint import list_checkpoints, load_checkpoint
from unitgan.train.loop import train

# -- 1. resume with changed optimiser settings -------------------------------------------------------------


def test_resume_applies_changed_optimiser_settings(tmp_path, caplog):
    train(tiny_config(tmp_path, **{"train.steps": 2, "train.ckpt_every": 2}), progress=False)
    new = {"optim.lr": 0.01, "optim.weight_decay": 0.5, "optim.lr_step": 1, "optim.lr_gamma": 0.5, "optim.beta1": 0.2}
    caplog.set_level("INFO")
    result = train(tiny_config(tmp_path, **{"train.steps": 4, "train.ckpt_every": 2, **new}), progress=False)
    assert "new optim.* values apply" in caplog.text
    state = load_checkpoint(result.checkpoint)
    for opt, lr in (("opt_gen", 0.01), ("opt_dis", 0.0004)):  # the demo preset sets optim.dis_lr=0.0004
        for group in state[opt]["param_groups"]:
            assert group["lr"] == pytest.approx(lr * 0.5**4)  # the new lr on the new schedule, at step 4
            assert group["weight_decay"] == 0.5 and group["betas"][0] == 0.2
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in logged if r["step"] > 2] == pytest.approx([0.01 * 0.5**3, 0.01 * 0.5**4])
    assert "lr: 0.01" in (tmp_path / "config.yaml").read_text()


def test_resume_with_a_lower_lr_slows_the_updates(tmp_path):
    """The divergence error's advice ("resume ... with a lower optim.lr") must take effect."""
    train(tiny_config(tmp_path, **{"train.steps": 2, "train.ckpt_every": 2}), progress=False)
    before = load_checkpoint(list_checkpoints(tmp_path)[-1])["gen"]
    after = load_checkpoint(
        train(tiny_config(tmp_path, **{"train.steps": 4, "optim.lr": 1e-12}), progress=False).checkpoint
    )["gen"]
    moved = max(float((after[k].float() - before[k].float()).abs().max()) for k in before)
    assert moved < 1e-8  # at the checkpoint's lr (1e-4) Adam moves weights by about 1e-4 per step


# -- 2. two trainings in one run folder --------------------------------------------------------------------

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from unitgan.train.loop import RunLock
    with RunLock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(120)
    """
)


@pytest.mark.integration
def test_second_training_in_one_run_folder_is_refused_and_a_killed_owner_frees_it(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    owner = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "locked"

        line = assert_cli_error(capsys, ["train", "demo", *tiny_overrides(tmp_path)], "in use by another training")
        assert f"PID {owner.pid}" in line and str(tmp_path) in line
        assert not list_checkpoints(tmp_path) and not (tmp_path / "config.yaml").exists()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    assert train(cfg, progress=False).step == cfg.train.steps  # a killed owner leaves no stuck lock


# -- resume with train.steps below the checkpoint ---------------------------------------------------------


def test_resume_with_fewer_steps_than_the_checkpoint_says_so_and_keeps_config(tmp_path, capsys):

    train(tiny_config(tmp_path, **{"train.steps": 4}), progress=False)
    saved = (tmp_path / "config.yaml").read_text()
    assert_cli_error(
        capsys, ["train", "demo", *tiny_overrides(tmp_path, **{"train.steps": 2})], "at step 4", "train.steps=2"
    )
    assert (tmp_path / "config.yaml").read_text() == saved


def test_resume_mismatch_names_the_key(tmp_path, capsys):
    train(tiny_config(tmp_path, **{"train.steps": 2}), progress=False)
    path = list_checkpoints(tmp_path)[-1]
    state = torch.load(path, weights_only=True)
    key = next(k for k, v in state["dis_a"].items() if v.ndim == 4)
    state["dis_a"][key] = torch.zeros(1, 1, 1, 1)
    torch.save(state, path)
    assert_cli_error(capsys, ["train", "demo", *tiny_overrides(tmp_path, **{"train.steps": 4})], key, "size mismatch")


def test_rerun_at_equal_steps_with_other_settings_changes_nothing(tmp_path, caplog):
    train(tiny_config(tmp_path, **{"train.steps": 2}), progress=False)
    saved = (tmp_path / "config.yaml").read_text()
    caplog.set_level("INFO")
    result = train(tiny_config(tmp_path, **{"train.steps": 2, "data.batch_size": 4, "optim.lr": 0.5}), progress=False)
    assert result.step == 2 and result.checkpoint == list_checkpoints(tmp_path)[-1]
    assert "resuming with changed settings" not in caplog.text
    assert "data.batch_size, optim.lr" in caplog.text and "not applied" in caplog.text
    assert (tmp_path / "config.yaml").read_text() == saved  # still the settings the checkpoint was trained with
