"""Slow: short CPU runs on the real offline MNIST -> USPS (the authors' networks at reduced width) that pin what
the project claims about digit adaptation (README, docs/da_protocol.md):

- the source-only classifier, with the ink-box preprocessing, reads USPS far above chance;
- with the three named deviations (``da.cls_ab_w=10 da.sem_ab_w=1 da.target_path=a``) the UNIT-DA classifier
  reads the target far above chance too, where the authors' losses leave it near chance (16.5% in the same
  300-step run) because the target's private first D layer is trained by the GAN alone.

The project does not claim that UNIT-DA beats source-only, and in these short runs it trails it (300 steps,
seed 0, 1 thread: source-only 69.6% target / 78.4% source, UNIT-DA with the deviations 61.3% / 69.9%); level
with it (91.20 against 90.86) only at the preset's 10000 steps (docs/da_protocol.md, README).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unitgan.config import load_config
from unitgan.train.loop import train

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data of the repository root
STEPS = 300  # each run: about 1 CPU minute for UNIT-DA, seconds for source-only (1 thread)
REDUCED = [
    "model.ch=8",
    "model.dis_ch=8",
    "data.batch_size=16",
    "optim.lr=0.001",
    "optim.dis_lr=0.001",
    "da.feat32_w=0.0001",
    "model.vae_head_std=0.002",
]
DEVIATIONS = ["da.cls_ab_w=10", "da.sem_ab_w=1", "da.target_path=a"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA / "usps.npz").is_file(), reason="needs ../shared/data/{mnist,usps}.npz"),
]


def _results(run: Path, overrides: list[str]) -> dict[str, float]:
    torch.set_num_threads(1)
    cfg = load_config(
        "da_mnist2usps",
        [
            f"data.a={DATA / 'mnist.npz'}",
            f"data.b={DATA / 'usps.npz'}",
            f"train.out_dir={run}",
            f"train.steps={STEPS}",
            "train.ckpt_every=100000",
            "da.eval_every=0",
            *REDUCED,
            *overrides,
        ],
    )
    train(cfg, progress=False)
    return json.loads((run / "da_results.json").read_text())


@pytest.fixture(scope="module")
def source_only(tmp_path_factory) -> dict[str, float]:
    return _results(tmp_path_factory.mktemp("source_only"), ["da.source_only=true"])


def test_source_only_reads_usps_far_above_chance(source_only):
    # measured: 69.6% target, 78.4% source (seed 0, 1 thread); chance is 10%
    assert source_only["target_acc"] >= 0.55, source_only
    assert source_only["source_acc"] >= 0.65, source_only


def test_unit_da_with_the_named_deviations_reads_the_target_far_above_chance(tmp_path):
    # measured: 61.3% target, 69.9% source (seed 0, 1 thread); the authors' losses: 16.5% target
    adapted = _results(tmp_path / "unit_da", DEVIATIONS)
    assert adapted["target_acc"] >= 0.45, adapted
    assert adapted["source_acc"] >= 0.55, adapted
