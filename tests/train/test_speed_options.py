"""Speed options: every precision/layout/compile setting trains; no work is done twice; no host syncs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from torch.utils._python_dispatch import TorchDispatchMode

from unitgan.data import build_domain
from unitgan.inference import Translator
from unitgan.models.layers import ConvBlock, LayerNorm2d, set_layer_norm
from unitgan.train.trainer import UNITTrainer


def _batch(cfg, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    ds_a, ds_b = build_domain(cfg, "a"), build_domain(cfg, "b")
    return torch.stack([ds_a[i] for i in range(n)]), torch.stack([ds_b[i] for i in range(n)])


def _step_is_finite(cfg) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    trainer = UNITTrainer(cfg, torch.device("cpu"))
    x_a, x_b = _batch(cfg)
    before = [p.detach().clone() for p in trainer.parameters()]
    # fp16: the grad scaler starts at 2**16 and skips the steps whose gradients overflow until it has
    # come down to a usable scale, so allow a few steps before every parameter has moved
    for _ in range(24 if cfg.train.precision == "fp16" else 2):
        stats = trainer.train_step(x_a, x_b)
        for name, value in stats.items():
            assert value.dtype == torch.float32 and torch.isfinite(value).all(), name
        changed = [not torch.equal(p, q) for p, q in zip(before, trainer.parameters(), strict=True)]
        if all(changed):
            break
    assert all(changed), "every parameter should move"
    return stats


@pytest.mark.parametrize(
    "options",
    [
        {"train.precision": "bf16"},
        {"train.precision": "fp16"},
        {"train.channels_last": "true"},
        {"train.precision": "bf16", "train.channels_last": "true"},
        {"optim.fused": "true"},
    ],
    ids=["bf16", "fp16", "channels_last", "bf16+channels_last", "fused_adam"],
)
def test_speed_option_trains_with_finite_losses(tmp_path, options):
    _step_is_finite(tiny_config(tmp_path, **options))


def test_fp16_uses_a_grad_scaler_and_bf16_does_not(tmp_path):
    fp16 = UNITTrainer(tiny_config(tmp_path, **{"train.precision": "fp16"}), torch.device("cpu"))
    bf16 = UNITTrainer(tiny_config(tmp_path, **{"train.precision": "bf16"}), torch.device("cpu"))
    assert fp16.scaler.is_enabled() and not bf16.scaler.is_enabled()


def test_channels_last_matches_the_default_layout(tmp_path):
    x_a, x_b = _batch(tiny_config(tmp_path))
    losses = []
    for cl in ("false", "true"):
        torch.manual_seed(0)
        trainer = UNITTrainer(tiny_config(tmp_path, **{"train.channels_last": cl}), torch.device("cpu"))
        losses.append(trainer.train_step(x_a, x_b))
    for k in losses[0]:
        torch.testing.assert_close(losses[0][k], losses[1][k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow
def test_compiled_training_step_and_translation(tmp_path):
    cfg = tiny_config(tmp_path, **{"train.compile": "true"})
    stats = _step_is_finite(cfg)
    assert set(stats) >= {"loss_g", "loss_d"}
    # state-dict keys are those of the plain modules (checkpoints load into uncompiled networks)
    plain = UNITTrainer(tiny_config(tmp_path), torch.device("cpu"))
    compiled = UNITTrainer(cfg, torch.device("cpu"))
    assert compiled.gen.state_dict().keys() == plain.gen.state_dict().keys()
    # and the compiled generator translates as the plain one does with the same weights
    plain.gen.load_state_dict(compiled.gen.state_dict())
    x_a = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1  # demo: domain A is grey
    with torch.no_grad():
        y_compiled, y_plain = compiled.gen.translate(x_a, "a2b"), plain.gen.translate(x_a, "a2b")
    assert y_compiled.shape == (2, 3, 16, 16) and y_plain.abs().max() > 0
    torch.testing.assert_close(y_compiled, y_plain, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("scope", ["modules", "phases"])
def test_compile_scope_picks_what_is_compiled(tmp_path, scope):
    """train.compile_scope: each network part, or each training phase as one graph (nothing is compiled until
    the first step, so this is cheap); never both, and state-dict keys stay those of the plain modules."""
    cfg = tiny_config(tmp_path, **{"train.compile": "true", "train.compile_scope": scope})
    trainer = UNITTrainer(cfg, torch.device("cpu"))
    parts = [*trainer.gen.children(), trainer.dis_a, trainer.dis_b]
    phases = [trainer.gen_phase, trainer.dis_phase]
    compiled = [m._compiled_call_impl is not None for m in (*parts, *phases)]
    assert compiled == [scope == "modules"] * len(parts) + [scope == "phases"] * len(phases)
    assert (
        trainer.gen.state_dict().keys()
        == UNITTrainer(tiny_config(tmp_path), torch.device("cpu")).gen.state_dict().keys()
    )


@pytest.mark.slow
def test_compiled_phases_compute_what_eager_computes(tmp_path):
    """train.compile_scope=phases: the E/G and D phases each compile to one graph; two steps give the eager
    run's losses and weights within float tolerance (the latent noise is the same draw)."""
    x_a, x_b = _batch(tiny_config(tmp_path))
    runs = []
    for options in ({}, {"train.compile": "true", "train.compile_scope": "phases"}):
        torch.manual_seed(0)
        trainer = UNITTrainer(tiny_config(tmp_path, **options), torch.device("cpu"))
        stats = [trainer.train_step(x_a, x_b) for _ in range(2)]
        runs.append((stats, trainer.gen.state_dict(), trainer))
    (eager_stats, eager_w, _), (comp_stats, comp_w, comp) = runs
    assert hasattr(comp.gen_phase, "_compiled_call_impl") and comp.gen_phase._compiled_call_impl is not None
    for step in range(2):
        for k in eager_stats[step]:
            torch.testing.assert_close(comp_stats[step][k], eager_stats[step][k], rtol=1e-4, atol=1e-5, msg=k)
    assert comp_w.keys() == eager_w.keys()  # checkpoints load into uncompiled networks
    for k in eager_w:
        torch.testing.assert_close(comp_w[k], eager_w[k], rtol=1e-3, atol=1e-4, msg=k)


def test_generators_run_once_per_step(tmp_path):
    """Each encoder/decoder runs the minimum number of times: x_a, x_b, x_ab, x_ba encoded once each;
    the shared generator block runs once on [z_a, z_b] for both decoders; the D step runs no generator."""
    cfg = tiny_config(tmp_path)
    trainer = UNITTrainer(cfg, torch.device("cpu"))
    g = trainer.gen
    calls: dict[str, int] = {}
    for name in ("enc_a", "enc_b", "enc_shared", "dec_shared", "dec_a", "dec_b"):
        getattr(g, name).register_forward_hook(
            lambda m, i, o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)
        )
    dis_calls = []
    trainer.dis_a.register_forward_hook(lambda m, i, o: dis_calls.append(("a", i[0].shape[0])))
    trainer.dis_b.register_forward_hook(lambda m, i, o: dis_calls.append(("b", i[0].shape[0])))
    x_a, x_b = _batch(cfg)
    trainer.train_step(x_a, x_b)
    # enc_a: x_a and x_ba; enc_b: x_b and x_ab; dec_a: [z_a, z_b] and the cycle; dec_b likewise
    assert calls == {"enc_a": 2, "enc_b": 2, "enc_shared": 4, "dec_shared": 3, "dec_a": 2, "dec_b": 2}
    # G step: each discriminator judges one translation batch; D step: real and fake in one pass
    n = x_a.shape[0]
    assert sorted(dis_calls) == sorted([("b", n), ("a", n), ("a", 2 * n), ("b", 2 * n)])


class _ScalarReads(TorchDispatchMode):
    """Records every read of a tensor value by the host (``.item()``, ``float(t)``, ``bool(t)``, ``if t``)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[torch.Tensor] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads.append(args[0])
        return func(*args, **(kwargs or {}))


def test_train_step_reads_no_tensor_value_on_the_host(tmp_path):
    """On a GPU a host read is a device sync. The only reads allowed are Adam's step counters, which
    PyTorch keeps on the host (not on the device) precisely so that reading them costs no sync."""
    cfg = tiny_config(tmp_path)
    trainer = UNITTrainer(cfg, torch.device("cpu"))
    x_a, x_b = _batch(cfg)
    trainer.train_step(x_a, x_b)  # creates the optimiser state
    step_counters = {
        id(s["step"]) for opt in (trainer.opt_gen, trainer.opt_dis) for s in opt.state.values() if "step" in s
    }
    with _ScalarReads() as mode:
        stats = trainer.train_step(x_a, x_b)
    assert len(mode.reads) >= len(step_counters)  # the probe sees reads (here: Adam's own counters)
    others = [t for t in mode.reads if id(t) not in step_counters]
    assert not others, f"{len(others)} host reads of tensor values in train_step"
    assert all(isinstance(v, torch.Tensor) for v in stats.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="device syncs only exist with a GPU")
def test_train_step_does_not_sync_the_gpu(tmp_path):
    cfg = tiny_config(tmp_path, **{"train.device": "cuda"})
    device = torch.device("cuda")
    trainer = UNITTrainer(cfg, device)
    x_a, x_b = (x.to(device) for x in _batch(cfg))
    trainer.train_step(x_a, x_b)
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer.train_step(x_a, x_b)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_translation_is_batched_and_precise(tmp_path, precision):
    cfg = tiny_config(tmp_path)
    torch.manual_seed(0)
    trainer = UNITTrainer(cfg, torch.device("cpu"))
    translator = Translator(trainer.gen, cfg, torch.device("cpu"), precision)
    x_a, _ = _batch(cfg, 4)
    y = translator.translate(x_a, "a2b")
    assert y.dtype == torch.float32 and y.shape == (4, cfg.model.input_nc_b, *x_a.shape[-2:])
    one = translator.translate(x_a[1:2], "a2b")
    tol = 1e-5 if precision == "fp32" else 2e-2
    torch.testing.assert_close(y[1:2], one, rtol=tol, atol=tol)


def test_fused_adam_matches_the_plain_one(tmp_path):
    x_a, x_b = _batch(tiny_config(tmp_path))
    params = []
    for fused in ("false", "true"):
        torch.manual_seed(0)
        trainer = UNITTrainer(tiny_config(tmp_path, **{"optim.fused": fused}), torch.device("cpu"))
        assert trainer.opt_gen.defaults.get("fused") == (fused == "true" or None)
        for _ in range(3):
            trainer.train_step(x_a, x_b)
        params.append([p.detach() for p in trainer.parameters()])
    for p, q in zip(*params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_layer_norm_is_the_per_sample_formula():
    torch.manual_seed(0)
    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, 6, 5, 4) * 3 + 1
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    var = x.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
    expected = (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,stride", [(3, 1), (7, 1), (4, 2)])
def test_zero_padding_inside_the_conv_equals_an_explicit_pad(kernel, stride):
    torch.manual_seed(0)
    block = ConvBlock(3, 5, kernel, stride, "none", "lrelu", "zero")
    assert set(block.state_dict()) == {"1.weight", "1.bias"}  # the keys of the reflect-padded block
    conv = block[1]
    x = torch.randn(2, 3, 12, 12)
    pad = (kernel - 1) // 2
    expected = F.leaky_relu(F.conv2d(F.pad(x, (pad,) * 4), conv.weight, conv.bias, stride), 0.2)
    torch.testing.assert_close(block(x), expected)


def test_nvlabs_layer_norm_divides_by_the_unbiased_std_plus_eps():
    """``model.layer_norm=nvlabs``: NVlabs' LayerNorm, (x - mean) / (torch.std(x) + eps) per sample, times gamma
    plus beta; gamma redrawn from U(0, 1) by ``set_layer_norm`` (the same network's ``group`` form differs)."""
    torch.manual_seed(0)
    norm = LayerNorm2d(6, eps=1e-2)  # a large eps, so that eps inside or outside the root tells apart
    set_layer_norm(norm, "nvlabs")
    assert norm.weight.min() >= 0 and norm.weight.max() < 1 and not torch.equal(norm.weight, torch.ones(6))
    x = torch.randn(3, 6, 5, 4) * 0.2 + 1
    flat = x.view(3, -1)
    mean, std = flat.mean(1).view(-1, 1, 1, 1), flat.std(1).view(-1, 1, 1, 1)  # torch.std: unbiased
    expected = (x - mean) / (std + norm.eps) * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-6)
    norm.kind = "group"
    assert not torch.allclose(norm(x), expected, rtol=1e-3, atol=1e-3)
