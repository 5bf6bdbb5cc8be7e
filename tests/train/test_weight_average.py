"""train.ema: an exponential moving average of the generator's weights, which inference uses."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config
from munit_support import MUNIT_TINY
from torch import nn

from unitgan.checkpoint import load_checkpoint
from unitgan.errors import UnitganError
from unitgan.inference import load_generator
from unitgan.metrics.multimodal import multimodal_scores, style_samples, synthetic_ground_truth
from unitgan.train.base import WeightAverage
from unitgan.train.loop import train

torch.set_num_threads(1)


def test_the_average_follows_the_ramp_then_the_decay_and_copies_buffers():
    net = nn.BatchNorm1d(3)  # a weight, a bias and running statistics (buffers)
    avg = WeightAverage(net, decay=0.5)
    expected = net.weight.detach().clone()
    for n in range(1, 6):
        with torch.no_grad():
            net.weight.copy_(torch.randn(3))
            net.running_mean.copy_(torch.randn(3))
        avg.update(net)
        d = min(0.5, (1 + n) / (10 + n))  # 0.18, 0.25, 0.31, 0.36, 0.4: the ramp; the decay 0.5 from n = 9
        expected = d * expected + (1 - d) * net.weight.detach()
        assert torch.allclose(avg.net.weight, expected, atol=1e-6), n
        assert torch.equal(avg.net.running_mean, net.running_mean)  # buffers are copied, not averaged
    assert avg.updates == 5
    for _ in range(10):
        avg.update(net)  # the same weights over and over: the average converges to them at rate 0.5
    assert torch.allclose(avg.net.weight, net.weight, atol=1e-3)
    assert not any(p.requires_grad for p in avg.net.parameters())
    avg.train()
    assert not avg.net.training  # the average stays in eval mode whatever its owner does


@pytest.mark.parametrize("family", ["unit", "munit"])
def test_a_run_with_an_average_resumes_exactly_and_translates_with_it(tmp_path, family):
    extra = {"train.ema": 0.5}
    if family == "munit":
        extra.update(dict(s.split("=", 1) for s in MUNIT_TINY))
        extra.update({"munit.eval_every": 0, "munit.eval_styles": 2})
    full = train(tiny_config(tmp_path / "full", **{**extra, "train.steps": 6}), progress=False)
    train(tiny_config(tmp_path / "part", **{**extra, "train.steps": 3, "train.ckpt_every": 3}), progress=False)
    resumed = train(
        tiny_config(tmp_path / "part", **{**extra, "train.steps": 6, "train.ckpt_every": 3}), progress=False
    )
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a["ema_updates"] == b["ema_updates"] == 6
    for k in a["gen_ema"]:
        assert torch.equal(a["gen_ema"][k], b["gen_ema"][k]), k
    # the average is not the trained generator, and it is what translate / export / evaluate load
    assert any(not torch.equal(a["gen"][k], a["gen_ema"][k]) for k in a["gen"])
    gen, cfg, _ = load_generator(full.checkpoint)
    for k, v in gen.state_dict().items():
        assert torch.equal(v, a["gen_ema"][k]), k
    if family == "munit":  # the run's own evaluation scored the average too
        x_a, truths = synthetic_ground_truth(cfg)
        scores = multimodal_scores(style_samples(gen.eval(), x_a, 2, seed=cfg.train.seed), truths)
        logged = json.loads((full.run_dir / "multimodal.json").read_text())
        assert logged["nearest_accuracy"] == pytest.approx(scores["nearest_accuracy"], abs=1e-6)
        assert logged["pixel_diversity"] == pytest.approx(scores["pixel_diversity"], abs=1e-6)


def test_without_an_average_the_checkpoint_has_none_and_inference_loads_the_trained_weights(tmp_path):
    result = train(tiny_config(tmp_path), progress=False)
    state = load_checkpoint(result.checkpoint)
    assert "gen_ema" not in state and "ema_updates" not in state
    gen, _, _ = load_generator(result.checkpoint)
    for k, v in gen.state_dict().items():
        assert torch.equal(v, state["gen"][k]), k


def test_turning_the_average_on_at_resume_starts_it_from_the_checkpoint(tmp_path):
    train(tiny_config(tmp_path, **{"train.steps": 2}), progress=False)
    result = train(tiny_config(tmp_path, **{"train.steps": 3, "train.ema": 0.9}), progress=False)
    state = load_checkpoint(result.checkpoint)
    assert state["ema_updates"] == 1  # one update since the resume, from the step-2 weights


def test_a_decay_outside_zero_to_one_is_refused_naming_the_key(tmp_path):
    for bad in (1.0, -0.1):
        with pytest.raises(UnitganError, match="train.ema"):
            tiny_config(tmp_path, **{"train.ema": bad})
