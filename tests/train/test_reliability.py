"""Training reliability: non-finite losses, signals, kill/resume (safe loading and failed saves are in
tests/checkpoint, translate's refusals in tests/inference)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, tiny_overrides

import unitgan.train.trainer as trainer_mod
from unitgan.checkpoint import list_checkpoints, load_checkpoint, newest_loadable
from unitgan.errors import UnitganError
from unitgan.train.loop import train

SRC = str(Path(__file__).resolve().parents[2] / "src")


# -- non-finite losses -------------------------------------------------------------------------------------


def _nan_at(monkeypatch, bad_calls: set[int]) -> None:
    """Make the generator loss (and its KL term of domain A) NaN on the given calls (1-based steps)."""
    real = trainer_mod.unit_gen_loss
    calls = {"n": 0}

    def fake(*a, **k):
        calls["n"] += 1
        total, terms = real(*a, **k)
        if calls["n"] in bad_calls:
            nan = torch.tensor(float("nan"))
            terms = {**terms, "kl_a": terms["kl_a"] + nan}
            total = total + nan
        return total, terms

    monkeypatch.setattr(trainer_mod, "unit_gen_loss", fake)


def test_nonfinite_loss_stops_naming_the_step_and_terms(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, **{"train.steps": 6, "train.ckpt_every": 1, "train.log_every": 100})
    _nan_at(monkeypatch, {3})
    with pytest.raises(UnitganError) as e:
        train(cfg, progress=False)
    msg = str(e.value)
    assert "non-finite loss at step 3" in msg and "loss_g=nan" in msg and "kl_a=nan" in msg, msg
    assert "recon_a" not in msg and "\n" not in msg
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(tmp_path)] == [1, 2]


def test_nan_weights_are_never_checkpointed(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, **{"train.steps": 4, "train.ckpt_every": 2, "train.log_every": 100})
    real_step = trainer_mod.UNITTrainer.train_step
    calls = {"n": 0}

    def poisoned(self, x_a, x_b):
        out = real_step(self, x_a, x_b)
        calls["n"] += 1
        if calls["n"] == 2:  # weights go bad after the losses of step 2 were computed (and looked fine)
            with torch.no_grad():
                next(self.dis_a.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(trainer_mod.UNITTrainer, "train_step", poisoned)
    with pytest.raises(UnitganError, match="weights became non-finite by step 2"):
        train(cfg, progress=False)
    assert list_checkpoints(tmp_path) == []


def test_nonfinite_skip_applies_no_update_and_counts(tmp_path, monkeypatch, caplog):
    cfg = tiny_config(
        tmp_path, **{"train.steps": 5, "train.ckpt_every": 1, "train.keep_last": 10, "train.nonfinite": "skip"}
    )
    _nan_at(monkeypatch, {3, 5})
    result = train(cfg, progress=False)
    assert result.step == 5
    states = {load_checkpoint(p)["step"]: load_checkpoint(p) for p in list_checkpoints(tmp_path)}
    for name in ("gen", "dis_a", "dis_b"):
        for k, v in states[3][name].items():
            assert torch.equal(v, states[2][name][k]), (name, k)  # step 3 changed nothing
            assert torch.isfinite(v).all()
        assert any(not torch.equal(v, states[3][name][k]) for k, v in states[4][name].items())  # step 4 did
    assert states[5]["nonfinite_skipped"] == 2
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["nonfinite_skipped"] for r in records] == [0, 0, 1, 1, 2]
    assert "loss_g" not in records[2] and "loss_g" in records[3]  # no NaN in the JSON log
    assert "step 3: non-finite loss (loss_g=nan, kl_a=nan); update skipped (1 skipped so far)" in caplog.text
    assert "2 of 5 steps had a non-finite loss" in caplog.text


def test_nonfinite_skip_gives_up_on_a_diverged_run(tmp_path, monkeypatch):
    import unitgan.train.loop as loop_mod

    monkeypatch.setattr(loop_mod, "MAX_SKIPPED_IN_A_ROW", 3)
    cfg = tiny_config(tmp_path, **{"train.steps": 8, "train.ckpt_every": 1, "train.nonfinite": "skip"})
    _nan_at(monkeypatch, {2, 4, 5, 6})
    with pytest.raises(UnitganError, match=r"^3 steps in a row had a non-finite loss \(the last, step 6: loss_g=nan"):
        train(cfg, progress=False)
    assert newest_loadable(tmp_path)["step"] == 5


def test_nonfinite_watch_on_an_accelerator_reports_the_first_bad_step():
    from unitgan.train.loop import NonFiniteWatch

    watch = NonFiniteWatch(torch.device("meta"))  # any non-CPU device takes the no-sync path
    watch.eager = False
    good = {"loss_g": torch.tensor(1.0), "kl_a": torch.tensor(0.5)}
    watch.update(1, good)
    watch.check()
    watch.update(2, {"loss_g": torch.tensor(float("inf")), "kl_a": torch.tensor(0.5)})
    watch.update(3, {"loss_g": torch.tensor(float("nan")), "kl_a": torch.tensor(float("nan"))})
    with pytest.raises(UnitganError, match=r"non-finite loss at step 2: loss_g=inf;"):
        watch.check()


# -- signals and kills in a real process -------------------------------------------------------------------


def _cli(run: Path, **extra) -> list[str]:
    values = {"train.threads": 1, "train.log_every": 1, **extra}
    return [sys.executable, "-m", "unitgan", "train", "demo", "--no-progress", *tiny_overrides(run, **values)]


def _env(**extra) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    env.update(extra)
    return env


def _logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:
            pass
    return steps


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"training exited early with {proc.returncode}"
        assert time.monotonic() < deadline, "timed out waiting for the training process"
        time.sleep(poll)


@pytest.mark.integration
def test_sigterm_then_ctrl_c_checkpoint_the_current_step_and_say_how_to_resume(tmp_path):
    run = tmp_path / "run"
    # one loader worker process: the signal goes to the whole process group, as Ctrl-C in a terminal does
    steps = {"train.steps": 100_000, "train.ckpt_every": 100_000, "train.image_every": 100_000}
    cmd = _cli(run, **steps, **{"data.num_workers": 1})
    stopped_at = 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        out, err = tmp_path / f"out_{sig}", tmp_path / f"err_{sig}"
        with open(out, "w") as fo, open(err, "w") as fe:
            proc = subprocess.Popen(cmd, env=_env(), stdout=fo, stderr=fe, start_new_session=True)
            _wait_for(lambda: len(_logged_steps(run)) >= stopped_at + 3, proc)  # noqa: B023
            os.killpg(proc.pid, sig)
            assert proc.wait(timeout=120) == 130, err.read_text()
        stdout, stderr = out.read_text(), err.read_text()
        assert "Traceback" not in stderr, stderr
        step = int(stdout.split("stopped at step ")[1].split(";")[0])
        assert step > stopped_at
        assert f"checkpoint {run / 'checkpoints' / f'ckpt_{step:09d}.pt'}" in stdout
        assert "to resume, run the same command again: unitgan train demo " in stdout
        assert load_checkpoint(list_checkpoints(run)[-1])["step"] == step
        if stopped_at:
            assert f"(step {stopped_at})" in stderr and "resuming from" in stderr
        assert _logged_steps(run) == list(range(1, step + 1))  # each step logged once, none lost
        stopped_at = step


def _kill_resume_loop(tmp_path: Path, kills: int, steps: int, seed: int) -> None:
    """Start the same command again and again, SIGKILL it at random moments (some while a checkpoint is
    being written), then let it finish; the result must equal an uninterrupted run bit for bit."""
    run = tmp_path / "run"
    extra = {"train.steps": steps, "train.ckpt_every": 1, "train.keep_last": 2, "train.image_every": steps}
    cmd = _cli(run, **extra)
    # widen the two windows where a temp file exists (empty, then complete but not yet renamed)
    env = _env(UNITGAN_TEST_SAVE_PAUSE="0.03")
    rng = random.Random(seed)
    ckpt_dir = run / "checkpoints"
    in_write = 0
    for i in range(kills):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done = len(_logged_steps(run))
        kind = ("anytime", "in_write", "training")[i % 3]
        if kind == "anytime":  # start-up, loading the checkpoint, the first steps...
            time.sleep(rng.uniform(0.0, 4.0))
        elif kind == "in_write":
            _wait_for(lambda: ckpt_dir.is_dir() and any(ckpt_dir.glob(".ckpt_*.tmp")), proc, poll=0.002)
            time.sleep(rng.uniform(0.0, 0.03))
        else:
            _wait_for(lambda: len(_logged_steps(run)) > done, proc)  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            in_write += any(ckpt_dir.glob(".ckpt_*.tmp"))
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        found = list_checkpoints(run)
        assert all(p.name.startswith("ckpt_") and p.suffix == ".pt" for p in found)  # never a temp file
        if found:
            assert load_checkpoint(found[-1])["step"] >= 1  # the newest one always loads
    assert in_write >= max(1, kills // 3 - 1), "the kills did not land while checkpoints were written"
    assert len(_logged_steps(run)) < steps, "the kills came too late to interrupt the run"

    subprocess.run(cmd, env=_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    ref = train(tiny_config(tmp_path / "ref", **{"train.log_every": 1, **extra}), progress=False)
    a, b = load_checkpoint(ref.checkpoint), load_checkpoint(list_checkpoints(run)[-1])
    assert a["step"] == b["step"] == steps
    for section in ("gen", "dis_a", "dis_b"):
        for k in a[section]:
            assert torch.equal(a[section][k], b[section][k]), (section, k)
    for section in ("opt_gen", "opt_dis"):
        for idx, s in a[section]["state"].items():
            for k, v in s.items():
                assert torch.equal(v, b[section]["state"][idx][k]), (section, idx, k)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert _logged_steps(run) == list(range(1, steps + 1))


@pytest.mark.integration
def test_sigkill_and_resume_a_few_times(tmp_path):
    _kill_resume_loop(tmp_path, kills=2, steps=8, seed=1)


@pytest.mark.slow
def test_sigkill_at_20_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path):
    _kill_resume_loop(tmp_path, kills=20, steps=60, seed=0)
