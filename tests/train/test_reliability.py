"""Reliability: safe loading, failed saves that lose nothing, non-finite losses, signals, kill/resume."""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_cli_error, tiny_config, tiny_overrides

import unitgan.checkpoint as checkpoint_mod
import unitgan.runtime as runtime_mod
import unitgan.train.trainer as trainer_mod
from unitgan.checkpoint import list_checkpoints, load_checkpoint, newest_loadable
from unitgan.cli import main
from unitgan.errors import UnitganError
from unitgan.train.loop import train

SRC = str(Path(__file__).resolve().parents[2] / "src")


class _RunsCode:
    """Unpickling this calls ``os.system``: a stand-in for a checkpoint booby-trapped by a stranger."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


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
