import pytest
import torch
from torch import nn

from unitgan.config import ModelConfig, load_config
from unitgan.models import MultiScaleDiscriminator, UNITGenerator
from unitgan.models.layers import Dropout, NearestUpConv
from unitgan.train.registry import trainer_class


def small(**kw) -> ModelConfig:
    base = dict(ch=4, n_down=2, n_res=3, n_shared=1, dis_ch=4, dis_n_layers=2)
    return ModelConfig(**{**base, **kw})


def test_shared_blocks_are_one_module_used_by_both_domains():
    gen = UNITGenerator(small(n_shared=2))
    shared = list(gen.enc_shared.parameters()) + list(gen.dec_shared.parameters())
    assert len(gen.enc_shared) == 2 and len(gen.dec_shared) == 2
    # every parameter exists once in the model: the shared blocks are not copies inside enc_a / enc_b
    ids = [id(p) for p in gen.parameters()]
    assert len(ids) == len(set(ids))
    private = {id(p) for m in (gen.enc_a, gen.enc_b, gen.dec_a, gen.dec_b) for p in m.parameters()}
    assert not private & {id(p) for p in shared}

    x_a, x_b = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    for domain, x in (("a", x_a), ("b", x_b)):
        gen.zero_grad()
        gen.decode(gen.encode(x, domain), domain).square().mean().backward()
        for p in shared:  # gradients reach the shared blocks from either domain alone
            assert p.grad is not None and p.grad.abs().sum() > 0
        other = gen.enc_b if domain == "a" else gen.enc_a
        assert all(p.grad is None for p in other.parameters())


def test_no_sharing_variant():
    gen = UNITGenerator(small(n_shared=0))
    assert len(list(gen.enc_shared.parameters())) == 0 and len(list(gen.dec_shared.parameters())) == 0
    assert len(gen.enc_a.net) == 1 + 2 + 3  # stem, two downsamplings, three private residual blocks


@pytest.mark.parametrize("nc_a, nc_b", [(1, 3), (3, 1), (3, 3)])
def test_translation_shapes_grey_and_colour(nc_a, nc_b):
    gen = UNITGenerator(small(input_nc_a=nc_a, input_nc_b=nc_b))
    x_a, x_b = torch.randn(2, nc_a, 16, 24), torch.randn(3, nc_b, 16, 24)
    mu_a = gen.encode(x_a, "a")
    assert mu_a.shape == (2, 16, 4, 6)  # ch * 2^n_down channels, size / 2^n_down
    assert gen.translate(x_a, "a2b").shape == (2, nc_b, 16, 24)
    y = gen.translate(x_b, "b2a")
    assert y.shape == (3, nc_a, 16, 24) and y.abs().max() <= 1


@pytest.mark.parametrize(
    "opts",
    [
        dict(norm="batch", up_norm="batch"),
        dict(norm="layer", up_norm="layer", pad_type="reflect"),
        dict(norm="none", up_norm="none", activ="relu"),
        dict(upsample="nearest", out_kernel=7, init="kaiming"),
        dict(n_down=3, init="xavier"),
    ],
)
def test_architecture_options(opts):
    gen = UNITGenerator(small(**opts))
    x = torch.randn(2, 3, 32, 32)
    assert gen.translate(x, "a2b").shape == (2, 3, 32, 32)


def test_latent_sampling_adds_unit_gaussian_noise():
    mu = torch.zeros(20000)
    z = UNITGenerator.sample(mu)
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05


@pytest.mark.parametrize("scales, kernel", [(1, 3), (3, 4)])
def test_multiscale_discriminator(scales, kernel):
    dis = MultiScaleDiscriminator(small(dis_n_scales=scales, dis_kernel=kernel, dis_n_layers=3), 3)
    outs = dis(torch.randn(2, 3, 64, 64))
    assert [o.shape for o in outs] == [(2, 1, 64 // 8 // 2**i, 64 // 8 // 2**i) for i in range(scales)]


def test_paper_parameter_count_order():
    """The version_02 street config (ch=64, 3+1 residual blocks) has about 18M generator parameters and
    2.36M shared ones (PAPER.md); our build of the same layers must agree to within a few percent."""
    gen = UNITGenerator(ModelConfig(ch=64, n_res=4, n_shared=1))
    total = sum(p.numel() for p in gen.parameters())
    shared = sum(p.numel() for p in [*gen.enc_shared.parameters(), *gen.dec_shared.parameters()])
    assert abs(shared - 2.36e6) / 2.36e6 < 0.02
    assert abs(total - 18.0e6) / 18.0e6 < 0.1


@pytest.mark.parametrize("pad_type", ["reflect", "zero"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 2, 2), (3, 2, 6, 4)])
def test_nearest_upconv_subpixel_computes_what_upsample_pad_conv_computes(pad_type, shape):
    """The subpixel route (four 3x3 phase convolutions + the reflected border lines) equals nn.Upsample ->
    pad -> Conv2d 5x5, in the output and in every gradient, on odd, even, non-square and 2-pixel maps."""
    torch.manual_seed(0)
    n, c, h, w = shape
    up = NearestUpConv(c, 5, pad_type, bias=True).double()
    reference = nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.ReflectionPad2d(2) if pad_type == "reflect" else nn.ZeroPad2d(2),
        nn.Conv2d(c, 5, 5),
    ).double()
    reference[2].load_state_dict(up.state_dict())
    x = torch.randn(n, c, h, w, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(n, 5, 2 * h, 2 * w, dtype=torch.float64)
    results = []
    for impl in ("subpixel", "direct"):
        up.impl = impl
        y = up(x)
        results.append((y, *torch.autograd.grad(y, (x, up.weight, up.bias), grad_out)))
    y_ref = reference(x)
    expected = (y_ref, *torch.autograd.grad(y_ref, (x, reference[2].weight, reference[2].bias), grad_out))
    for got in results:
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_nearest_upconv_auto_picks_subpixel_from_64x64_outputs_and_the_trainer_sets_the_route(monkeypatch):
    calls = []
    up = NearestUpConv(2, 2, "reflect", bias=True)
    monkeypatch.setattr(up, "subpixel", lambda x: calls.append(tuple(x.shape[-2:])) or up.direct(x))
    up(torch.randn(1, 2, 31, 32))  # 62x64 output pixels: direct
    up(torch.randn(1, 2, 32, 32))  # 64x64: subpixel
    assert calls == [(32, 32)]
    cfg = load_config("munit_demo", ["train.device=cpu", "train.upsample_impl=subpixel"])
    gen = trainer_class(cfg)(cfg, torch.device("cpu")).gen
    impls = {m.impl for m in gen.modules() if isinstance(m, NearestUpConv)}
    assert impls == {"subpixel"}


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_dropout_draws_nn_dropouts_masks_in_any_layout(p):
    """CoDis32x32's dropout: on NCHW inputs the numbers (and gradients) of nn.Dropout from the same seed, so the
    DA32 runs made before it are reproduced bit for bit; on channels_last inputs the same masks."""
    x = torch.randn(4, 6, 8, 8)
    outs, grads = [], []
    for module, layout in ((nn.Dropout(p), torch.contiguous_format), (Dropout(p), torch.contiguous_format),
                           (Dropout(p), torch.channels_last)):  # fmt: skip
        xi = x.clone(memory_format=layout).requires_grad_()
        torch.manual_seed(3)
        out = module(xi)
        out.backward(torch.arange(out.numel(), dtype=out.dtype).view_as(out))
        outs.append(out)
        grads.append(xi.grad)
    assert all(torch.equal(outs[0], o) for o in outs[1:]) and all(torch.equal(grads[0], g) for g in grads[1:])
    assert torch.equal(Dropout(p).eval()(x), x)


@pytest.mark.parametrize("arch", ["unit", "munit", "covae32"])
def test_every_generator_family_answers_the_generator_interface(arch):
    """Translators and exports read these of any family instead of asking which class they hold."""
    from unitgan.models import build_generator

    gen = build_generator(small(arch=arch, style_dim=3, mlp_dim=8))
    assert gen.style_dim == (3 if arch == "munit" else 0)
    assert gen.fixed_size == (32 if arch == "covae32" else 0)
    assert gen.size_multiple >= 1 and gen.bank_problem() is None and gen.style_banks() == {}


def test_weight_prefixes_name_the_parts_a_direction_uses():
    from unitgan.models import MUNITGenerator

    unit, munit = UNITGenerator(small()), MUNITGenerator(small(style_dim=3, mlp_dim=8))
    assert unit.weight_prefixes(("a2b",)) == ("dec_b.", "dec_shared.", "enc_a.", "enc_shared.")
    assert unit.weight_prefixes(("a2b", "b2a")) == tuple(sorted(f"{p}." for p in dict(unit.named_children())))
    assert munit.weight_prefixes(("b2a",)) == ("dec_a.", "enc_c_b.", "enc_c_shared.", "enc_s_a.")
    assert munit.weight_prefixes(("a2b", "b2a")) == tuple(sorted(f"{p}." for p in dict(munit.named_children())))


def test_tied_init_starts_b_as_a_copy_of_a_that_then_learns_apart():
    """model.tied_init: enc_b / dec_b start with enc_a / dec_a's values (so x_ab = x_aa at the start), held in
    their own parameters, which a B-only gradient moves without touching A's."""
    torch.manual_seed(0)
    gen = UNITGenerator(small(tied_init=True))
    for a, b in ((gen.enc_a, gen.enc_b), (gen.dec_a, gen.dec_b)):
        for (name, p_a), p_b in zip(a.named_parameters(), b.parameters(), strict=True):
            assert torch.equal(p_a, p_b) and p_a is not p_b, name
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(gen.translate(x, "a2b"), gen.decode(gen.encode(x, "a"), "a"))
    assert torch.equal(gen.translate(x, "b2a"), gen.decode(gen.encode(x, "b"), "b"))

    opt = torch.optim.SGD(gen.parameters(), lr=0.1)
    before_a = [p.detach().clone() for p in gen.enc_a.parameters()]
    gen.decode(gen.encode(x, "b"), "b").square().mean().backward()
    opt.step()
    assert all(torch.equal(p, q) for p, q in zip(gen.enc_a.parameters(), before_a, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(gen.enc_b.parameters(), before_a, strict=True))

    torch.manual_seed(0)
    untied = UNITGenerator(small())  # the option draws no random numbers: A's side is the same either way
    assert all(torch.equal(p, q) for p, q in zip(untied.enc_a.parameters(), gen.enc_a.parameters(), strict=True))
    assert not torch.equal(untied.translate(x, "a2b"), untied.decode(untied.encode(x, "a"), "a"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.tied_init=true", "model.input_nc_a=3", "model.input_nc_b=1"],
            "same channels in both domains, got 3 .A. and 1 .B.",
        ),
        (["model.tied_init=true", "model.arch=munit"], "is for model.arch=unit, got munit"),
    ],
)
def test_tied_init_is_refused_where_a_copy_cannot_be(overrides, message):
    from unitgan.errors import UnitganError

    with pytest.raises(UnitganError, match=f"model.tied_init.*{message}"):
        load_config("demo", overrides)


def test_dis_spectral_norm_divides_every_discriminator_conv_by_its_top_singular_value():
    """model.dis_spectral_norm: each conv of both discriminators (shared tail included, normalised once by its
    owner) uses weight / sigma_max, so after a few power iterations every conv's operator norm is about 1."""
    torch.manual_seed(0)
    cfg = small(dis_spectral_norm=True, dis_n_layers=3, dis_n_shared=1, dis_n_scales=2)
    dis_a = MultiScaleDiscriminator(cfg, 3)
    dis_b = MultiScaleDiscriminator(cfg, 3, shared_with=dis_a)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(30):  # training-mode forwards run the power iteration
        dis_a(x), dis_b(x)
    convs = [m for d in (dis_a, dis_b) for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len({id(m) for m in convs}) == len(convs) - 2 * 2  # per scale, one shared conv + the shared head
    for m in {id(m): m for m in convs}.values():
        assert nn.utils.parametrize.is_parametrized(m, "weight")
        assert len(m.parametrizations.weight) == 1  # one normalisation, even for the layers both hold
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.02)  # unnormalised N(0, 0.02) convs: about 0.1
    plain = MultiScaleDiscriminator(small(dis_n_layers=3), 3)
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in plain.modules())


@pytest.mark.parametrize("overrides", [["model.arch=covae32"], ["da.enabled=true"]])
def test_dis_spectral_norm_is_refused_where_the_da_discriminators_would_ignore_it(overrides):
    from unitgan.errors import UnitganError

    with pytest.raises(UnitganError, match="model.dis_spectral_norm.*DA discriminators do not read it"):
        load_config("demo", ["model.dis_spectral_norm=true", *overrides])
