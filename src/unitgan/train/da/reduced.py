"""UNIT-DA: unsupervised domain adaptation with UNIT, and the source-only baseline on the same trunk.

Domain A is the labelled source, domain B the unlabelled target. One step is one encoder/generator update
and one discriminator update, as in plain UNIT, with two additions (the paper's digits protocol):

- the discriminators' high-level layers are shared (:class:`~unitgan.models.da.reduced.DADiscriminator`) and carry a
  class head trained on **source labels only**: real source images x_a (weight ``da.cls_w``) and source
  images translated into the target domain, x_ab, which keep their source label (weight ``da.cls_ab_w``);
- the trunk features of x_aa and x_ab (decoded from the same latent z_a) are pulled together, and those of
  x_bb and x_ba likewise (L1, weight ``da.feat_w``). In the authors' DA code this is a discriminator loss
  (``da.feat_update: dis``): the trunk learns to map a translation to the features of the reconstruction from
  the same latent, so target images and source images meet in one feature space the class head reads;
- with ``da.recon_fake`` the discriminators also judge the reconstructions x_aa and x_bb as fakes (and the
  generators want them judged real), as in the authors' DA code.

Target labels are never read during training; the run ends at ``train.steps`` (the last step is the one
evaluated into ``da_results.json``, no checkpoint is chosen by target accuracy; ``da.eval_every`` adds a
learning curve to ``metrics.jsonl``). It runs in the one training loop (``unitgan.train.loop``) as the
trainer ``unit_da`` (its data, evaluation and checkpoint state are
:class:`~unitgan.train.da.common.DABase`'s, shared with the authors'-networks trainer ``unitgan.train.da.authors``): resume, signals, the non-finite guard and torchrun work as
for UNIT. With ``da.source_only`` only the source path of the classifier (private_a + trunk + head) is
trained, and target images are classified through that same path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unitgan.config import Config
from unitgan.losses import GenOutputs, gan_d_loss, l1_loss, unit_gen_loss
from unitgan.models import UNITGenerator, build_generator
from unitgan.models.da import build_discriminator
from unitgan.runtime import set_requires_grad
from unitgan.train.da.common import DABase, refuse_ignored_keys


class DATrainer(DABase):
    """``gen`` (the UNIT encoders/generators), ``dis`` (both discriminators with the shared trunk and the
    class head), their Adam optimisers and step schedulers (the reduced UNIT-DA design)."""

    def __init__(self, cfg: Config, device: torch.device, ddp: bool = False):
        """``ddp``: average gradients over the torchrun ranks (the process group must exist)."""
        super().__init__()
        refuse_ignored_keys(cfg, "reduced")
        self.setup(cfg, device, ddp, build_generator(cfg.model), build_discriminator(cfg))

    def train_step(self, x_a: torch.Tensor, y_a: torch.Tensor, x_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """One E/G update and one D update (only the classifier update when source-only). Both gradients are
        taken before either optimiser steps (the D pass reads only detached translations), so a non-finite
        step can be skipped whole (``train.nonfinite=skip``)."""
        x_a, y_a, x_b = x_a.to(self.device), y_a.to(self.device), x_b.to(self.device)
        self.train()
        self.opt_gen.zero_grad(set_to_none=True)
        self.opt_dis.zero_grad(set_to_none=True)
        if self.cfg.da.source_only:
            loss = F.cross_entropy(self.dis.classify(x_a, "a"), y_a)
            loss.backward()
            stats = {"cls_a": loss.detach()}
            self.apply_update(loss.detach(), (self.opt_dis, self.dis))
            self.sched_dis.step()
            return stats
        loss_g, terms, fake_a, fake_b, x_aa, x_bb = self._gen_backward(x_a, x_b)
        loss_d = self._dis_backward(x_a, y_a, x_b, fake_a, fake_b, x_aa, x_bb, terms)
        self.apply_update(torch.stack([loss_g, loss_d]), (self.opt_gen, self.gen), (self.opt_dis, self.dis))
        self.sched_gen.step()
        self.sched_dis.step()
        return {"loss_g": loss_g, "loss_d": loss_d, **terms}

    def _gen_backward(self, x_a: torch.Tensor, x_b: torch.Tensor):
        """The E/G loss (UNIT's objective, :func:`unitgan.losses.unit_gen_loss`, with the GAN terms on the fakes
        of :meth:`_dis_backward`, plus the DA feature loss with ``da.feat_update`` gen/both) and its backward; the
        discriminator is frozen."""
        w, da, gan_type = self.cfg.loss, self.cfg.da, self.cfg.model.gan_type
        g, n = self.gen, x_a.shape[0]
        set_requires_grad(self.dis, False)
        mu_a, mu_b = g.encode(x_a, "a"), g.encode(x_b, "b")  # [N, C, h, w]
        z = UNITGenerator.sample(torch.cat([mu_a, mu_b]))  # z_a then z_b
        x_aa, x_ba = g.decode(z, "a").split(n)
        x_ab, x_bb = g.decode(z, "b").split(n)
        # fakes in one pass per domain: translations, then (recon_fake) reconstructions
        fake_a = torch.cat([x_ba, x_aa]) if da.recon_fake else x_ba
        fake_b = torch.cat([x_ab, x_bb]) if da.recon_fake else x_ab
        s_fa, _, h_fa = self.dis(fake_a, "a")
        s_fb, _, h_fb = self.dis(fake_b, "b")
        mu_ab = mu_ba = x_aba = x_bab = z_ab = z_ba = None
        if w.cyc_recon_w > 0 or w.cyc_kl_w > 0:  # the cycle costs two encodes and decodes more: skip when off
            mu_ba, mu_ab = g.encode(x_ba, "a"), g.encode(x_ab, "b")
            z_ab = UNITGenerator.sample(mu_ab)
            x_aba = g.decode(z_ab, "a")
            z_ba = UNITGenerator.sample(mu_ba)
            x_bab = g.decode(z_ba, "b")
        z_a, z_b = z.split(n)
        out = GenOutputs(x_a, x_b, mu_a, mu_b, x_aa, x_bb, x_ab, x_ba, mu_ab, mu_ba, x_aba, x_bab, z_a, z_b, z_ab, z_ba)
        loss_g, terms = unit_gen_loss(out, s_fb, s_fa, w, gan_type)  # with recon_fake, the fakes hold x_aa / x_bb
        if da.feat_w > 0 and da.feat_update in ("gen", "both"):  # same latent, same trunk features
            h_aa = h_fa[n:] if da.recon_fake else self.dis.features(x_aa, "a")
            h_bb = h_fb[n:] if da.recon_fake else self.dis.features(x_bb, "b")
            feat_g = l1_loss(h_aa, h_fb[:n]) + l1_loss(h_bb, h_fa[:n])
            terms["feat_g"] = feat_g.detach()
            loss_g = loss_g + da.feat_w * feat_g
        loss_g.backward()
        set_requires_grad(self.dis, True)
        return loss_g.detach(), terms, fake_a.detach(), fake_b.detach(), x_aa.detach(), x_bb.detach()

    def _dis_backward(self, x_a, y_a, x_b, fake_a, fake_b, x_aa, x_bb, terms: dict) -> torch.Tensor:
        """The D loss and its backward: GAN on both domains, class head on source labels only, and
        (``da.feat_update`` dis/both) the trunk learns to give x_ab the features of x_aa and x_ba those of
        x_bb. Adds its terms to ``terms``."""
        w, da, gan_type, n = self.cfg.loss, self.cfg.da, self.cfg.model.gan_type, x_a.shape[0]
        s_a, c_a, h_a = self.dis(torch.cat([x_a, fake_a]), "a")  # real, x_ba[, x_aa]
        s_b, c_b, h_b = self.dis(torch.cat([x_b, fake_b]), "b")  # real, x_ab[, x_bb]
        new = {
            "dis_a": gan_d_loss([s[:n] for s in s_a], [s[n:] for s in s_a], gan_type),
            "dis_b": gan_d_loss([s[:n] for s in s_b], [s[n:] for s in s_b], gan_type),
            "cls_a": F.cross_entropy(c_a[:n], y_a),
        }
        loss_d = w.gan_w * (new["dis_a"] + new["dis_b"]) + da.cls_w * new["cls_a"]
        if da.cls_ab_w > 0:
            new["cls_ab"] = F.cross_entropy(c_b[n : 2 * n], y_a)  # x_ab keeps the label of its x_a
            loss_d = loss_d + da.cls_ab_w * new["cls_ab"]
        if da.feat_w > 0 and da.feat_update in ("dis", "both"):
            h_aa = h_a[2 * n :] if da.recon_fake else self.dis.features(x_aa, "a")
            h_bb = h_b[2 * n :] if da.recon_fake else self.dis.features(x_bb, "b")
            new["feat_d"] = l1_loss(h_b[n : 2 * n], h_aa) + l1_loss(h_a[n : 2 * n], h_bb)
            loss_d = loss_d + da.feat_w * new["feat_d"]
        loss_d.backward()
        terms.update({k: v.detach() for k, v in new.items()})
        return loss_d.detach()
