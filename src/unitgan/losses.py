"""The UNIT objective as pure functions over tensors.

Paper notation: lambda0 GAN, lambda1 KL, lambda2 L1 reconstruction, lambda3 cycle KL, lambda4 cycle L1.
With a unit-variance Gaussian posterior, KL(q(z|x) || N(0, I)) reduces (up to a constant) to mean(mu^2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unitgan.config import LossConfig, MUNITConfig


def kl_loss(mu: torch.Tensor) -> torch.Tensor:
    """KL term of a unit-variance Gaussian posterior: mean(mu^2)."""
    return mu.float().pow(2).mean()


def l1_loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (x.float() - target.float()).abs().mean()


def gan_d_loss(real: list[torch.Tensor], fake: list[torch.Tensor], gan_type: str) -> torch.Tensor:
    """Discriminator loss summed over scales; each scale averaged over its patches."""
    total = real[0].new_zeros((), dtype=torch.float32)
    for r, f in zip(real, fake, strict=True):
        r, f = r.float(), f.float()
        if gan_type == "lsgan":
            total = total + (r - 1).pow(2).mean() + f.pow(2).mean()
        elif gan_type == "nsgan":
            total = total + F.softplus(-r).mean() + F.softplus(f).mean()
        elif gan_type == "hinge":
            total = total + F.relu(1 - r).mean() + F.relu(1 + f).mean()
        else:
            raise ValueError(f"unknown gan_type '{gan_type}'")
    return total


def gan_g_loss(fake: list[torch.Tensor], gan_type: str) -> torch.Tensor:
    """Generator loss summed over scales: make the discriminator call the translations real."""
    total = fake[0].new_zeros((), dtype=torch.float32)
    for f in fake:
        f = f.float()
        if gan_type == "lsgan":
            total = total + (f - 1).pow(2).mean()
        elif gan_type == "nsgan":
            total = total + F.softplus(-f).mean()
        elif gan_type == "hinge":
            total = total - f.mean()
        else:
            raise ValueError(f"unknown gan_type '{gan_type}'")
    return total


@dataclass
class GenOutputs:
    """Everything the encoder/generator step computes for one batch of each domain."""

    x_a: torch.Tensor  # [N, Ca, H, W] real A
    x_b: torch.Tensor  # [N, Cb, H, W] real B
    mu_a: torch.Tensor  # [N, C, h, w] latent mean of x_a
    mu_b: torch.Tensor
    x_aa: torch.Tensor  # reconstruction of x_a from z_a
    x_bb: torch.Tensor
    x_ab: torch.Tensor  # translation A -> B from z_a
    x_ba: torch.Tensor
    mu_ab: torch.Tensor  # latent mean of the translation x_ab (re-encoded by enc_b)
    mu_ba: torch.Tensor
    x_aba: torch.Tensor  # cycle A -> B -> A
    x_bab: torch.Tensor


def unit_gen_loss(
    out: GenOutputs,
    d_fake_ab: list[torch.Tensor],
    d_fake_ba: list[torch.Tensor],
    w: LossConfig,
    gan_type: str,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The encoder/generator objective. ``d_fake_ab`` = dis_b(x_ab), ``d_fake_ba`` = dis_a(x_ba).

    Returns the weighted total and the unweighted named terms (detached) for logging.
    """
    terms = {
        "gan_a": gan_g_loss(d_fake_ba, gan_type),  # D_A judges x_ba
        "gan_b": gan_g_loss(d_fake_ab, gan_type),  # D_B judges x_ab
        "kl_a": kl_loss(out.mu_a),
        "kl_b": kl_loss(out.mu_b),
        "recon_a": l1_loss(out.x_aa, out.x_a),
        "recon_b": l1_loss(out.x_bb, out.x_b),
        "cyc_kl_a": kl_loss(out.mu_ba),  # latent of the translation into A (part of L_CC_B in the paper)
        "cyc_kl_b": kl_loss(out.mu_ab),
        "cyc_recon_a": l1_loss(out.x_aba, out.x_a),
        "cyc_recon_b": l1_loss(out.x_bab, out.x_b),
    }
    weights = {
        "gan": w.gan_w,
        "kl": w.kl_w,
        "recon": w.recon_w,
        "cyc_kl": w.cyc_kl_w,
        "cyc_recon": w.cyc_recon_w,
    }
    total = sum(weights[name.rsplit("_", 1)[0]] * value for name, value in terms.items())
    return total, {k: v.detach() for k, v in terms.items()}


# ---------------------------------------------------------------------------------------------------------
# MUNIT (content/style)
#
# Each image is a content code c (meant to be common to both domains) and a style code s of its domain.
# x_ab = dec_b(c_a, s_b) with s_b ~ N(0, I); re-encoding x_ab must give back c_a and s_b.


@dataclass
class MUNITOutputs:
    """Everything the MUNIT encoder/decoder step computes for one batch of each domain."""

    x_a: torch.Tensor  # [N, Ca, H, W] real A
    x_b: torch.Tensor  # [N, Cb, H, W] real B
    c_a: torch.Tensor  # [N, C, h, w] content of x_a
    c_b: torch.Tensor
    s_a: torch.Tensor  # [N, style_dim] style of A drawn from N(0, I) (used for x_ba)
    s_b: torch.Tensor  # style of B drawn from N(0, I) (used for x_ab)
    x_aa: torch.Tensor  # reconstruction dec_a(c_a, enc_s_a(x_a))
    x_bb: torch.Tensor
    x_ab: torch.Tensor  # translation dec_b(c_a, s_b)
    x_ba: torch.Tensor  # translation dec_a(c_b, s_a)
    c_ab: torch.Tensor  # content re-encoded from x_ab (should be c_a)
    c_ba: torch.Tensor  # content re-encoded from x_ba (should be c_b)
    s_ab: torch.Tensor  # style re-encoded from x_ab (should be s_b)
    s_ba: torch.Tensor  # style re-encoded from x_ba (should be s_a)
    x_aba: torch.Tensor | None = None  # explicit cycle dec_a(c_ab, enc_s_a(x_a)); None when its weight is 0
    x_bab: torch.Tensor | None = None
    s_a_enc: torch.Tensor | None = None  # [N, style_dim] enc_s_a(x_a), the posterior mean when the style
    s_b_enc: torch.Tensor | None = None  #   is sampled (munit.style_kl_w > 0); None otherwise


def munit_gen_loss(
    out: MUNITOutputs,
    d_fake_ab: list[torch.Tensor],
    d_fake_ba: list[torch.Tensor],
    w: MUNITConfig,
    gan_type: str,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The MUNIT encoder/decoder objective. ``d_fake_ab`` = dis_b(x_ab), ``d_fake_ba`` = dis_a(x_ba).

    The content targets c_a, c_b are not detached (the authors' choice): both encodings move towards each
    other. The explicit cycle terms are present only when ``out.x_aba`` and ``out.x_bab`` are given, the style
    KL terms (mean(s^2) of the encoded styles, as UNIT's latent KL) only when ``out.s_a_enc`` and
    ``out.s_b_enc`` are.
    Returns the weighted total and the unweighted named terms (detached) for logging.
    """
    terms = {
        "gan_a": gan_g_loss(d_fake_ba, gan_type),  # D_A judges x_ba
        "gan_b": gan_g_loss(d_fake_ab, gan_type),  # D_B judges x_ab
        "recon_a": l1_loss(out.x_aa, out.x_a),
        "recon_b": l1_loss(out.x_bb, out.x_b),
        "recon_c_a": l1_loss(out.c_ab, out.c_a),
        "recon_c_b": l1_loss(out.c_ba, out.c_b),
        "recon_s_a": l1_loss(out.s_ba, out.s_a),
        "recon_s_b": l1_loss(out.s_ab, out.s_b),
    }
    if out.x_aba is not None and out.x_bab is not None:
        terms["cyc_recon_a"] = l1_loss(out.x_aba, out.x_a)
        terms["cyc_recon_b"] = l1_loss(out.x_bab, out.x_b)
    if out.s_a_enc is not None and out.s_b_enc is not None:
        terms["style_kl_a"] = kl_loss(out.s_a_enc)
        terms["style_kl_b"] = kl_loss(out.s_b_enc)
    weights = {
        "gan": w.gan_w,
        "recon": w.recon_w,
        "recon_c": w.recon_c_w,
        "recon_s": w.recon_s_w,
        "cyc_recon": w.cyc_recon_w,
        "style_kl": w.style_kl_w,
    }
    total = sum(weights[name.rsplit("_", 1)[0]] * value for name, value in terms.items())
    return total, {k: v.detach() for k, v in terms.items()}
