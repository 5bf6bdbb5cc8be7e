"""MUNIT: networks, losses, the multimodal synthetic ground truth and its metrics (tiny CPU shapes)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_model_overrides
from torch import nn

from unitgan.checkpoint import load_checkpoint
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
    style_samples,
    synthetic_ground_truth,
)
from unitgan.metrics.pixel import pixel_accuracy
from unitgan.models import build_discriminators, build_generator
from unitgan.models.munit import MUNITGenerator
from unitgan.train.loop import train
from unitgan.train.munit import MUNITTrainer
from unitgan.train.registry import trainer_class

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"

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
# recorded with the code before modes existed: modes = 1 must not change a bit.
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


# ---------------------------------------------------------------------------------------------------------
# The trainer on the single loop, and the benchmark


def tiny_munit_config(out_dir, **extra):
    """munit_demo shrunk to a few thousand parameters, K = 4 modes, 3 held-out scenes."""
    values = {
        "model.n_shared": 0,
        "model.style_dim": 3,
        "model.mlp_dim": 8,
        "data.synthetic_test": 3,
        "munit.eval_styles": 4,
        "munit.eval_every": 0,
        **extra,
    }
    return load_config("munit_demo", [f"train.out_dir={out_dir}", *tiny_model_overrides(**values)])


@pytest.mark.parametrize("order", ["alternating", "simultaneous"])
def test_munit_trainer_step_has_finite_losses(tmp_path, order):
    extra = {"train.update_order": order, "munit.style_kl_w": 0.1, "munit.cyc_recon_w": 10}  # every term
    cfg = tiny_munit_config(tmp_path, **extra)
    assert trainer_class(cfg) is MUNITTrainer
    torch.manual_seed(0)
    trainer = MUNITTrainer(cfg, torch.device("cpu"))
    before = [p.detach().clone() for p in trainer.parameters()]
    stats = trainer.train_step(*trainer.data(0, 0, 1).next_batch())
    for name in ("loss_g", "loss_d", "gan_b", "recon_a", "recon_c_b", "recon_s_b", "cyc_recon_a", "style_kl_b"):
        assert torch.isfinite(stats[name]), name
    assert all(not torch.equal(p, q) for p, q in zip(before, trainer.parameters(), strict=True))  # all updated


def test_munit_trainer_grid_shows_several_styles(tmp_path):
    cfg = tiny_munit_config(tmp_path)
    torch.manual_seed(0)
    trainer = MUNITTrainer(cfg, torch.device("cpu"))
    rows = trainer.sample_rows(trainer.fixed_batch())
    g = MUNITTrainer.GRID_STYLES
    assert len(rows) == 2 * (2 + g)
    x_ab = rows[2 : 2 + g]  # x_a, x_aa, then the translations of x_a in g styles
    assert all(r.shape == (2, 3, 16, 16) for r in x_ab)
    assert not torch.allclose(x_ab[0], x_ab[1], atol=1e-4)
    assert torch.equal(trainer.sample_rows(trainer.fixed_batch())[2], x_ab[0])  # the same styles every grid


def test_munit_resume_is_bit_exact(tmp_path):
    """Stop after 2 steps, resume to 4: every tensor of the checkpoint equals an uninterrupted 4-step run."""
    extra = {"train.steps": 4, "train.ckpt_every": 2, "munit.style_kl_w": 0.1, "munit.eval_every": 2}
    full = train(tiny_munit_config(tmp_path / "full", **extra), progress=False)
    part = train(tiny_munit_config(tmp_path / "part", **{**extra, "train.steps": 2}), progress=False)
    assert part.step == 2
    resumed = train(tiny_munit_config(tmp_path / "part", **extra), progress=False)
    assert resumed.step == 4
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)

    def tensors(x, path=""):
        if isinstance(x, torch.Tensor):
            yield path, x
        elif isinstance(x, dict):
            for k, v in x.items():
                yield from tensors(v, f"{path}/{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                yield from tensors(v, f"{path}/{i}")

    ta = dict(tensors({k: v for k, v in a.items() if not k.startswith("_")}))
    tb = dict(tensors({k: v for k, v in b.items() if not k.startswith("_")}))
    assert ta.keys() == tb.keys() and any(k.startswith("/opt_gen") for k in ta)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def test_munit_evaluate_writes_the_multimodal_scores(tmp_path):
    cfg = tiny_munit_config(tmp_path)
    torch.manual_seed(0)
    trainer = MUNITTrainer(cfg, torch.device("cpu"))
    rng = torch.get_rng_state()
    logged = trainer.evaluate(7, tmp_path, final=True)
    assert torch.equal(torch.get_rng_state(), rng)  # evaluation leaves the training noise alone
    written = json.loads((tmp_path / "multimodal.json").read_text())
    assert written["step"] == 7 and written["n_samples"] == 4 and written["n_modes"] == K and written["n_inputs"] == 3
    for name in ("coverage", "nearest_accuracy", "pixel_diversity"):
        assert logged[name] == written[name] and 0 <= logged[name] <= 1
    assert logged["pixel_diversity"] > 0  # different styles, different samples
    # the scores are those of the metrics on the same samples
    x_a, truths = synthetic_ground_truth(cfg)
    samples = style_samples(trainer.gen.eval(), x_a, 4, seed=cfg.train.seed)
    assert multimodal_scores(samples, truths)["nearest_accuracy"] == written["nearest_accuracy"]


def test_style_samples_of_unit_repeat_its_one_translation():
    cfg = load_config("demo", tiny_model_overrides(**{"data.synthetic_modes": K}))
    torch.manual_seed(0)
    gen = build_generator(cfg.model).eval()
    x_a, truths = synthetic_ground_truth(cfg)
    samples = style_samples(gen, x_a, 3)
    assert samples.shape == (4, 3, 3, 16, 16) and truths.shape == (4, K, 3, 16, 16)
    assert torch.equal(samples[:, 0], samples[:, 2]) and pixel_diversity(samples) == 0


@pytest.mark.slow  # three tiny trainings: about 10 s on the shared 2-core machine
def test_multimodal_benchmark_smoke(tmp_path, capsys):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_multimodal", BENCH / "multimodal.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "mm"
    tiny = tiny_model_overrides(**{"model.n_shared": 0, "model.mlp_dim": 8, "data.synthetic_test": 2, "train.ema": 0.5})
    args = ["--seeds", "0", "--steps", "2", "--styles", "3", "--no-features", "--out", str(out), *tiny]
    assert bench.main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"UNIT/0", "MUNIT/0", "MUNIT shared/0"}
    assert all(r["steps"] == 2 and r["n_samples"] == 3 and r["s_per_step"] > 0 for r in results.values())
    assert results["UNIT/0"]["pixel_diversity"] == 0 and results["MUNIT/0"]["pixel_diversity"] > 0
    # scored with the weights translate uses: with train.ema the average, not the trained generator
    state = load_checkpoint(next((out / "MUNIT_seed0" / "checkpoints").glob("*.pt")))
    cfg = load_config("munit_demo", [*tiny, "data.synthetic_modes=4"])
    x_a, truths = synthetic_ground_truth(cfg, 100)  # as the benchmark: --scenes 100 (all 2 held-out scenes here)
    for key, same in (("gen_ema", True), ("gen", False)):
        gen = build_generator(cfg.model)
        gen.load_state_dict(state[key])
        diversity = pixel_diversity(style_samples(gen.eval(), x_a, 3, seed=0))
        assert (diversity == pytest.approx(results["MUNIT/0"]["pixel_diversity"], abs=1e-6)) is same, key
    # the variant's own keys win over the overrides for every run
    assert "n_shared: 1" in (out / "MUNIT_shared_seed0" / "config.yaml").read_text()
    assert "n_shared: 0" in (out / "MUNIT_seed0" / "config.yaml").read_text()
    table = (out / "table.md").read_text()
    assert all(f"| {name} |" in table for name in ("UNIT", "MUNIT", "MUNIT shared"))
    assert "| MUNIT |" in capsys.readouterr().out


def test_munit_paper_preset_has_the_authors_parameter_counts():
    """Expected counts: NVlabs/MUNIT master ``networks.py`` instantiated in a scratch folder with
    configs/edges2shoes_folder.yaml's gen/dis settings: ``AdaINGen(3, gen)`` 15,026,187 parameters per domain,
    ``MsImageDis(3, dis)`` 8,271,171 per domain."""
    cfg = load_config("munit_paper", ["data.root=/tmp"])
    gen = build_generator(cfg.model)
    dis_a, dis_b = build_discriminators(cfg.model)
    assert sum(p.numel() for p in gen.parameters()) == 2 * 15_026_187
    assert sum(p.numel() for p in dis_a.parameters()) == sum(p.numel() for p in dis_b.parameters()) == 8_271_171


@pytest.mark.parametrize("preset", ["munit_paper", "unit_master"])  # munit_demo deviates, by name (its YAML)
def test_fresh_networks_follow_the_nvlabs_init_rule(preset):
    """NVlabs' trainer (MUNIT master ``trainer.py``, also the authors' UNIT master): every conv / linear weight
    Kaiming-normal (std sqrt(2 / fan_in)), then both discriminators redrawn N(0, 0.02); biases 0; their
    LayerNorm's gamma drawn from U(0, 1) and beta 0. Checked on a fresh network of each preset that names them,
    per tensor of at least 1,000 weights (the std within 10%) and over all gammas pooled."""
    torch.manual_seed(0)
    cfg = load_config(preset, ["data.root=/tmp"])
    gen = build_generator(cfg.model)
    dis_a, dis_b = build_discriminators(cfg.model)

    def convs(module: nn.Module):
        return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]

    for dis in (dis_a, dis_b):
        for m in convs(dis):
            if m.weight.numel() >= 1000:
                assert abs(m.weight.std().item() - 0.02) < 0.002, m
                assert abs(m.weight.mean().item()) < 0.002, m
            assert m.bias is None or not m.bias.any()
    checked = 0
    for m in convs(gen):
        fan_in = m.weight[0].numel() if not isinstance(m, nn.ConvTranspose2d) else m.weight[:, 0].numel()
        if m.weight.numel() >= 1000:
            expected = (2 / fan_in) ** 0.5
            assert abs(m.weight.std().item() / expected - 1) < 0.1, m
            checked += 1
    assert checked > 5
    norms = [m for m in gen.modules() if type(m).__name__ == "LayerNorm2d"]
    assert norms and all(m.kind == "nvlabs" for m in norms)
    gamma = torch.cat([m.weight.detach() for m in norms])
    assert gamma.min() >= 0 and gamma.max() < 1
    assert abs(gamma.mean().item() - 0.5) < 4 * (1 / 12 / len(gamma)) ** 0.5  # U(0, 1): mean 1/2, var 1/12
    assert abs(gamma.var().item() - 1 / 12) < 0.25 / 12
    assert not torch.cat([m.bias.detach() for m in norms]).any()
