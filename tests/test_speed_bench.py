"""benchmarks/speed.py's issue-14 rows: the UNIT-DA step is counted, and the loaded-machine and
wait-policy variants run what they say."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import speed  # noqa: E402


def test_the_da_digits_step_is_counted_with_its_labels():
    spec = {"config": "da_mnist2mnistm", "size": 16, "precision": "fp32", "compile": False}
    spec.update(channels_last=False, device="cpu", authors=False, overrides=[], tiny=True)
    one, two = speed.count_flops({**spec, "batch": 1}), speed.count_flops({**spec, "batch": 2})
    assert 0 < one < float("inf")
    assert two == pytest.approx(2 * one, rel=1e-9)


def test_wait_policy_of_the_rows(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("GOMP_SPINCOUNT", "5")
    assert "OMP_WAIT_POLICY" not in speed.child_env("spin") and "GOMP_SPINCOUNT" not in speed.child_env("spin")
    monkeypatch.delenv("GOMP_SPINCOUNT")
    assert speed.child_env("unitgan")["OMP_WAIT_POLICY"] == "PASSIVE"


def test_competing_processes_run_only_inside_the_block():
    with speed.competing(1):
        procs = list(_children())
        assert any("while True: pass" in cmd for cmd in procs)
    assert not any("while True: pass" in cmd for cmd in _children())


def _children() -> list[str]:
    """Command lines of this process's children (Linux)."""
    pid = Path("/proc/self").resolve().name
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == pid:
                out.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError):
            continue
    return out
