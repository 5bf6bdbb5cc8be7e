"""benchmarks/device_check.sh end to end on the CPU with TINY=1: every part runs and writes its files under the
one output folder (about 35 CPU seconds, most of it starting Python and torch in each part's processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "device_check.sh"


def _digits(path: Path, n: int, size: int) -> None:
    """A random stand-in of an offline digit set (the arrays' layout, not its images)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n, size, size), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    np.savez(path, x_train=x, y_train=y, x_test=x[: n // 2], y_test=y[: n // 2])


def _run(out: Path, data: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "TINY": "1",
        "DATA": str(data),
        "PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(["bash", str(SCRIPT), str(out)], cwd=REPO, env=env, capture_output=True, text=True)


def test_device_check_runs_every_part_tiny_and_writes_one_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _digits(data / "mnist.npz", 12, 28)
    _digits(data / "usps.npz", 12, 16)
    out = tmp_path / "check"
    proc = _run(out, data)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tiny"] is True
    parts = summary["parts"]
    assert set(parts) == {"da", "speed_eager", "speed_compiled", "demo"}
    for name in ("da", "speed_eager", "demo"):
        log = (out / "logs" / f"{name}.log").read_text()
        assert parts[name]["rc"] == 0 and not parts[name]["timed_out"], (name, log)
    assert "skipped" in parts["speed_compiled"]
    # (a) the DA run: its folder, evaluations every da.eval_every (10 in TINY) with the accuracies, the final result
    da = parts["da"]
    assert (out / "da" / "metrics.jsonl").is_file() and da["steps_done"] == 20
    assert [e["step"] for e in da["evaluations"]][:1] == [10]
    assert all(0 <= e["target_acc"] <= 1 and 0 <= e["source_acc"] <= 1 for e in da["evaluations"])
    assert "loss_d" in da["evaluations"][0]  # the training scalars of the same step, merged in
    assert da["results"]["step"] == 20
    # (b) unit_paper's step time in fp32 and bf16 autocast
    rows = parts["speed_eager"]["results"]["rows"]
    assert {r["precision"] for r in rows} == {"fp32", "bf16"}
    assert all(r["config"] == "unit_paper" and r["step_s"] > 0 for r in rows)
    # (c) the demo's run and page
    assert parts["demo"]["results"]["steps"] == 2 and (out / "demo" / "index.html").is_file()


def test_device_check_refuses_a_folder_that_is_not_empty(tmp_path):
    out = tmp_path / "check"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    proc = _run(out, tmp_path)
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert (out / "summary.json").read_text() == "{}"
