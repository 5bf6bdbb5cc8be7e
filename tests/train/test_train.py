"""Training: learning happens, checkpoints are exact, resume continues the same run."""

import os

import pytest
import torch
from conftest import tiny_config

from unitgan.checkpoint import atomic_save, list_checkpoints, load_checkpoint, newest_loadable
from unitgan.data import build_domain
from unitgan.train.loop import train
from unitgan.train.trainer import UNITTrainer


@pytest.mark.integration
def test_reconstruction_loss_drops_on_a_fixed_batch(tmp_path):
    cfg = tiny_config(tmp_path, **{"model.ch": 8, "optim.lr": 2e-3, "optim.dis_lr": 2e-3, "data.crop_size": 16})
    torch.manual_seed(0)
    trainer = UNITTrainer(cfg, torch.device("cpu"))
    ds_a, ds_b = build_domain(cfg, "a"), build_domain(cfg, "b")
    x_a, x_b = torch.stack([ds_a[i] for i in range(4)]), torch.stack([ds_b[i] for i in range(4)])
    first = trainer.train_step(x_a, x_b)
    for _ in range(250):
        last = trainer.train_step(x_a, x_b)
    for k in ("recon_a", "recon_b", "cyc_recon_a", "cyc_recon_b"):
        assert last[k] < 0.35 * first[k], (k, float(first[k]), float(last[k]))


def test_save_load_next_step_is_bit_exact(tmp_path):
    cfg = tiny_config(tmp_path)
    ds_a, ds_b = build_domain(cfg, "a"), build_domain(cfg, "b")
    x_a, x_b = torch.stack([ds_a[i] for i in range(2)]), torch.stack([ds_b[i] for i in range(2)])

    torch.manual_seed(1)
    t1 = UNITTrainer(cfg, torch.device("cpu"))
    t1.train_step(x_a, x_b)
    state = {**t1.state(), "rng": torch.get_rng_state(), "step": 1, "config": cfg.to_dict(), "gen_check": 0}
    atomic_save(state, tmp_path / "s.pt")
    expected = t1.train_step(x_a, x_b)
    expected_params = [p.detach().clone() for p in t1.parameters()]

    torch.manual_seed(99)  # a different process state
    t2 = UNITTrainer(cfg, torch.device("cpu"))
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)
    t2.load_state(loaded)
    torch.set_rng_state(loaded["rng"])
    got = t2.train_step(x_a, x_b)
    for k in expected:
        assert torch.equal(expected[k], got[k]), k
    for p, q in zip(expected_params, t2.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("extra", [{}, {"model.dis_spectral_norm": True}], ids=["plain", "spectral_norm"])
def test_resume_equals_uninterrupted_run(tmp_path, extra):
    """(with spectral norm the power iteration's vectors are state too: they travel in the checkpoint)"""
    full = train(tiny_config(tmp_path / "full", **{"train.steps": 6, **extra}), progress=False)
    part = train(tiny_config(tmp_path / "part", **{"train.steps": 3, "train.ckpt_every": 3, **extra}), progress=False)
    assert part.step == 3
    resumed = train(
        tiny_config(tmp_path / "part", **{"train.steps": 6, "train.ckpt_every": 3, **extra}), progress=False
    )
    assert resumed.step == 6
    a = load_checkpoint(full.checkpoint)
    b = load_checkpoint(resumed.checkpoint)
    for section in ("gen", "dis_a", "dis_b"):
        for k in a[section]:
            assert torch.equal(a[section][k], b[section][k]), (section, k)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    # the run folder holds everything a user expects
    run = tmp_path / "part"
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
    assert list((run / "images").glob("translations_*.png"))
    assert list((run / "tb").iterdir())
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_rerun_of_a_finished_run_does_nothing(tmp_path):
    cfg = tiny_config(tmp_path)
    first = train(cfg, progress=False)
    again = train(cfg, progress=False)
    assert again.step == first.step == cfg.train.steps and again.checkpoint == first.checkpoint


def test_checkpoints_keep_last_k_and_skip_partial_files(tmp_path):
    cfg = tiny_config(tmp_path, **{"train.steps": 8, "train.ckpt_every": 1, "train.keep_last": 3})
    train(cfg, progress=False)
    ckpts = list_checkpoints(tmp_path)
    assert [load_checkpoint(p)["step"] for p in ckpts] == [6, 7, 8]
    state = load_checkpoint(ckpts[-1])
    assert state["config"] == cfg.to_dict()
    for key in ("gen", "dis_a", "dis_b", "opt_gen", "opt_dis", "sched_gen", "sched_dis", "rng", "step"):
        assert key in state
    # a truncated newest file (e.g. copied by hand) is passed over for the previous one
    newest = ckpts[-1]
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    assert newest_loadable(tmp_path)["step"] == 7
    # a temp file of an interrupted write is never taken for a checkpoint
    (newest.parent / ".ckpt_000000009.pt.abc.tmp").write_bytes(b"partial")
    assert all(p.suffix == ".pt" for p in list_checkpoints(tmp_path))
    assert not any(name.endswith(".tmp") for name in os.listdir(newest.parent) if name.startswith("ckpt_"))


def test_a_checkpoint_from_before_a_config_key_existed_resumes(tmp_path):
    """Keys added to unitgan later (here model.dis_downsample, train.update_order) count as their defaults."""
    run = tmp_path / "run"
    first = train(tiny_config(run, **{"train.steps": 2}), progress=False)
    state = torch.load(first.checkpoint, weights_only=True)
    del state["config"]["model"]["dis_downsample"], state["config"]["train"]["update_order"]
    torch.save(state, first.checkpoint)
    resumed = train(tiny_config(run, **{"train.steps": 4}), progress=False)
    assert resumed.step == 4
