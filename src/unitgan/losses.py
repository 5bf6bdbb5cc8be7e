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
    mu_ab: torch.Tensor | None  # latent mean of the translation x_ab (re-encoded by enc_b); None: no cycle
    mu_ba: torch.Tensor | None
    x_aba: torch.Tensor | None  # cycle A -> B -> A; None: no cycle (its terms are left out)
    x_bab: torch.Tensor | None
    z_a: torch.Tensor | None = None  # [N, C, h, w] the noisy latent decoded into x_aa / x_ab (mu_a + eta)
    z_b: torch.Tensor | None = None
    z_ab: torch.Tensor | None = None  # the noisy latent of x_ab decoded into x_aba
    z_ba: torch.Tensor | None = None


def unit_gen_loss(
    out: GenOutputs,
    d_fake_ab: list[torch.Tensor],
    d_fake_ba: list[torch.Tensor],
    w: LossConfig,
    gan_type: str,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The encoder/generator objective. ``d_fake_ab`` = dis_b(x_ab), ``d_fake_ba`` = dis_a(x_ba).

    Returns the weighted total and the unweighted named terms (detached) for logging. ``w.kl_on`` picks the latent
    of the KL terms: "mu" the means, "z" the noisy latents the generators decoded (``out.z_*``). The cycle terms
    (``cyc_kl_*``, ``cyc_recon_*``) are present only when ``out`` holds the cycle (``x_aba``, ``x_bab``, ``mu_ab``,
    ``mu_ba``); a caller whose cycle weights are 0 may leave it out.
    """
    cycle = out.x_aba is not None and out.x_bab is not None and out.mu_ab is not None and out.mu_ba is not None
    if w.kl_on == "z":
        needed = (out.z_a, out.z_b, out.z_ab, out.z_ba) if cycle else (out.z_a, out.z_b)
        if any(t is None for t in needed):
            raise ValueError(
                "loss.kl_on=z needs the noisy latents z_a, z_b (and z_ab, z_ba with the cycle) in GenOutputs"
            )
        lat_a, lat_b, lat_ab, lat_ba = out.z_a, out.z_b, out.z_ab, out.z_ba
    else:
        lat_a, lat_b, lat_ab, lat_ba = out.mu_a, out.mu_b, out.mu_ab, out.mu_ba
    terms = {
        "gan_a": gan_g_loss(d_fake_ba, gan_type),  # D_A judges x_ba
        "gan_b": gan_g_loss(d_fake_ab, gan_type),  # D_B judges x_ab
        "kl_a": kl_loss(lat_a),
        "kl_b": kl_loss(lat_b),
        "recon_a": l1_loss(out.x_aa, out.x_a),
        "recon_b": l1_loss(out.x_bb, out.x_b),
    }
    if cycle:
        terms["cyc_kl_a"] = kl_loss(lat_ba)  # latent of the translation into A (part of L_CC_B in the paper)
        terms["cyc_kl_b"] = kl_loss(lat_ab)
        terms["cyc_recon_a"] = l1_loss(out.x_aba, out.x_a)
        terms["cyc_recon_b"] = l1_loss(out.x_bab, out.x_b)
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


# Domain adaptation (CoVAE32x32 / CoDis32x32)
#
# The authors' DA objective (version_02 ``COCOGANDAContextTrainer``; ../shared/PAPER.md, "Protocol"). Each term
# is a per-sample sum averaged over the batch; the weights are the paper's yaml. Label 1 = real, 0 = fake.

DA_GAN_W = 1.0  # both phases: softmax GAN loss
DA_KL_W = 1e-4  # generator: KL of the learned-sd latent (counted twice)
DA_RECON_W = 1e-3  # generator: per-sample sum of squares of x_aa - x_a and x_bb - x_b
DA_CLS_W = 10.0  # discriminator: class cross-entropy on labelled source images x_a only
DA_FEAT_W = 1e-4  # discriminator: per-sample sum of squares between trunk features (x_ab vs x_aa, x_ba vs x_bb)


def learned_sd_kl_loss(mu: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """sum over the latent of (mu^2 + sd^2 - log sd^2), averaged over the batch (the authors' form: no -1
    constant and no 1/2, which shift and scale the KL; mu, sd [M, ...])."""
    mu, sd = mu.float(), sd.float()
    sd2 = sd.pow(2)
    return (mu.pow(2) + sd2 - sd2.log()).flatten(1).sum(1).mean()


def sum_squares_loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of squared differences, averaged over the batch (MSE x C*H*W)."""
    return (x.float() - target.float()).pow(2).flatten(1).sum(1).mean()


def softmax_gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """2-way softmax cross-entropy of GAN logits [N, 2] against all-real (1) or all-fake (0) labels."""
    labels = torch.full((logits.shape[0],), int(real), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), labels)


def da32_gen_loss(
    recon_logits: torch.Tensor,
    trans_logits: torch.Tensor,
    mu: torch.Tensor,
    sd: torch.Tensor,
    x_a: torch.Tensor,
    x_aa: torch.Tensor,
    x_b: torch.Tensor,
    x_bb: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Generator phase: D's GAN logits of (x_aa, x_bb) and of (x_ba, x_ab) [2N, 2] both pushed to real; KL of
    the joint latent (mu, sd [2N, ...]) counted twice; reconstruction of x_a and x_b. Returns total and terms."""
    gan = softmax_gan_loss(trans_logits, True) + softmax_gan_loss(recon_logits, True)
    kl = 2 * learned_sd_kl_loss(mu, sd)
    recon_a, recon_b = sum_squares_loss(x_aa, x_a), sum_squares_loss(x_bb, x_b)
    total = DA_GAN_W * gan + DA_KL_W * kl + DA_RECON_W * (recon_a + recon_b)
    return total, {"gen_gan": gan, "gen_kl": kl, "gen_recon_a": recon_a, "gen_recon_b": recon_b}


def da32_dis_loss(
    real_logits: torch.Tensor,
    recon_logits: torch.Tensor,
    trans_logits: torch.Tensor,
    feat_aa: torch.Tensor,
    feat_ab: torch.Tensor,
    feat_bb: torch.Tensor,
    feat_ba: torch.Tensor,
    cls_logits_a: torch.Tensor,
    y_a: torch.Tensor,
    feat_w: float = DA_FEAT_W,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Discriminator phase: real (x_a, x_b) logits -> real; the mean of the reconstruction and translation
    losses -> fake; class cross-entropy on SOURCE logits [N, n_classes] with labels y_a [N]; feature matching of
    trunk features [N, 8d, 2, 2] of x_ab to x_aa and of x_ba to x_bb, weight ``feat_w`` (the paper's
    DA_FEAT_W by default). Returns total and terms."""
    gan_real = softmax_gan_loss(real_logits, True)
    gan_fake = 0.5 * (softmax_gan_loss(trans_logits, False) + softmax_gan_loss(recon_logits, False))
    cls = F.cross_entropy(cls_logits_a.float(), y_a)
    feat_a, feat_b = sum_squares_loss(feat_ab, feat_aa), sum_squares_loss(feat_ba, feat_bb)
    total = DA_GAN_W * (gan_real + gan_fake) + DA_CLS_W * cls + feat_w * (feat_a + feat_b)
    return total, {"dis_gan_real": gan_real, "dis_gan_fake": gan_fake, "dis_cls": cls, "dis_feat": feat_a + feat_b}
