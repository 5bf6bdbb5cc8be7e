"""MUNIT: networks, losses, the multimodal synthetic ground truth and its metrics (tiny CPU shapes)."""

from __future__ import annotations

import hashlib

import pytest
import torch
from conftest import tiny_model_overrides
from torch import nn

from unitgan.config import MUNITConfig, load_config
from unitgan.data.synthetic import MAX_MODES, SyntheticDomain
from unitgan.errors import UnitganError
from unitgan.losses import MUNITOutputs, gan_g_loss, munit_gen_loss
from unitgan.metrics.multimodal import (
    feature_diversity,
    mode_coverage,
    multimodal_scores,
    nearest_accuracy,
    optional_inception,
    pixel_diversity,
)
from unitgan.metrics.pixel import pixel_accuracy
from unitgan.models import build_generator
from unitgan.models.munit import MUNITGenerator

K = 4


def tiny_munit(n_shared: int = 0) -> MUNITGenerator:
    cfg = load_config(
        "demo",
        tiny_model_overrides(
            **{
                "model.arch": "munit",
                "model.n_shared": n_shared,
                "model.upsample": "nearest",
                "model.up_norm": "layer",
                "model.out_kernel": 7,
                "model.init": "kaiming",
                "model.style_dim": 3,
                "model.mlp_dim": 8,
            }
        ),
    )
    torch.manual_seed(0)
    gen = build_generator(cfg.model)
    assert isinstance(gen, MUNITGenerator)
    return gen


# ---------------------------------------------------------------------------------------------------------
# Networks


def test_munit_shapes():
    gen = tiny_munit()
    x_a, x_b = torch.rand(2, 1, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1  # ch 4, n_down 2
    c_a, s_a = gen.encode(x_a, "a")
    c_b, s_b = gen.encode(x_b, "b")
    assert c_a.shape == c_b.shape == (2, 16, 4, 4)
    assert s_a.shape == s_b.shape == (2, 3) and gen.style_dim == 3
    assert gen.decode(c_a, s_b, "b").shape == (2, 3, 16, 16)
    assert gen.decode(c_b, s_a, "a").shape == (2, 1, 16, 16)
    x_ab = gen.translate(x_a, "a2b")
    assert x_ab.shape == (2, 3, 16, 16) and x_ab.abs().max() <= 1
    assert gen.translate(x_b, "b2a", style=s_a[:1]).shape == (2, 1, 16, 16)  # one style for the batch
    assert gen.size_multiple == 4


def test_style_samples_give_different_outputs_and_a_seed_repeats_them():
    gen = tiny_munit().eval()
    x_a = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        one = gen.translate(x_a, "a2b", generator=torch.Generator().manual_seed(1))
        again = gen.translate(x_a, "a2b", generator=torch.Generator().manual_seed(1))
        other = gen.translate(x_a, "a2b", generator=torch.Generator().manual_seed(2))
        s = gen.sample_style(2, x_a, torch.Generator().manual_seed(1))
        explicit = gen.translate(x_a, "a2b", style=s)
    assert torch.equal(one, again) and torch.equal(one, explicit)
    assert (one - other).abs().mean() > 1e-3  # the style changes the output, not only noise-level bits


def _params_reached(gen: MUNITGenerator, domain: str) -> set[int]:
    """ids of the parameters the content code of ``domain`` depends on (non-zero gradient)."""
    gen.zero_grad(set_to_none=True)
    x = torch.rand(2, gen.cfg.input_nc_a if domain == "a" else gen.cfg.input_nc_b, 16, 16)
    gen.encode_content(x, domain).square().sum().backward()
    return {id(p) for p in gen.parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("n_shared", [0, 1])
def test_shared_content_blocks_are_one_set_of_parameters(n_shared):
    gen = tiny_munit(n_shared)
    common = _params_reached(gen, "a") & _params_reached(gen, "b")
    shared = {id(p) for p in gen.enc_c_shared.parameters()}
    assert common == shared  # both domains' content goes through exactly these Parameter objects
    assert len(shared) == (2 if n_shared else 0)  # one residual block: two conv weights (no bias before IN)
    # sharing keeps the decoders and style encoders per domain
    assert not {id(p) for p in gen.dec_a.parameters()} & {id(p) for p in gen.dec_b.parameters()}


# ---------------------------------------------------------------------------------------------------------
# Losses


def test_munit_gen_loss_matches_hand_computation():
    n = 2
    full = lambda v, *shape: torch.full(shape, float(v))  # noqa: E731
    out = MUNITOutputs(
        x_a=full(0, n, 1, 4, 4),
        x_b=full(0, n, 3, 4, 4),
        c_a=full(1, n, 2, 2, 2),
        c_b=full(-1, n, 2, 2, 2),
        s_a=full(0, n, 3),
        s_b=full(1, n, 3),
        x_aa=full(0.5, n, 1, 4, 4),  # recon_a = 0.5
        x_bb=full(-0.25, n, 3, 4, 4),  # recon_b = 0.25
        x_ab=full(0, n, 3, 4, 4),
        x_ba=full(0, n, 1, 4, 4),
        c_ab=full(3, n, 2, 2, 2),  # recon_c_a = |3 - 1| = 2
        c_ba=full(-1.5, n, 2, 2, 2),  # recon_c_b = 0.5
        s_ab=full(0.75, n, 3),  # recon_s_b = 0.25
        s_ba=full(-2, n, 3),  # recon_s_a = 2
    )
    d_ab, d_ba = [full(0.5, n, 1, 2, 2)], [full(0, n, 1, 2, 2)]  # lsgan: (0.5-1)^2 = 0.25, (0-1)^2 = 1
    w = MUNITConfig(gan_w=2, recon_w=10, recon_c_w=3, recon_s_w=5, cyc_recon_w=7)
    total, terms = munit_gen_loss(out, d_ab, d_ba, w, "lsgan")
    assert set(terms) == {"gan_a", "gan_b", "recon_a", "recon_b", "recon_c_a", "recon_c_b", "recon_s_a", "recon_s_b"}
    assert float(terms["gan_b"]) == pytest.approx(0.25) and float(terms["gan_a"]) == pytest.approx(1.0)
    expected = 2 * (1 + 0.25) + 10 * (0.5 + 0.25) + 3 * (2 + 0.5) + 5 * (2 + 0.25)
    assert float(total) == pytest.approx(expected)
    # the explicit cycle counts once both cycle images are given
    out.x_aba, out.x_bab = full(1, n, 1, 4, 4), full(0.5, n, 3, 4, 4)
    total_cyc, terms = munit_gen_loss(out, d_ab, d_ba, w, "lsgan")
    assert float(terms["cyc_recon_a"]) == pytest.approx(1) and float(terms["cyc_recon_b"]) == pytest.approx(0.5)
    assert float(total_cyc) == pytest.approx(expected + 7 * 1.5)
    assert float(terms["gan_a"]) == float(gan_g_loss(d_ba, "lsgan"))


# ---------------------------------------------------------------------------------------------------------
# The multimodal synthetic domain

# sha256 of the images and ground truths of every synthetic split/domain/palette at 16 px (seed 1, 3 scenes),
# recorded with the code of commit 57c1e1d, before modes existed: modes = 1 must not change a bit.
SINGLE_MODE_SHA256 = "7450f6773a243dd5e7349f2b71ba06e66775f120bfbdff29aed82465c6cb886f"


def test_one_mode_renders_todays_domains_bit_for_bit():
    h = hashlib.sha256()
    for dom in "ab":
        for split in ("train", "test"):
            for palette in ("single", "kind"):
                d = SyntheticDomain(dom, split, 16, 3, seed=1, palette=palette, modes=1)
                for i in range(3):
                    h.update(d[i].numpy().tobytes())
                    h.update(d.ground_truth(i, "b" if dom == "a" else "a").numpy().tobytes())
    assert h.hexdigest() == SINGLE_MODE_SHA256


@pytest.mark.parametrize("palette", ["single", "kind"])
def test_each_test_scene_has_k_distinct_renderings(palette):
    b = SyntheticDomain("b", "test", 16, 6, palette=palette, modes=K)
    a = SyntheticDomain("a", "test", 16, 6, modes=K)
    one = SyntheticDomain("a", "test", 16, 6, modes=1)
    for i in range(6):
        x_a, truths = b.multimodal_pair(i)
        assert truths.shape == (K, 3, 16, 16)
        assert torch.equal(x_a, a[i]) and torch.equal(x_a, one[i])  # the input is test A[i], whatever K
        assert torch.equal(b[i], truths[b.mode(i)])  # test B[i] is one of them
        acc = pixel_accuracy(truths[:, None].expand(-1, K, -1, -1, -1).flatten(0, 1), truths.repeat(K, 1, 1, 1))
        acc = acc.view(K, K)
        assert torch.all(acc.diag() == 1)
        assert acc[~torch.eye(K, dtype=torch.bool)].max() < 0.1  # different at almost every pixel


def test_training_modes_are_drawn_per_scene_and_cover_all_k():
    b = SyntheticDomain("b", "train", 16, 200, modes=K)
    counts = torch.bincount(torch.tensor([b.mode(i) for i in range(200)]), minlength=K)
    assert counts.numel() == K and counts.min() >= 30  # about 50 each
    assert SyntheticDomain("b", "train", 16, 10, modes=1).mode(3) == 0
    with pytest.raises(ValueError, match="modes"):
        SyntheticDomain("b", "train", 16, 10, modes=MAX_MODES + 1)


def test_config_keys_are_validated():
    with pytest.raises(UnitganError, match="data.synthetic_modes"):
        load_config("demo", ["data.synthetic_modes=7"])
    for key, value in [
        ("model.style_dim", 0),
        ("model.style_n_down", 1),
        ("model.mlp_dim", 0),
        ("munit.recon_c_w", -1),
    ]:
        with pytest.raises(UnitganError, match=key):
            load_config("demo", [f"{key}={value}"])


# ---------------------------------------------------------------------------------------------------------
# Metrics


@pytest.fixture(scope="module")
def truths() -> torch.Tensor:  # [N, K, 3, 16, 16]
    b = SyntheticDomain("b", "test", 16, 3, modes=K)
    return torch.stack([b.multimodal_pair(i)[1] for i in range(3)])


def test_unimodal_outputs_cover_one_mode_in_k(truths):
    samples = truths[:, :1].expand(-1, 5, -1, -1, -1)  # 5 samples, all equal to mode 0 (UNIT-like)
    assert mode_coverage(samples, truths) == pytest.approx(1 / K)
    assert nearest_accuracy(samples, truths) == pytest.approx(1.0)
    assert pixel_diversity(samples) == 0


def test_perfect_samples_cover_every_mode(truths):
    samples = truths.flip(1)  # one sample per mode, in another order
    assert mode_coverage(samples, truths) == 1.0
    assert nearest_accuracy(samples, truths) == 1.0
    assert pixel_diversity(samples) > 0.1


def test_diverse_garbage_is_diverse_but_inaccurate(truths):
    samples = torch.rand(3, 5, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores = multimodal_scores(samples, truths)
    assert scores["coverage"] == 0
    assert scores["nearest_accuracy"] < 0.2
    assert scores["pixel_diversity"] > 0.3  # uniform noise: E|u - v| = 1/3 on the [0, 1] scale
    assert scores["feature_diversity"] is None  # no feature network given


def test_feature_diversity_uses_the_feature_network(truths):
    net = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())  # stands in for Inception: [N, 12] features
    assert feature_diversity(truths[:, :1].expand(-1, 3, -1, -1, -1), net) == 0
    p, q = net(truths[:, 0]), net(truths[:, 1])
    assert feature_diversity(truths[:, :2], net) == pytest.approx(float((p - q).norm(dim=1).mean()), rel=1e-5)
    assert multimodal_scores(truths, truths, features=net)["feature_diversity"] > 0


def test_no_inception_file_means_no_feature_diversity(tmp_path):
    assert optional_inception(tmp_path / "missing.pt") is None
