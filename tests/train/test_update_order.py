"""train.update_order: which weights each loss of a step is computed at.

simultaneous: the E/G loss and the D loss both see the step's starting weights, and the D loss reuses the
translations of the E/G pass. alternating (the authors' version_02): the D loss runs first, on fresh
translations of the current generators; the E/G loss then sees the discriminators after their update.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from unitgan.config import load_config
from unitgan.errors import UnitganError
from unitgan.train.trainer import UNITTrainer


def _record(trainer: UNITTrainer) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Per phase call, in order: (phase, a D weight, an E/G weight, the x_ab the D pass was given)."""
    calls = []
    dis_w = next(trainer.dis_a.parameters())
    gen_w = next(trainer.gen.parameters())

    def hook(name):
        def pre(module, args):
            x_ab = args[2].detach().clone() if name == "dis" else None
            calls.append((name, dis_w.detach().clone(), gen_w.detach().clone(), x_ab))

        return pre

    trainer.gen_phase.register_forward_pre_hook(hook("gen"))
    trainer.dis_phase.register_forward_pre_hook(hook("dis"))
    return calls


def _step(tmp_path, order: str):
    cfg = tiny_config(tmp_path, **{"train.update_order": order, "optim.lr": 1e-2})
    torch.manual_seed(0)
    trainer = UNITTrainer(cfg, torch.device("cpu"))
    calls = _record(trainer)
    dis0 = next(trainer.dis_a.parameters()).detach().clone()
    gen0 = next(trainer.gen.parameters()).detach().clone()
    x_a, x_b = torch.randn(2, 1, 16, 16), torch.randn(2, 3, 16, 16)
    stats = trainer.train_step(x_a, x_b)
    dis1 = next(trainer.dis_a.parameters()).detach().clone()
    return calls, (dis0, gen0), dis1, stats


def test_simultaneous_both_losses_see_the_starting_weights(tmp_path):
    calls, (dis0, gen0), dis1, stats = _step(tmp_path, "simultaneous")
    assert [c[0] for c in calls] == ["gen", "dis"]
    for _, dis_w, gen_w, _ in calls:
        assert torch.equal(dis_w, dis0) and torch.equal(gen_w, gen0)
    assert not torch.equal(dis1, dis0)  # D did step
    assert torch.isfinite(torch.stack(list(stats.values()))).all()


def test_alternating_updates_d_first_and_g_sees_the_updated_d(tmp_path):
    calls, (dis0, gen0), dis1, stats = _step(tmp_path, "alternating")
    assert [c[0] for c in calls] == ["dis", "gen"]
    (_, d_at_dis, g_at_dis, _), (_, d_at_gen, g_at_gen, _) = calls
    assert torch.equal(d_at_dis, dis0) and torch.equal(g_at_dis, gen0)  # D loss: current weights
    assert not torch.equal(d_at_gen, dis0) and torch.equal(d_at_gen, dis1)  # G loss: D already updated
    assert torch.equal(g_at_gen, gen0)
    assert {"loss_g", "loss_d", "dis_a", "dis_b", "recon_a"} <= set(stats)


def test_the_orders_give_different_weights(tmp_path):
    weights = {}
    for order in ("simultaneous", "alternating"):
        cfg = tiny_config(tmp_path, **{"train.update_order": order, "optim.lr": 1e-2})
        torch.manual_seed(0)
        trainer = UNITTrainer(cfg, torch.device("cpu"))
        x_a, x_b = torch.randn(2, 1, 16, 16), torch.randn(2, 3, 16, 16)
        trainer.train_step(x_a, x_b)
        weights[order] = torch.cat([p.detach().flatten() for p in trainer.gen.parameters()])
    assert not torch.equal(weights["simultaneous"], weights["alternating"])


def test_alternating_skip_keeps_the_update_whose_loss_was_finite(tmp_path, monkeypatch):
    import unitgan.train.trainer as trainer_mod

    real = trainer_mod.unit_gen_loss

    def nan_g(*a, **k):
        total, terms = real(*a, **k)
        return total + float("nan"), terms

    monkeypatch.setattr(trainer_mod, "unit_gen_loss", nan_g)
    cfg = tiny_config(tmp_path, **{"train.update_order": "alternating", "train.nonfinite": "skip"})
    torch.manual_seed(0)
    trainer = UNITTrainer(cfg, torch.device("cpu"))
    gen0 = [p.detach().clone() for p in trainer.gen.parameters()]
    dis0 = next(trainer.dis_a.parameters()).detach().clone()
    trainer.train_step(torch.randn(2, 1, 16, 16), torch.randn(2, 3, 16, 16))
    assert trainer.last_skipped
    assert all(torch.equal(p, q) for p, q in zip(trainer.gen.parameters(), gen0, strict=True))  # G skipped
    assert not torch.equal(next(trainer.dis_a.parameters()), dis0)  # D's finite update was applied


def test_alternating_with_the_fp16_scaler_steps_both(tmp_path):
    cfg = tiny_config(tmp_path, **{"train.update_order": "alternating", "train.precision": "fp16"})
    torch.manual_seed(0)
    trainer = UNITTrainer(cfg, torch.device("cpu"))
    assert trainer.scaler.is_enabled()
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=64.0)  # the default 2**16 overflows the first steps
    gen0 = next(trainer.gen.parameters()).detach().clone()
    dis0 = next(trainer.dis_a.parameters()).detach().clone()
    for _ in range(2):
        stats = trainer.train_step(torch.randn(2, 1, 16, 16), torch.randn(2, 3, 16, 16))
    assert torch.isfinite(torch.stack([stats["loss_g"], stats["loss_d"]])).all()
    assert not torch.equal(next(trainer.gen.parameters()), gen0)
    assert not torch.equal(next(trainer.dis_a.parameters()), dis0)


def test_update_order_is_validated():
    with pytest.raises(UnitganError, match=r"config key 'train.update_order' must be one of simultaneous, alternating"):
        load_config("demo", ["train.update_order=random"])
    assert load_config("unit_paper", ["data.root=x"]).train.update_order == "alternating"
    assert load_config("unit_paper", ["data.root=x"]).optim.lr_step == 0  # version_02: constant lr
    assert load_config("unit_master", ["data.root=x"]).optim.lr_step == 100_000
