"""File-system faults that stay faults for root (CI runs as root): read-only mounts, directories and FIFOs
where files are expected. The real OS error paths run here, not monkeypatched ones.

Read-only mounts are made inside a private user + mount namespace (``unshare -rm``), so nothing outside the
test sees them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import folder_overrides, tiny_config, tiny_overrides, write_images

from unitgan.checkpoint import list_checkpoints, load_checkpoint, newest_loadable
from unitgan.cli import main
from unitgan.errors import UnitganError
from unitgan.train.loop import train

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _namespaces_work() -> bool:
    try:
        probe = "mount -t tmpfs -o ro,size=64k tmpfs /mnt"
        return subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_namespaces = pytest.mark.skipif(
    not _namespaces_work(), reason="user + mount namespaces (unshare -rm) are not available here"
)


def unitgan_in_namespace(mounts: str, args: list) -> subprocess.CompletedProcess:
    """Run ``python -m unitgan ARGS`` after the shell commands ``mounts``, in a private mount namespace."""
    cmd = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "unitgan", *args])
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"{mounts} && exec {cmd}"], capture_output=True, text=True, env=env, timeout=300
    )


def one_error_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.stdout, res.stderr)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    return errors[0]


@pytest.mark.integration
@needs_namespaces
def test_run_folder_on_a_read_only_mount(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    res = unitgan_in_namespace(
        f"mount -t tmpfs -o ro,size=1m tmpfs {ro}", ["train", "demo", "--no-progress", *tiny_overrides(ro / "run")]
    )
    line = one_error_line(res)
    assert line == f"error: run folder '{ro / 'run'}' cannot be created: Read-only file system"


@pytest.mark.integration
@needs_namespaces
def test_checkpoint_folder_remounted_read_only_keeps_the_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, **{"train.steps": 2}), progress=False)
    ckpts = run / "checkpoints"
    before = (ckpts / "ckpt_000000002.pt").read_bytes()
    ro = f"mount --bind {ckpts} {ckpts} && mount -o remount,bind,ro {ckpts}"
    res = unitgan_in_namespace(ro, ["train", "demo", "--no-progress", *tiny_overrides(run)])
    line = one_error_line(res)
    assert line == (
        f"error: could not write checkpoint '{ckpts / 'ckpt_000000004.pt'}': Read-only file system "
        "(the previous checkpoint is intact)"
    )
    assert [p.name for p in list_checkpoints(run)] == ["ckpt_000000002.pt"]
    assert (ckpts / "ckpt_000000002.pt").read_bytes() == before
    assert not list(ckpts.glob(".*.tmp"))
    assert train(tiny_config(run), progress=False).step == 4  # writable again: the same command resumes


def test_paths_that_are_directories_where_files_belong(tmp_path, capsys, caplog):
    # the newest "checkpoint" is a directory: passed over, training resumes from the one before
    run = tmp_path / "run"
    train(tiny_config(run, **{"train.steps": 2}), progress=False)
    (run / "checkpoints" / "ckpt_000000009.pt").mkdir()
    assert newest_loadable(run)["step"] == 2
    assert "ckpt_000000009.pt" in caplog.text
    assert train(tiny_config(run), progress=False).step == 4
    assert load_checkpoint(run / "checkpoints" / "ckpt_000000004.pt")["step"] == 4
    # config.yaml is a directory: the run folder cannot take the run
    other = tmp_path / "other"
    (other / "config.yaml").mkdir(parents=True)
    with pytest.raises(UnitganError, match=r"^run folder '.*other' is not writable: Is a directory$"):
        train(tiny_config(other), progress=False)
    assert list_checkpoints(other) == []
    # translate --checkpoint naming a directory without checkpoints
    images = write_images(tmp_path / "in", 1, mode="L")
    code = main(
        ["translate", str(images[0]), "--checkpoint", str(tmp_path / "in"), "--direction", "a2b"]
        + [
            "--output",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == f"error: run folder '{tmp_path / 'in'}' holds no checkpoints", err


def run_bounded(target, fifo: Path, seconds: float) -> tuple[bool, BaseException | None]:
    """Run ``target()`` in a thread; if it is still running after ``seconds`` (blocked opening the FIFO), open
    the FIFO's write end and close it, so the reader sees end-of-file and the thread can finish.
    Returns (finished in time, the exception it raised)."""
    outcome: dict = {}

    def run():
        try:
            target()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    in_time = not thread.is_alive()
    while thread.is_alive():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # unblock the reader
        except OSError:
            pass
        thread.join(0.2)
    return in_time, outcome.get("error")


def test_a_fifo_in_a_training_folder_is_refused_not_waited_on(image_root, tmp_path):
    from unitgan.config import load_config

    fifo = image_root / "trainA" / "pipe.png"
    os.mkfifo(fifo)
    cfg = load_config("demo", folder_overrides(image_root, tmp_path / "run"))
    in_time, error = run_bounded(lambda: train(cfg, progress=False), fifo, 8)
    assert in_time, "training blocked on the FIFO"
    assert isinstance(error, UnitganError) and "pipe.png" in str(error)


def test_a_fifo_among_translate_inputs_is_refused_not_waited_on(image_root, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, **{"train.steps": 1}), progress=False)
    fifo = image_root / "testA" / "pipe.png"
    os.mkfifo(fifo)
    args = ["translate", str(image_root / "testA"), "--checkpoint", str(run), "--direction", "a2b"]
    codes = []
    in_time, error = run_bounded(lambda: codes.append(main([*args, "--output", str(tmp_path / "o")])), fifo, 8)
    assert in_time, "translate blocked on the FIFO"
    assert error is None and codes == [2]


@pytest.mark.integration
@needs_namespaces
def test_a_full_disk_during_training_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    """A real full file system (a 800 KB tmpfs holding a run whose next checkpoint does not fit): torch's zip
    writer reports the failed write as "unexpected pos"; the user sees the disk's reason."""
    run = tmp_path / "run"
    train(tiny_config(run, **{"train.steps": 2}), progress=False)
    full = tmp_path / "full"
    full.mkdir()
    mounts = f"mount -t tmpfs -o size=800k tmpfs {full} && cp -a {run} {full / 'run'}"
    res = unitgan_in_namespace(mounts, ["train", "demo", "--no-progress", *tiny_overrides(full / "run")])
    line = one_error_line(res)
    assert line == (
        f"error: could not write checkpoint '{full / 'run' / 'checkpoints' / 'ckpt_000000004.pt'}': "
        "No space left on device (the previous checkpoint is intact)"
    )


@pytest.mark.integration
@needs_namespaces
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, fmt):
    from serve_support import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path)
    full = tmp_path / "full"
    full.mkdir()
    mounts = f"mount -t tmpfs -o size=64k tmpfs {full}"
    listing = f"; echo listing; ls -A {full}"
    cmd = " ".join(
        shlex.quote(str(a))
        for a in [sys.executable, "-m", "unitgan", "export", "--checkpoint", ckpt, "--format", fmt, "--output"]
    )
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"{mounts} && {cmd} {full / 'e'} 2>&1; echo rc=$?{listing}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    out, listing = res.stdout.split("listing\n")
    assert "rc=2" in out and "Traceback" not in out and "terminate called" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and str(full / "e") in errors[0], out
    assert listing.strip() == "", listing  # no export folder, no .e.new-* temp folder
