"""benchmarks/speed.py's small-step rows: the UNIT-DA step is counted, and the loaded-machine and
wait-policy variants run what they say."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import speed  # noqa: E402


def test_the_da_digits_step_is_counted_with_its_labels():
    spec = {"config": "da_mnist2mnistm_reduced", "size": 16, "precision": "fp32", "compile": False}
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


def test_a_rows_own_overrides_are_in_its_flop_count(monkeypatch, tmp_path):
    """`--rows demo:32:4:model.ch=8` times a narrower network: its GFLOP/step (and so its util) must be that
    network's, not the preset's (the count was once cached per config, size and batch only)."""

    def spawn(spec, timeout, env):  # in-process: real FLOP counts, made-up timings
        if spec["job"] == "peak":
            return {
                "peak_gflops": 100.0,
                "peak_nchw_gflops": 100.0,
                "peak_nhwc_gflops": 100.0,
                "peak_cpu_gflops": 100.0,
            }
        if spec["job"] == "flops":
            return {"flop": speed.count_flops(spec)}
        return {
            "step_s": 0.1,
            "cpu_s": 0.1,
            "img_s": 1.0,
            "tr_img_s": 1.0,
            "finite": True,
            "peak_mib": 0,
            "start_mib": 0,
        }

    monkeypatch.setattr(speed, "_spawn", spawn)
    out = tmp_path / "speed"
    rows = ["demo:16:1", "demo:16:1:model.ch=4", "demo:16:1:model.ch=4,model.dis_ch=4"]
    speed.main(["--precisions", "fp32", "--modes", "eager", "--device", "cpu", "--out", str(out), "--rows", *rows])
    flops = [r["flop"] for r in json.loads((out / "results.json").read_text())["rows"]]
    assert "| demo " in (out / "table.md").read_text()
    assert flops[0] > flops[1] > flops[2] > 0


def test_convolution_seconds_count_only_convolutions():
    """`--conv-bound`: the profiled time must be that of convolution operators (forward and backward), so a
    step without convolutions reads zero and a step that is mostly convolutions reads most of its operator time."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(4, 8, 16, 16)
    w = torch.randn(256, 256, requires_grad=True)

    def conv_step():
        conv(x).square().mean().backward()

    def matmul_step():
        (w @ w).sum().backward()

    conv_step()  # oneDNN builds its kernels on the first call
    only_conv = speed.convolution_seconds(conv_step, 3)
    no_conv = speed.convolution_seconds(matmul_step, 3)
    assert no_conv["conv_s"] == 0 and no_conv["ops_s"] > 0 and no_conv["aten_calls"] > 0
    assert 0.5 < only_conv["conv_s"] / only_conv["ops_s"] <= 1.0
