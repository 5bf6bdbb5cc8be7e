"""Distributed training on CPU (gloo): DDP equals one process with the same global batch, data is split
between ranks, rank 0 alone writes, a stopped run resumes exactly; accumulation; activation checkpointing.

Equivalence needs a batch-norm-free config (instance/layer/no norm: statistics per sample, so a sample's
outputs do not depend on which other samples share its batch) and the latent noise z = mu + N(0, I) turned
off (each rank draws its own noise, so noisy runs agree in distribution only). Every loss is a mean over
samples and DDP averages gradients over ranks, so 2 ranks x B gives the gradient of 1 rank x 2B.
The multi-process tests are marked ``multiprocess``: ``-m "not multiprocess"`` skips them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import tiny_config, tiny_overrides

from unitgan.checkpoint import list_checkpoints, load_checkpoint
from unitgan.data import InfiniteSampler, build_domain, build_loader
from unitgan.models import UNITGenerator
from unitgan.train.trainer import UNITTrainer

SRC = str(Path(__file__).resolve().parents[2] / "src")
GLOBAL_BATCH = 4
# (name, per-rank batch, accumulate, activation checkpointing, update order): each must equal 1 process x
# GLOBAL_BATCH in the same update order
VARIANTS = [
    ("ddp", 2, 1, False, "simultaneous"),
    ("ddp_accumulate_checkpointing", 1, 2, True, "simultaneous"),
    ("ddp_alternating_accumulate", 1, 2, False, "alternating"),
]


def _no_noise(mu: torch.Tensor) -> torch.Tensor:
    return mu


def _one_step(cfg, rank: int, world_size: int, ddp: bool) -> UNITTrainer:
    """Seed 0 weights, then one step on this rank's first (micro-)batches from the usual loaders."""
    torch.manual_seed(0)
    trainer = UNITTrainer(cfg, torch.device("cpu"), ddp=ddp)
    k = cfg.train.accumulate
    batches = []
    for domain, seed in (("a", 0), ("b", 1)):
        loader = build_loader(cfg, build_domain(cfg, domain), seed=seed, rank=rank, world_size=world_size)
        it = iter(loader)
        batches.append([next(it) for _ in range(k)])
    trainer.train_step(*batches)
    return trainer


def _snapshot(trainer: UNITTrainer) -> dict[str, list[torch.Tensor]]:
    return {
        "params": [p.detach().clone() for p in trainer.parameters()],
        "grads": [p.grad.detach().clone() for p in trainer.parameters()],
    }


def _equivalence_worker(rank: int, world_size: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    UNITGenerator.sample = staticmethod(_no_noise)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        for name, batch, accumulate, ckpt, order in VARIANTS:
            cfg = tiny_config(
                out_dir,
                **{
                    "data.batch_size": batch,
                    "train.accumulate": accumulate,
                    "train.activation_checkpointing": ckpt,
                    "train.update_order": order,
                    "optim.lr": 1e-3,
                },
            )
            trainer = _one_step(cfg, rank, world_size, ddp=True)
            torch.save(_snapshot(trainer), Path(out_dir) / f"{name}_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _assert_close(a: list[torch.Tensor], b: list[torch.Tensor], what: str, extra_atol: float = 0.0) -> None:
    """Equal up to float32 rounding, measured against each tensor's largest entry (another batch split sums
    in another order; loss weights of 100 make absolute errors of ~1e-5 relative to the largest gradient)."""
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        atol = 1e-4 * float(y.abs().max()) + 1e-8 + extra_atol
        torch.testing.assert_close(x, y, rtol=1e-4, atol=atol, msg=lambda m, i=i: f"{what} #{i}: {m}")


@pytest.mark.integration
@pytest.mark.multiprocess
def test_two_gloo_ranks_equal_one_process_with_the_same_global_batch(tmp_path, monkeypatch):
    mp.start_processes(
        _equivalence_worker,
        args=(2, str(tmp_path / "store"), str(tmp_path)),
        nprocs=2,
        start_method="spawn",
    )
    monkeypatch.setattr(UNITGenerator, "sample", staticmethod(_no_noise))
    refs = {}
    for order in ("simultaneous", "alternating"):
        cfg = tiny_config(tmp_path, **{"data.batch_size": GLOBAL_BATCH, "optim.lr": 1e-3, "train.update_order": order})
        refs[order] = _snapshot(_one_step(cfg, rank=0, world_size=1, ddp=False))
    for name, *_, order in VARIANTS:
        ref = refs[order]
        r0 = torch.load(tmp_path / f"{name}_rank0.pt", weights_only=True)
        r1 = torch.load(tmp_path / f"{name}_rank1.pt", weights_only=True)
        for key in ("params", "grads"):  # both ranks hold the same averaged gradients and weights
            for x, y in zip(r0[key], r1[key], strict=True):
                assert torch.equal(x, y), (name, key)
        # gradients are compared too: Adam's first step is nearly blind to a gradient's scale
        _assert_close(r0["grads"], ref["grads"], f"{name} gradient")
        # alternating: the G gradients are taken after a D step that already carries rounding differences;
        # Adam's first step moves a weight by about lr * sign(grad), so a near-zero gradient may move its weight
        # by another fraction of lr (seen: 1 of 2304 weights off by 2e-5 = 2% of lr): allow 5% of lr there
        extra = 0.05 * 1e-3 if order == "alternating" else 0.0
        _assert_close(r0["params"], ref["params"], f"{name} parameter", extra)


@pytest.mark.parametrize("order", ["simultaneous", "alternating"])
def test_accumulation_equals_one_large_batch(tmp_path, monkeypatch, order):
    monkeypatch.setattr(UNITGenerator, "sample", staticmethod(_no_noise))
    big_cfg = tiny_config(tmp_path, **{"data.batch_size": 4, "train.update_order": order})
    big = _snapshot(_one_step(big_cfg, 0, 1, ddp=False))
    acc = tiny_config(tmp_path, **{"data.batch_size": 2, "train.accumulate": 2, "train.update_order": order})
    small = _snapshot(_one_step(acc, 0, 1, ddp=False))
    _assert_close(small["grads"], big["grads"], "gradient")
    _assert_close(small["params"], big["params"], "parameter")


def test_activation_checkpointing_gives_the_same_gradients(tmp_path):
    grads = []
    for on in (False, True):
        cfg = tiny_config(tmp_path, **{"train.activation_checkpointing": on, "model.n_res": 3})
        torch.manual_seed(0)  # same weights and the same latent noise in both runs
        x_a, x_b = torch.randn(2, 1, 16, 16), torch.randn(2, 3, 16, 16)
        trainer = UNITTrainer(cfg, torch.device("cpu"))
        trainer.train_step(x_a, x_b)
        grads.append([p.grad.clone() for p in trainer.parameters()])
    for g0, g1 in zip(*grads, strict=True):
        torch.testing.assert_close(g0, g1, rtol=1e-6, atol=1e-9)
    assert any(m.checkpointing for m in trainer.gen.modules() if hasattr(m, "checkpointing"))


def test_ranks_see_disjoint_samples_in_an_epoch():
    n, world = 11, 2
    per_rank = n // world
    seen = []
    for rank in range(world):
        it = iter(InfiniteSampler(n, seed=3, rank=rank, world_size=world))
        seen.append({next(it)[0] for _ in range(per_rank)})
    assert not seen[0] & seen[1]
    assert len(seen[0]) == len(seen[1]) == per_rank
    # a resumed rank continues its own stream: start = samples it consumed
    it = iter(InfiniteSampler(n, seed=3, rank=1, world_size=world, start=2))
    full = iter(InfiniteSampler(n, seed=3, rank=1, world_size=world))
    assert [next(it) for _ in range(6)] == [next(full) for _ in range(8)][2:]


def _torchrun_cmd(out_dir: Path, steps: int) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    overrides = tiny_overrides(out_dir, **{"train.steps": steps, "train.ckpt_every": 1000, "train.device": "cpu"})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--rdzv-backend", "c10d"]
    cmd += ["--rdzv-endpoint", "localhost:0", "-m", "unitgan", "train", "demo", *overrides, "--no-progress"]
    return cmd, env


def _torchrun(out_dir: Path, steps: int) -> subprocess.CompletedProcess:
    cmd, env = _torchrun_cmd(out_dir, steps)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _torchrun_until_sigterm(out_dir: Path, after_steps: int) -> str:
    """Start a long 2-rank run, SIGTERM torchrun once ``after_steps`` steps are logged; its stdout."""
    cmd, env = _torchrun_cmd(out_dir, 100_000)
    metrics = out_dir / "metrics.jsonl"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= after_steps):
            assert proc.poll() is None and time.time() < deadline, "the run ended or never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # as SLURM does before a time limit; torchrun passes it on
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return out


@pytest.mark.integration
@pytest.mark.multiprocess
def test_torchrun_two_ranks_stopped_by_sigterm_resume_exactly_rank0_writes(tmp_path):
    run = tmp_path / "stopped"
    out = _torchrun_until_sigterm(run, after_steps=2)
    saved = list_checkpoints(run)
    assert len(saved) == 1, out  # both ranks stopped at the same step, and rank 0 wrote one checkpoint
    stop = load_checkpoint(saved[0])["step"]
    assert out.count(f"stopped at step {stop}") == 1, out  # rank 0 alone reports

    end = stop + 2
    resumed = _torchrun(run, end)
    assert f"resuming from {saved[0]} (step {stop})" in resumed.stderr
    assert resumed.stdout.count("done:") == 1 and f"done: {end} steps" in resumed.stdout
    full = _torchrun(tmp_path / "full", end)  # the same run, never stopped
    assert "batch 4 per domain = 2 per rank x 2 rank(s)" in full.stderr

    a = load_checkpoint(list_checkpoints(tmp_path / "full")[-1])
    b = load_checkpoint(list_checkpoints(run)[-1])
    assert a["step"] == b["step"] == end
    for section in ("gen", "dis_a", "dis_b"):
        for k in a[section]:
            assert torch.equal(a[section][k], b[section][k]), (section, k)
    for ra, rb in zip(a["rng_ranks"], b["rng_ranks"], strict=True):  # each rank's noise stream, too
        assert torch.equal(ra["torch"], rb["torch"])
    assert not torch.equal(a["rng_ranks"][0]["torch"], a["rng_ranks"][1]["torch"])

    # one writer: every step logged once, one TensorBoard file per launch, one grid per image step
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, end + 1))
    assert len(list((run / "tb").iterdir())) == 2
    grids = sorted(p.name for p in (run / "images").iterdir())
    assert grids == [f"translations_{s:09d}.png" for s in sorted({*range(2, end + 1, 2), end})]
    assert [p.name for p in list_checkpoints(run)] == [f"ckpt_{stop:09d}.pt", f"ckpt_{end:09d}.pt"]


def test_torchrun_environment_and_device_choice(monkeypatch):
    from unitgan.errors import UnitganError
    from unitgan.train import distributed

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.env_world() == (0, 1, 0)
    ctx = distributed.init(torch.device("cpu"), 0, 1, 0)  # one process: no process group, no-op helpers
    assert not ctx.enabled and ctx.is_main and ctx.any(True) and ctx.gather(5) == [5]
    assert ctx.mean({"x": 2.0}) == {"x": 2.0}
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.env_world() == (3, 4, 1)
    assert distributed.pick_device("cpu", 1, 4) == torch.device("cpu")
    with pytest.raises(UnitganError, match="CUDA GPUs or CPUs"):
        distributed.pick_device("mps", 1, 4)
    if torch.cuda.is_available():
        with pytest.raises(UnitganError, match="local rank"):
            distributed.pick_device("cuda:0", 1, 4)
    assert len({distributed.rank_seed(0, r) for r in range(8)}) == 8 and distributed.rank_seed(7, 0) == 7


def _da_cfg(out_dir):
    from unitgan.config import load_config

    tiny = ["model.ch=4", "model.dis_ch=4", "model.n_res=1", "data.crop_size=16", "da.n_classes=3"]
    return load_config("da_mnist2mnistm_reduced", [f"train.out_dir={out_dir}", *tiny])


def _da_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(4, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 0]), torch.randn(4, 3, 16, 16, generator=g)


def _da_step(out_dir, ddp: bool, part: slice):
    from unitgan.train.da.reduced import DATrainer

    torch.manual_seed(0)
    trainer = DATrainer(_da_cfg(out_dir), torch.device("cpu"), ddp=ddp)
    trainer.train_step(*(t[part] for t in _da_batch()))
    return [p.detach().clone() for p in trainer.parameters()]


def _da_worker(rank: int, world_size: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    UNITGenerator.sample = staticmethod(_no_noise)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        params = _da_step(out_dir, ddp=True, part=slice(2 * rank, 2 * rank + 2))
        torch.save(params, Path(out_dir) / f"da_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.integration
@pytest.mark.multiprocess
def test_da_trainer_on_two_gloo_ranks_equals_one_process(tmp_path, monkeypatch):
    mp.start_processes(_da_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, start_method="spawn")
    monkeypatch.setattr(UNITGenerator, "sample", staticmethod(_no_noise))
    ref = _da_step(tmp_path, ddp=False, part=slice(0, 4))
    alone = _da_step(tmp_path, ddp=False, part=slice(0, 2))  # rank 0's half without averaging
    r0 = torch.load(tmp_path / "da_rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "da_rank1.pt", weights_only=True)
    assert all(torch.equal(x, y) for x, y in zip(r0, r1, strict=True))  # the ranks stay in step
    _assert_close(r0, ref, "DA parameter")
    assert any(not torch.allclose(x, y) for x, y in zip(alone, ref, strict=True))  # the check can fail
