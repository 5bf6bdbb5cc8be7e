"""The authors' version_02 networks expressed in config: the unit_street / unit_animals / unit_faces presets
build networks with exactly the authors' parameter counts, the new keys shape the networks as documented, and
each preset trains (at a reduced size)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from unitgan.config import load_config
from unitgan.errors import UnitganError
from unitgan.models import build_discriminators, build_generator
from unitgan.models.layers import ResBlock, blur_downsample
from unitgan.train.loop import train

# Parameter counts of the authors' networks, obtained by running their code (never committed):
#   repository mingyuliutw/UNIT, branch version_02, commit 96def6b3a4dd484c83e1d968fdc714b0646849bf,
#   file src/trainers/cocogan_nets.py (+ common_net.py, init.py), torch 2.14.1, opencv-python-headless 5.0.0;
#   one patch in the scratch copy: GaussianSmoother's `(kernel_size-1)/2` -> `//2` (Python 3 division).
#   For each yaml: gen = <gen.name>(hyperparameters['gen']), dis = <dis.name>(hyperparameters['dis']), and
#   sum(p.numel() for p in module.parameters()) (a shared Parameter is yielded once); "G shared" counts
#   gen.enc_shared + gen.dec_shared. Command: python count.py <yaml>... in /tmp/v02nets/authors.
#   These agree with PAPER.md's "version_02 street config G 18.0M (2.36M shared), D 9.3M".
#   In the same scratch run the authors' weights were copied into unitgan's preset networks: translations agree
#   to 3.3e-7 and discriminator scores exactly (eval mode, 64x64 inputs).
AUTHORS_COUNTS = {
    # preset: (authors' yaml, G, G shared, D)
    "unit_street": ("exps/unit_local/sunny2rainy.yaml: COCOResGen2 + COCOMsDis", 18_017_286, 2_360_320, 9_308_934),
    "unit_animals": ("exps/unit/corgi2husky.yaml: COCOResGen + COCODis", 18_017_286, 2_360_320, 50_298_114),
    "unit_faces": ("exps/unit/blondhair.yaml: COCOResGen2 + COCOSharedDis", 18_017_286, 2_360_320, 25_240_065),
}
V02_PRESETS = sorted(AUTHORS_COUNTS)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("preset", V02_PRESETS)
def test_v02_presets_have_the_authors_parameter_counts(preset):
    source, g_total, g_shared, d_total = AUTHORS_COUNTS[preset]
    m = load_config(preset, ["data.root=x"]).model
    gen = build_generator(m)
    dis_a, dis_b = build_discriminators(m)
    assert n_params(gen) == g_total, source
    assert n_params(gen.enc_shared) + n_params(gen.dec_shared) == g_shared, source
    assert n_params(nn.ModuleList([dis_a, dis_b])) == d_total, source  # a shared layer counted once


# unitgan's own presets (unit_paper included: the paper's objective on unitgan's networks, not a version_02
# configuration); the version_02 keys' defaults must not change them
# (state dicts at seed 0 were also compared before/after by hash: identical)
EXISTING_COUNTS = {
    "demo": (537_732, 389_700),
    "small": (834_246, 390_276),
    "unit_paper": (18_008_838, 12_543_234),
    "unit_master": (21_698_438, 16_542_342),
}


def test_only_the_v02_presets_claim_a_v02_configuration():
    from importlib.resources import files

    for path in files("unitgan.configs").iterdir():
        if path.name.endswith(".yaml") and path.name.startswith("unit_"):
            header = " ".join(x for x in path.read_text().splitlines() if x.startswith("#"))
            claims = "version_02" in header and "NOT one of" not in header
            assert claims == (path.name[:-5] in AUTHORS_COUNTS), path.name


@pytest.mark.parametrize("preset", sorted(EXISTING_COUNTS))
def test_existing_presets_keep_their_networks(preset):
    m = load_config(preset, ["data.root=x"]).model
    gen = build_generator(m)
    dis_a, dis_b = build_discriminators(m)
    assert (n_params(gen), n_params(nn.ModuleList([dis_a, dis_b]))) == EXISTING_COUNTS[preset]
    assert not any(isinstance(x, nn.Dropout) for x in gen.modules())


def tiny_model(preset: str, *extra: str):
    return load_config(preset, ["data.root=x", "model.ch=4", "model.dis_ch=4", *extra]).model


def test_resgen2_layout_no_norm_in_the_conv_stack_dropout_in_the_residual_blocks():
    m = tiny_model("unit_street")
    gen = build_generator(m)
    stem, down1, down2 = gen.enc_a.net[0], gen.enc_a.net[1], gen.enc_a.net[2]
    for block in (stem, down1, down2, gen.dec_a.net[3], gen.dec_a.net[4]):  # 7x7 conv, stride-2 convs, deconvs
        assert not any(isinstance(x, nn.InstanceNorm2d) for x in block.modules())
        (act,) = [x for x in block.modules() if isinstance(x, nn.LeakyReLU)]
        assert act.negative_slope == 0.01
    for block in [*gen.enc_a.net[3:], *gen.enc_shared, *gen.dec_shared, *gen.dec_a.net[:3]]:
        assert isinstance(block, ResBlock)
        kinds = [type(x) for x in block.body.modules() if not isinstance(x, (nn.Sequential, nn.Identity))]
        assert kinds == [nn.Conv2d, nn.InstanceNorm2d, nn.ReLU, nn.Conv2d, nn.InstanceNorm2d, nn.Dropout]
        assert block.body[2].p == 0.5 and block.body[0][1].bias is not None  # version_02 keeps conv biases


def test_resgen_layout_instance_norm_and_relu_in_the_conv_stack():
    gen = build_generator(tiny_model("unit_animals"))
    stem, down = gen.enc_a.net[0], gen.enc_a.net[1]
    assert [type(x) for x in stem][1:] == [nn.Conv2d, nn.Identity, nn.LeakyReLU]  # no norm after the 7x7 conv
    assert [type(x) for x in down][1:] == [nn.Conv2d, nn.InstanceNorm2d, nn.ReLU]
    assert [type(x) for x in gen.dec_a.net[3]] == [nn.ConvTranspose2d, nn.InstanceNorm2d, nn.ReLU]


def test_residual_dropout_only_while_training():
    gen = build_generator(tiny_model("unit_street"))
    x = torch.randn(2, 3, 16, 16)
    gen.eval()
    assert torch.equal(gen.translate(x, "a2b"), gen.translate(x, "a2b"))
    gen.train()
    assert not torch.equal(gen.translate(x, "a2b"), gen.translate(x, "a2b"))


def test_shared_discriminator_layers_are_one_module_in_both_domains():
    m = tiny_model("unit_faces")
    dis_a, dis_b = build_discriminators(m)
    net_a, net_b = dis_a.scales[0].net, dis_b.scales[0].net
    assert net_a[0][1].kernel_size == (7, 7) and net_a[1][1].kernel_size == (3, 3)
    assert len(net_a) == len(net_b) == 6 + 1
    for i in range(6 + 1):  # 2 private layers each, then 4 shared layers and the 1x1 head
        assert (net_a[i] is net_b[i]) == (i >= 2)
    both = nn.ModuleList([dis_a, dis_b])
    assert n_params(both) == n_params(dis_a) + sum(n_params(x) for x in net_b[:2])
    dis_a.zero_grad()
    dis_b(torch.randn(2, 3, 32, 32))[0].mean().backward()  # a B loss alone trains the shared layers
    assert all(p.grad is not None for p in net_a[2:].parameters())
    assert all(p.grad is None for p in net_a[:2].parameters())


def test_blur_downsample_is_the_3x3_binomial_filter_then_every_second_pixel():
    x = torch.zeros(1, 2, 7, 9)
    x[0, 0, 2, 4] = 16.0  # an impulse on an even row and column survives the subsampling at (1, 2)
    y = blur_downsample(x)
    assert y.shape == (1, 2, 4, 5)  # ceil(7 / 2), ceil(9 / 2)
    expected = torch.zeros(4, 5)
    expected[1, 2] = 4.0  # centre weight 0.5 * 0.5; the 0.25 / 0.125 / 0.0625 taps land on odd pixels
    assert torch.equal(y[0, 0], expected) and torch.equal(y[0, 1], torch.zeros(4, 5))
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 1, 2] = 16.0  # an odd row: the taps above and below (0.25 * 0.5 * 16 = 2) are kept
    assert blur_downsample(x)[0, 0, :, 1].tolist() == [2.0, 2.0, 0.0]
    ramp = torch.arange(6.0).repeat(1, 1, 6, 1)  # replicated borders: a constant column stays constant
    assert torch.allclose(blur_downsample(torch.full((1, 3, 6, 6), 0.7)), torch.full((1, 3, 3, 3), 0.7))
    assert blur_downsample(ramp)[0, 0, 0].tolist() == [0.25, 2.0, 4.0]


def test_multi_scale_discriminator_uses_the_chosen_downsampling():
    m = tiny_model("unit_street")
    dis_a, _ = build_discriminators(m)
    x = torch.randn(1, 3, 32, 32)
    outs = dis_a(x)
    assert [tuple(o.shape[-2:]) for o in outs] == [(2, 2), (1, 1), (1, 1)]
    with torch.no_grad():
        assert torch.equal(outs[1], dis_a.scales[1](blur_downsample(x)))


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.res_dropout=1", "'model.res_dropout' must be in [0, 1)"),
        ("model.lrelu_slope=-0.1", "'model.lrelu_slope' must be in [0, 1)"),
        ("model.dis_n_shared=4", "'model.dis_n_shared' must be < model.dis_n_layers (4)"),
        ("model.dis_n_shared=-1", "'model.dis_n_shared' must be >= 0"),
        ("model.dis_first_kernel=-3", "'model.dis_first_kernel' must be >= 0"),
        ("model.dis_first_kernel=99", "'model.dis_first_kernel' must be <= 15"),
        ("model.res_norm=group", "'model.res_norm' must be one of same, instance"),
        ("model.first_activ=gelu", "'model.first_activ' must be one of same, lrelu"),
        ("model.dis_downsample=max", "'model.dis_downsample' must be one of avgpool, gaussian"),
        ("model.norm_bias=2", "'model.norm_bias' must be true or false"),
    ],
)
def test_new_model_keys_are_validated_in_one_line(override, fragment):
    with pytest.raises(UnitganError) as e:
        load_config("unit_street", ["data.root=x", override])
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_shared_discriminator_layers_are_refused_with_domain_adaptation():
    with pytest.raises(UnitganError, match="'model.dis_n_shared' must be 0 with da.enabled"):
        load_config("da_mnist2usps", ["model.dis_n_shared=1"])


def reduced_v02(preset: str, out_dir, steps: int, ckpt_every: int, log_every: int = 10):
    """The preset's networks and optimiser settings, shrunk (4 channels, 16x16 synthetic images, 2 residual
    blocks)."""
    return load_config(
        preset,
        [
            f"train.out_dir={out_dir}",
            f"train.steps={steps}",
            f"train.ckpt_every={ckpt_every}",
            f"train.log_every={log_every}",
            f"train.image_every={steps}",
            "train.image_rows=1",
            "train.threads=1",
            "model.ch=4",
            "model.dis_ch=4",
            "model.n_res=2",
            "model.input_nc_a=1",  # the synthetic domain A is grey
            "data.source=synthetic",
            "data.load_size=0",
            "data.crop_size=16",
            "data.num_workers=0",
            "data.synthetic_train=32",
            "data.synthetic_test=2",
        ],
    )


@pytest.mark.integration
@pytest.mark.parametrize("preset", V02_PRESETS)
def test_v02_preset_trains_50_steps_at_a_reduced_size(preset, tmp_path):
    """The reduced preset trains 50 steps to a checkpoint with finite losses."""
    cfg = reduced_v02(preset, tmp_path, 50, 50)
    torch.manual_seed(0)
    before_a, before_b = build_discriminators(cfg.model)
    result = train(cfg, progress=False)
    assert result.step == 50 and result.checkpoint is not None and result.checkpoint.is_file()
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [10, 20, 30, 40, 50]
    assert all(math.isfinite(v) for r in logged for v in r.values() if isinstance(v, float))
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=False)
    dis_a, dis_b = build_discriminators(cfg.model)
    dis_a.load_state_dict(state["dis_a"])
    dis_b.load_state_dict(state["dis_b"])
    for key, value in state["dis_b"].items():  # trained, and the shared layers hold one set of weights
        assert torch.isfinite(value).all()
        assert not torch.equal(value, before_b.state_dict()[key])
        if int(key.split(".")[3]) >= dis_b.scales[0].n_private:  # scales.S.net.I...: layer I of dis_a's
            assert torch.equal(value, state["dis_a"][key])


def test_v02_presets_take_the_kl_on_the_noisy_latent():
    for preset in V02_PRESETS:
        assert load_config(preset, ["data.root=x"]).loss.kl_on == "z", preset
    for preset in ("unit_paper", "unit_master", "small", "demo"):
        assert load_config(preset, ["data.root=x"]).loss.kl_on == "mu", preset


def test_kl_on_z_is_the_formula_on_the_decoded_noisy_latent():
    from unitgan.losses import unit_gen_loss
    from unitgan.train.trainer import gen_forward

    cfg = load_config("unit_street", ["data.root=x", "model.ch=4", "model.dis_ch=4", "model.n_res=2"])
    gen = build_generator(cfg.model).eval()  # eval: no dropout, so decoding z again gives the same images
    dis_a, dis_b = build_discriminators(cfg.model)
    x_a, x_b = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    torch.manual_seed(3)
    out = gen_forward(gen, x_a, x_b)
    with torch.no_grad():  # z_* are the latents the generators decoded ...
        assert torch.allclose(gen.decode(out.z_a, "a"), out.x_aa, atol=1e-6)
        assert torch.allclose(gen.decode(out.z_b, "a"), out.x_ba, atol=1e-6)
        assert torch.allclose(gen.decode(out.z_ab, "a"), out.x_aba, atol=1e-6)
        assert torch.allclose(gen.decode(out.z_ba, "b"), out.x_bab, atol=1e-6)
    assert 0.8 < (out.z_a - out.mu_a).std().item() < 1.2  # ... mu + N(0, I)
    d_ab, d_ba = dis_b(out.x_ab), dis_a(out.x_ba)
    _, on_z = unit_gen_loss(out, d_ab, d_ba, cfg.loss, cfg.model.gan_type)
    assert cfg.loss.kl_on == "z"
    for name, lat in (("kl_a", out.z_a), ("kl_b", out.z_b), ("cyc_kl_a", out.z_ba), ("cyc_kl_b", out.z_ab)):
        assert torch.allclose(on_z[name], lat.detach().pow(2).mean()), name
    cfg.loss.kl_on = "mu"
    _, on_mu = unit_gen_loss(out, d_ab, d_ba, cfg.loss, cfg.model.gan_type)
    for name, lat in (("kl_a", out.mu_a), ("kl_b", out.mu_b), ("cyc_kl_a", out.mu_ba), ("cyc_kl_b", out.mu_ab)):
        assert torch.allclose(on_mu[name], lat.detach().pow(2).mean()), name
        assert on_z[name].item() > on_mu[name].item() + 0.5, name  # E[z^2] = mu^2 + 1
    for name in ("gan_a", "recon_a", "cyc_recon_b"):  # the rest of the objective is the same
        assert torch.equal(on_z[name], on_mu[name])
    torch.manual_seed(3)  # and the choice draws no random numbers of its own: same noise, same images
    again = gen_forward(gen, x_a, x_b)
    assert torch.equal(again.z_ab, out.z_ab) and torch.equal(again.x_bab, out.x_bab)


def test_kl_on_z_resumes_exactly(tmp_path):
    full = train(reduced_v02("unit_street", tmp_path / "full", 4, 4, 1), progress=False)
    train(reduced_v02("unit_street", tmp_path / "part", 2, 2, 1), progress=False)
    resumed = train(reduced_v02("unit_street", tmp_path / "part", 4, 2, 1), progress=False)
    a, b = (torch.load(r.checkpoint, map_location="cpu", weights_only=False) for r in (full, resumed))
    assert a["config"]["loss"]["kl_on"] == "z"
    for section in ("gen", "dis_a", "dis_b"):
        for k in a[section]:
            assert torch.equal(a[section][k], b[section][k]), (section, k)
