"""The authors' digit-adaptation networks (CoVAE32x32, CoDis32x32), their losses and the digit data options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unitgan.config import load_config
from unitgan.data import build_domain
from unitgan.data.datasets import ArrayDomain, pad_to_box
from unitgan.errors import UnitganError
from unitgan.losses import (
    DA_CLS_W,
    da32_dis_loss,
    da32_gen_loss,
    learned_sd_kl_loss,
    sum_squares_loss,
)
from unitgan.models import build_generator
from unitgan.models.da.authors import CoDis32x32, CoVAE32x32, coordinate_channels


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1  # [n, 1, 32, 32]


def test_generator_shapes_and_build():
    cfg = load_config(
        "demo", ["model.arch=covae32", "model.ch=4", "data.crop_size=32", "model.input_nc_a=1", "model.input_nc_b=1"]
    )
    gen = build_generator(cfg.model)
    assert isinstance(gen, CoVAE32x32)
    c = cfg.model.ch
    out = gen.forward_pair(_images(3), _images(3, 1))
    for x in (out.x_aa, out.x_ba, out.x_ab, out.x_bb):
        assert x.shape == (3, 1, 32, 32) and x.abs().max() <= 1
    assert out.mu.shape == out.sd.shape == (6, 8 * c, 1, 1) and (out.sd > 0).all()
    gen.eval()
    assert gen.encode(_images(2), "b").shape == (2, 8 * c, 1, 1)
    assert gen.translate(_images(2), "a2b").shape == gen.translate(_images(2), "b2a").shape == (2, 1, 32, 32)
    assert gen.size_multiple == 32
    with pytest.raises(ValueError, match="32x32"):
        gen.encode(torch.zeros(1, 1, 64, 64), "a")


def test_covae32_needs_crop_32():
    with pytest.raises(UnitganError, match="data.crop_size"):
        load_config("demo", ["model.arch=covae32", "data.crop_size=64"])


def test_shared_parameters_are_exactly_the_papers():
    gen = CoVAE32x32(4, 3, 1)
    private = {"enc_a", "enc_b", "dec_a", "dec_b"}
    # everything but conv0 of each encoder and deconv3 + 1x1 conv of each decoder serves both domains
    for name, _ in gen.named_parameters():
        assert name.split(".")[0] in private | {"enc_shared", "mu_head", "sd_head", "dec_shared"}
    assert len(gen.enc_shared) == 3 and len(gen.dec_shared) == 3  # conv1..3, deconv0..2
    assert gen.enc_a[0].in_channels == 5 and gen.enc_b[0].in_channels == 3  # image + 2 coordinates
    ids_a = {id(p) for m in (gen.enc_a, gen.dec_a) for p in m.parameters()}
    ids_b = {id(p) for m in (gen.enc_b, gen.dec_b) for p in m.parameters()}
    assert not ids_a & ids_b
    # both domains' passes reach the same shared Parameter objects
    x_a, x_b = torch.rand(2, 3, 32, 32), _images(2)
    for domain, x in (("a", x_a), ("b", x_b)):
        gen.zero_grad()
        gen.decode(gen.encode(x, domain), domain).sum().backward()
        assert all(p.grad is not None for p in gen.enc_shared.parameters())
        assert all(p.grad is not None for p in gen.dec_shared.parameters())
        other = gen.enc_b if domain == "a" else gen.enc_a
        assert all(p.grad is None or not p.grad.any() for p in other.parameters())

    dis = CoDis32x32(4, 3, 1)
    assert {n.split(".")[0] for n, _ in dis.named_parameters()} == {"dis_a", "dis_b", "shared", "gan_head", "cls_head"}
    assert dis.trunk(x_a, "a", False).shape == dis.trunk(x_b, "b", False).shape == (2, 32, 2, 2)
    dis.zero_grad()
    dis.classify(x_b, "b").sum().backward()
    assert all(p.grad is not None for p in dis.shared.parameters())
    assert all(p.grad is None for p in dis.dis_a.parameters())


def test_vae_head_init_is_the_authors_order_weights_0_02_biases_0_002():
    torch.manual_seed(0)
    gen = CoVAE32x32(ch=32, input_nc_a=3, input_nc_b=1)
    for head in (gen.mu_head, gen.sd_head):  # 256 x 256 weights, 256 biases
        assert abs(head.weight.std().item() - 0.02) < 0.0005 and abs(head.weight.mean().item()) < 0.0005
        assert abs(head.bias.std().item() - 0.002) < 0.0003 and head.bias.abs().max().item() < 0.002 * 5
    for m in gen.modules():  # every other conv weight N(0, 0.02) too
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and m.weight.numel() > 1000:
            assert abs(m.weight.std().item() - 0.02) < 0.002


def test_vae_head_std_option_sets_the_head_weights_and_is_checked():
    cfg = load_config("da_mnist2usps", ["model.ch=32", "model.vae_head_std=0.002"])
    gen = build_generator(cfg.model)
    for head in (gen.mu_head, gen.sd_head):
        assert abs(head.weight.std().item() - 0.002) < 0.00005 and abs(head.bias.std().item() - 0.002) < 0.0003
    assert abs(gen.dec_shared[0][0].weight.std().item() - 0.02) < 0.001  # the other convs keep N(0, 0.02)
    with pytest.raises(UnitganError, match="model.vae_head_std"):
        load_config("da_mnist2usps", ["model.vae_head_std=0"])


def test_coordinate_channels_reach_the_private_conv():
    xy = coordinate_channels(2, 32, torch.zeros(1))
    assert xy.shape == (2, 2, 32, 32)
    assert xy[0, 0, :, 0].tolist() == [(i - 16) / 16 for i in range(32)]  # rows vary along H
    assert torch.equal(xy[0, 1], xy[0, 0].T)  # columns along W
    gen = CoVAE32x32(4)
    seen = []
    gen.enc_a[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    x = _images(2)
    gen.eval()
    gen.encode(x, "a")
    assert seen[0].shape == (2, 3, 32, 32)
    assert torch.equal(seen[0][:, :1], x) and torch.equal(seen[0][:, 1:], xy)


def test_learned_sd_kl_matches_hand_computation():
    mu = torch.tensor([[0.5, -1.0], [0.0, 2.0]]).view(2, 2, 1, 1)
    sd = torch.tensor([[1.0, 0.5], [2.0, 1.0]]).view(2, 2, 1, 1)
    # sample 0: (0.25 + 1 - 0) + (1 + 0.25 - log 0.25); sample 1: (0 + 4 - log 4) + (4 + 1 - 0)
    s0 = 0.25 + 1 + 1 + 0.25 - np.log(0.25)
    s1 = 4 - np.log(4) + 5
    assert learned_sd_kl_loss(mu, sd).item() == pytest.approx((s0 + s1) / 2, rel=1e-6)
    x, t = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    x[1] = 3
    assert sum_squares_loss(x, t).item() == pytest.approx((4 * 1 + 4 * 9) / 2)


def test_gen_loss_weights_and_kl_counted_twice():
    n = 2
    logits = torch.zeros(2 * n, 2)
    mu, sd = torch.zeros(2 * n, 3, 1, 1), torch.full((2 * n, 3, 1, 1), 2.0)
    x = torch.zeros(n, 1, 4, 4)
    x_rec = torch.ones(n, 1, 4, 4)
    total, terms = da32_gen_loss(logits, logits, mu, sd, x, x_rec, x, x)
    kl = 3 * (4 - np.log(4))
    assert terms["gen_kl"].item() == pytest.approx(2 * kl, rel=1e-6)
    assert terms["gen_recon_a"].item() == pytest.approx(16) and terms["gen_recon_b"].item() == 0
    expected = 2 * np.log(2) + 1e-4 * 2 * kl + 1e-3 * 16
    assert total.item() == pytest.approx(expected, rel=1e-6)


def test_batch_norm_pools_a_and_b_in_the_shared_layers():
    gen = CoVAE32x32(4)
    x_a, x_b = _images(3), _images(3, 1) * 0.2 + 0.5  # different statistics per domain
    torch.manual_seed(0)
    joint = gen.forward_pair(x_a, x_b, sample=False)
    # the same A batch with another B batch changes A's latent: the shared BN saw both domains together
    other = gen.forward_pair(x_a, _images(3, 2), sample=False)
    assert not torch.allclose(joint.mu[:3], other.mu[:3])
    # encoding A alone normalises over A only, which differs from the joint pass
    assert not torch.allclose(gen.encode_dist(x_a, "a")[0], joint.mu[:3])
    # and the joint pass equals pooling the private outputs by hand
    bn = gen.enc_shared[0][1].norm
    seen = []
    bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    gen.forward_pair(x_a, x_b, sample=False)
    h = seen[0]  # [6, 8, 8, 8]
    expected = (h - h.mean((0, 2, 3), keepdim=True)) / (h.var((0, 2, 3), unbiased=False, keepdim=True) + bn.eps).sqrt()
    assert torch.allclose(bn(h), expected, atol=1e-5)


def test_class_head_learns_from_source_labels_only():
    torch.manual_seed(0)
    gen, dis = CoVAE32x32(4), CoDis32x32(4)
    x_a, y_a = _images(4), torch.tensor([0, 1, 2, 3])

    def cls_grads(x_b: torch.Tensor) -> list[torch.Tensor]:
        dis.eval()  # no dropout: the two calls must differ only by x_b
        dis.zero_grad()
        with torch.no_grad():
            o = gen.forward_pair(x_a, x_b)
        real, _, _ = dis(x_a, x_b)
        recon, f_aa, f_bb = dis(o.x_aa, o.x_bb)
        trans, f_ba, f_ab = dis(o.x_ba, o.x_ab)
        total, terms = da32_dis_loss(real, recon, trans, f_aa, f_ab, f_bb, f_ba, dis.classify(x_a, "a"), y_a)
        total.backward()
        return [p.grad.clone() for p in dis.cls_head.parameters()]

    g1, g2 = cls_grads(_images(4, 1)), cls_grads(_images(4, 2))
    for a, b in zip(g1, g2, strict=True):  # target images (and so target labels) never reach the class head
        assert a.abs().sum() > 0 and torch.equal(a, b)
    # the class head's gradient is exactly DA_CLS_W x the source cross-entropy's
    dis.zero_grad()
    (DA_CLS_W * torch.nn.functional.cross_entropy(dis.classify(x_a, "a"), y_a)).backward()
    for a, p in zip(g1, dis.cls_head.parameters(), strict=True):
        assert torch.allclose(a, p.grad, atol=1e-6)


def _npz(path: Path, size: int, n: int = 6) -> Path:
    x = np.zeros((n, size, size), np.uint8)
    x[:, :, :] = 200  # ink filling the frame, as in USPS
    np.savez(path, x_train=x, y_train=np.arange(n) % 10, x_test=x[:2], y_test=np.arange(2))
    return path


def test_digit_box_pads_to_mnist_margins(tmp_path):
    x = np.full((1, 1, 16, 16), 255, np.uint8)
    padded = pad_to_box(x, 20 / 28)
    assert padded.shape == (1, 1, 22, 22)  # 16 / 0.714 = 22.4 -> 22
    assert padded[0, 0, 3:19, 3:19].min() == 255 and padded[0, 0, :3].max() == 0 and padded[0, 0, 19:].max() == 0
    assert pad_to_box(x, 1.0) is x
    ds = ArrayDomain(str(_npz(tmp_path / "u.npz", 16)), "train", 1, 32, digit_box=0.5)
    img = ds[0]  # [1, 32, 32]: 16 -> 32 padded, then resized to 32: ink in the middle 16 rows
    ink_rows = (img[0] > 0).any(1).nonzero().flatten()
    assert ink_rows.min() >= 7 and ink_rows.max() <= 24 and img[0, 0, 0] == -1


def test_use_inversion_adds_inverted_target_training_copies(tmp_path):
    a, b = _npz(tmp_path / "a.npz", 28), _npz(tmp_path / "b.npz", 16)
    over = ["data.source=arrays", f"data.a={a}", f"data.b={b}", "data.crop_size=32", "da.digit_box_b=0.714"]
    cfg = load_config("demo", [*over, "da.use_inversion=true"])
    b_train = build_domain(cfg, "b", "train")
    assert len(b_train) == 12
    assert torch.allclose(b_train[6], -b_train[0], atol=1e-6)  # 255 - x maps v in [-1, 1] to -v
    assert len(build_domain(cfg, "b", "test")) == 2  # test split untouched
    assert len(build_domain(cfg, "a", "train")) == 6  # source untouched
    assert len(build_domain(load_config("demo", over), "b", "train")) == 6
    with pytest.raises(UnitganError, match="da.digit_box_b"):
        load_config("demo", [*over, "da.digit_box_b=0"])
