"""``model.style_prior=bank``: test-time styles drawn from the remembered style codes of real training images.

Why (docs/results/multimodal.md, "Test-time styles"): the style codes the encoder gives real images of the multimodal domain have
a standard deviation of about 0.44 per dimension, so MUNIT's N(0, I) draws land mostly between the four
palettes. On the same seed-0 checkpoint (7000 steps), 16 draws per held-out sketch: N(0, I) coverage 0.73 /
nearest accuracy 0.75; a bank of real styles 0.98 / 0.87; each truth's own style 0.998 / 0.91.
"""

from __future__ import annotations

import json

import torch
from munit_support import munit_config

from unitgan.export import export_checkpoint, load_export
from unitgan.inference import Translator
from unitgan.models import build_generator, spread_rows
from unitgan.train.loop import train


def test_the_bank_is_a_fifo_of_real_styles_and_test_time_draws_come_from_it():
    cfg = munit_config("model.style_prior=bank", "model.style_bank=5")
    gen = build_generator(cfg.model)
    x = torch.zeros(1, 1, 16, 16)
    assert gen.style_bank("b") is None  # nothing remembered yet: draws fall back on N(0, I)
    first = torch.arange(12.0).view(3, 4)  # [3, style_dim]
    gen.remember_styles(first, "b")
    assert torch.equal(gen.style_bank("b"), first) and gen.style_bank("a") is None
    gen.remember_styles(first + 100, "b")  # 6 rows into a bank of 5: the oldest goes
    assert torch.equal(gen.style_bank("b"), torch.cat([first[1:], first + 100]))
    bank = gen.style_bank("b")
    draws = gen.sample_style(50, x, torch.Generator().manual_seed(0), domain="b")
    assert all(any(torch.equal(d, row) for row in bank) for d in draws)
    assert len({tuple(d.tolist()) for d in draws}) > 1  # not one row for every draw
    training_draws = gen.sample_style(50, x, torch.Generator().manual_seed(0))  # no domain: N(0, I), as MUNIT trains
    assert not any(torch.equal(d, row) for d in training_draws for row in bank)


def test_normal_prior_adds_nothing_to_the_state_dict():
    """Checkpoints of the default prior keep their keys (and older checkpoints load)."""
    gen = build_generator(munit_config().model)
    assert not [k for k in gen.state_dict() if "style_bank" in k]
    gen.remember_styles(torch.ones(2, 4), "b")  # a no-op
    assert gen.style_bank("b") is None


def test_training_fills_the_bank_and_translators_and_exports_draw_from_it(tmp_path):
    cfg = munit_config(
        "model.style_prior=bank",
        "model.style_bank=6",
        "data.batch_size=2",
        "train.steps=4",
        f"train.out_dir={tmp_path / 'run'}",
        "munit.eval_every=0",
    )
    result = train(cfg, progress=False)
    state = torch.load(result.checkpoint, weights_only=True)
    assert state["gen"]["style_bank_count"].tolist() == [6, 6]  # 4 steps x 2 real images, capped at 6
    translator = Translator.from_checkpoint(result.checkpoint)
    bank_b = translator.style_banks["b"]
    assert bank_b.shape == (6, 4) and bank_b.abs().sum() > 0
    codes = translator.draw_styles(8, seed=3, domain="b")
    assert all(any(torch.equal(c, row) for row in bank_b) for c in codes)
    assert torch.equal(codes, translator.draw_styles(8, seed=3, domain="b"))  # a seed gives the same styles
    assert not any(torch.equal(c, row) for c in translator.draw_styles(8, seed=3) for row in bank_b)

    out = tmp_path / "export"
    export_checkpoint(result.checkpoint, out, fmt="torchscript")
    manifest = json.loads((out / "export.json").read_text())
    assert len(manifest["style_banks"]["b"]) == 6
    exported = load_export(out)
    torch.testing.assert_close(exported.draw_styles(8, seed=3, domain="b"), codes)


def clustered_bank(sizes=(200, 30, 16, 10), dim=4, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """A bank of len(sizes) tight, far-apart clusters of unequal size (the looks of a domain; most images share
    one look): rows [M, dim] and each row's cluster [M]."""
    g = torch.Generator().manual_seed(seed)
    centers = 10 * torch.eye(len(sizes), dim)
    label = torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])
    return centers[label] + 0.01 * torch.randn(len(label), dim, generator=g), label


def test_k_draws_from_a_bank_show_k_different_looks():
    """``--styles 4`` on a domain with 4 looks gives the 4 looks (uniform draws of the same bank repeat the common
    one: all 4 in under 1% of seeds with these cluster sizes)."""
    bank, label = clustered_bank()
    for seed in range(30):
        rows = spread_rows(bank, 4, torch.Generator().manual_seed(seed))
        assert sorted(label[rows].tolist()) == [0, 1, 2, 3], seed
    uniform = [
        len(set(label[torch.randint(len(bank), (4,), generator=torch.Generator().manual_seed(s))].tolist()))
        for s in range(30)
    ]
    assert sum(n == 4 for n in uniform) < 10  # the contrast: uniform draws mostly miss a look


def test_one_draw_is_a_uniform_row_and_draws_are_reproducible():
    bank, label = clustered_bank()
    firsts = torch.cat([spread_rows(bank, 1, torch.Generator().manual_seed(s)) for s in range(2000)])
    share = (label[firsts] == 0).float().mean().item()  # the big look holds 200 of 256 rows
    assert abs(share - 200 / 256) < 0.04  # the served page's "another style" (one draw per seed) is uniform
    assert len(set(firsts.tolist())) > 200  # ... over all rows, not one per look
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(spread_rows(bank, 16, g1), spread_rows(bank, 16, g2))


def test_more_draws_than_rows_use_every_row_before_repeating():
    bank = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    rows = spread_rows(bank, 14, torch.Generator().manual_seed(0))
    assert sorted(rows[:6].tolist()) == list(range(6)) and sorted(rows[6:12].tolist()) == list(range(6))
    assert spread_rows(bank, 0).numel() == 0
