"""UNIT-DA with the authors' digit networks: ``CoVAE32x32`` + ``CoDis32x32`` (``model.arch=covae32``).

One step is the authors' order (version_02 ``COCOGANDAContextTrainer``): a discriminator update, then a
generator update on a new joint pass.

- D update: the generator runs without gradients (train mode, sampled z) on (x_a, x_b) together; D judges
  (x_a, x_b) real and the reconstructions (x_aa, x_bb) and translations (x_ba, x_ab) fake; its class head
  learns from the source labels y_a (x_a through the source's private first layer); the trunk features of
  x_ab are pulled to those of x_aa (same latent z_a) and x_ba's to x_bb's (:func:`unitgan.losses.da32_dis_loss`).
- G update: a new joint pass; D (frozen) should call reconstructions and translations real; KL of the
  learned-sd latent and reconstruction (:func:`unitgan.losses.da32_gen_loss`).

At log steps (``train.log_every``) of UNIT-DA (not source-only) two label-free alignment signals join the logged
scalars:
``align_acc_ab``, the accuracy of the class head (:meth:`DABase.classify`, eval mode) on the test-time translations
x_ab (z = mu, eval mode, after the step's updates) through the target's path against the SOURCE labels y_a (x_ab keeps
the class of its x_a when the translation is aligned); ``align_feat_gan_grad``, the norm of the weighted feature-
matching loss's gradient over the weighted GAN loss's gradient w.r.t. the target's first D conv weight in the D update
(how much the trunk's target path is shaped by the alignment pull rather than by real/fake). Neither draws random
numbers or touches a gradient the update uses, so a run's weights do not depend on ``train.log_every``.

Target images are classified through the target's private first D layer and the shared trunk
(``classify(x_b, 'b')``); with ``da.source_only`` only the source path is trained (class loss on x_a) and target
images are classified through it. Target labels are never read in training; the last step is the one
reported (``da_results.json``). Data, evaluation, checkpoint state and the non-finite guard are
:class:`unitgan.train.da.common.DABase`'s.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from unitgan.config import Config
from unitgan.losses import DA_CLS_W, DA_GAN_W, da32_dis_loss, da32_gen_loss
from unitgan.models import build_generator
from unitgan.models.da import build_discriminator
from unitgan.runtime import set_requires_grad
from unitgan.train.da.common import DABase, align_distribution, refuse_ignored_keys
from unitgan.train.distributed import average_tensor

ALIGN_MOMENTUM = 0.99  # da.pseudo_align: the running class shares average about the last 100 batches


class DA32Trainer(DABase):
    """``gen`` (CoVAE32x32, width ``model.ch``), ``dis`` (CoDis32x32, width ``model.dis_ch``), Adam for each."""

    def __init__(self, cfg: Config, device: torch.device, ddp: bool = False):
        """``ddp``: average gradients over the torchrun ranks (the process group must exist)."""
        super().__init__()
        refuse_ignored_keys(cfg, "authors")
        dis = build_discriminator(cfg)  # CoDis32x32; built before the generator (its init draws first)
        self.setup(cfg, device, ddp, build_generator(cfg.model), dis)
        # da.pseudo_align: running class shares [K] of the teacher's target predictions and of the source labels
        uniform = torch.full((cfg.da.n_classes,), 1.0 / cfg.da.n_classes, device=device)
        self.pred_mean_b, self.prior_a = uniform.clone(), uniform.clone()

    def train_step(self, x_a: torch.Tensor, y_a: torch.Tensor, x_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """One D update, then one G update (only the classifier's update when source-only: source labels, and
        with ``da.pseudo_w`` the confident target predictions).
        x_a [N, nc_a, 32, 32], y_a [N], x_b [N, nc_b, 32, 32]."""
        x_a, y_a, x_b = x_a.to(self.device), y_a.to(self.device), x_b.to(self.device)
        self.train()
        if self.cfg.da.source_only:
            self.opt_dis.zero_grad(set_to_none=True)
            cls = F.cross_entropy(self.dis.classify(x_a, "a"), y_a)
            loss, terms = DA_CLS_W * cls, {"dis_cls": cls.detach()}
            loss = self.add_pseudo_label_loss(loss, terms, x_b, y_a)
            loss.backward()
            self.apply_update(loss.detach(), (self.opt_dis, self.dis))
            self.sched_dis.step()
            return {k: v.detach() for k, v in terms.items()}
        log_step = self.is_log_step()
        loss_d, terms_d = self.dis_update(x_a, y_a, x_b, log_step)
        loss_g, terms_g = self.gen_update(x_a, y_a, x_b)
        self.sched_dis.step()
        self.sched_gen.step()
        if log_step:
            terms_g["align_acc_ab"] = self.alignment_accuracy(x_a, y_a)
        return {"loss_d": loss_d, "loss_g": loss_g, **terms_d, **terms_g}

    def is_log_step(self) -> bool:
        """Whether the step being taken is one the loop logs (``train.log_every``, and the last one)."""
        step = self.sched_dis.last_epoch + 1  # last_epoch = steps done, resumed runs included
        return step % self.cfg.train.log_every == 0 or step == self.cfg.train.steps

    @torch.no_grad()
    def alignment_accuracy(self, x_a: torch.Tensor, y_a: torch.Tensor) -> torch.Tensor:
        """Share of the test-time translations x_ab = gen(x_a) (eval mode, z = mu) that the class head (eval mode,
        :meth:`DABase.classify`) puts in their source class y_a [N], read through the target's path
        (:attr:`eval_domain`). Label-free for the target: only source labels are read."""
        was_training = self.gen.training
        self.gen.eval()
        x_ab = self.gen(x_a, "a2b")  # [N, nc_b, 32, 32]
        self.gen.train(was_training)
        return (self.classify(x_ab, self.eval_domain).argmax(dim=1) == y_a).float().mean()

    def dis_update(self, x_a: torch.Tensor, y_a: torch.Tensor, x_b: torch.Tensor, log_step: bool = False):
        """The discriminator phase; returns its loss and terms (detached). ``log_step``: also the gradient ratio
        ``align_feat_gan_grad`` (two extra backward passes through the graph, no effect on the update)."""
        self.opt_dis.zero_grad(set_to_none=True)
        with torch.no_grad():
            out = self.gen.forward_pair(x_a, x_b)
        real_logits, _, _ = self.dis(x_a, x_b)  # [2N, 2]
        recon_logits, feat_aa, feat_bb = self.dis(out.x_aa, out.x_bb)
        trans_logits, feat_ba, feat_ab = self.dis(out.x_ba, out.x_ab)  # x_ba is an A image, x_ab a B image
        cls_logits_a = self.dis.classify(x_a, "a")  # [N, n_classes]
        loss, terms = da32_dis_loss(
            real_logits,
            recon_logits,
            trans_logits,
            feat_aa,
            feat_ab,
            feat_bb,
            feat_ba,
            cls_logits_a,
            y_a,
            feat_w=self.cfg.da.feat32_w,
        )
        if self.cfg.da.cls_ab_w > 0:  # a deviation (off in the authors' code): x_ab keeps the label of its x_a
            terms["cls_ab"] = F.cross_entropy(self.dis.classify(out.x_ab, self.eval_domain), y_a)
            loss = loss + self.cfg.da.cls_ab_w * terms["cls_ab"]
        loss = self.add_pseudo_label_loss(loss, terms, x_b, y_a)
        if log_step:
            terms["align_feat_gan_grad"] = self.feature_gan_grad_ratio(terms)
        loss.backward()
        self.apply_update(loss.detach(), (self.opt_dis, self.dis))
        return loss.detach(), {k: v.detach() for k, v in terms.items()}

    def feature_gan_grad_ratio(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """|d(feat32_w x dis_feat)/dW| / |d(gan_w x (dis_gan_real + dis_gan_fake))/dW| for W the target's first D
        conv weight, from the D phase's ``terms`` (graph kept for the update's own backward)."""
        weight = self.dis.dis_b[0].weight
        feat = self.cfg.da.feat32_w * terms["dis_feat"]
        gan = DA_GAN_W * (terms["dis_gan_real"] + terms["dis_gan_fake"])
        g_feat = None
        if feat.requires_grad:
            (g_feat,) = torch.autograd.grad(feat, weight, retain_graph=True, allow_unused=True)
        (g_gan,) = torch.autograd.grad(gan, weight, retain_graph=True)
        norm_feat = torch.zeros((), device=weight.device) if g_feat is None else g_feat.float().norm()
        return (norm_feat / g_gan.float().norm().clamp_min(1e-12)).detach()

    def add_pseudo_label_loss(
        self, loss: torch.Tensor, terms: dict, x_b: torch.Tensor, y_a: torch.Tensor
    ) -> torch.Tensor:
        """``da.pseudo_w`` (a deviation, off in the presets): from step ``da.pseudo_start`` on, add the
        cross-entropy of the class head (train mode, through the target's path) on the target images whose
        eval-mode prediction (the classifier's weight average with ``train.ema``; aligned to the source's class
        shares with ``da.pseudo_align``) is at least ``da.pseudo_threshold`` sure, against that prediction;
        averaged over all N images of x_b [N, nc_b, 32, 32]. ``y_a`` [N] is only read by the alignment.
        Logs ``pseudo`` (the loss), ``pseudo_kept`` (the confident share) and, aligned, ``pseudo_rarest``
        (the rarest class's running predicted share times K: near 0 when the teacher has dropped a class)."""
        da = self.cfg.da
        if da.pseudo_w <= 0 or self.sched_dis.last_epoch < da.pseudo_start:  # last_epoch = steps done (resumed)
            return loss
        probs = self.classify(x_b, self.eval_domain).softmax(dim=1)  # [N, K], no grad, no dropout
        if da.pseudo_align:
            k = probs.shape[1]
            shares = torch.stack([probs.mean(dim=0), F.one_hot(y_a, k).float().mean(dim=0)])  # [2, K]
            pred_b, prior_a = average_tensor(shares)  # one all-reduce under torchrun
            self.pred_mean_b.lerp_(pred_b, 1 - ALIGN_MOMENTUM)
            self.prior_a.lerp_(prior_a, 1 - ALIGN_MOMENTUM)
            terms["pseudo_rarest"] = self.pred_mean_b.min() * k
            probs = align_distribution(probs, self.pred_mean_b, self.prior_a)
        confidence, label = probs.max(dim=1)  # [N], [N]
        kept = (confidence >= da.pseudo_threshold).float()
        per_image = F.cross_entropy(self.dis.classify(x_b, self.eval_domain), label, reduction="none")  # [N]
        terms["pseudo"] = (per_image * kept).mean()
        terms["pseudo_kept"] = kept.mean()
        return loss + da.pseudo_w * terms["pseudo"]

    def gen_update(self, x_a: torch.Tensor, y_a: torch.Tensor, x_b: torch.Tensor):
        """The generator phase against the just-updated, frozen discriminator; returns its loss and terms.
        ``y_a`` is only read with ``da.sem_ab_w`` (a deviation: x_ab must keep the class of its x_a)."""
        self.opt_gen.zero_grad(set_to_none=True)
        out = self.gen.forward_pair(x_a, x_b)
        set_requires_grad(self.dis, False)
        recon_logits, _, _ = self.dis(out.x_aa, out.x_bb)
        trans_logits, _, _ = self.dis(out.x_ba, out.x_ab)
        loss, terms = da32_gen_loss(recon_logits, trans_logits, out.mu, out.sd, x_a, out.x_aa, x_b, out.x_bb)
        if self.cfg.da.sem_ab_w > 0:
            terms["gen_sem_ab"] = F.cross_entropy(self.dis.classify(out.x_ab, self.cfg.da.sem_path), y_a)
            loss = loss + self.cfg.da.sem_ab_w * terms["gen_sem_ab"]
        loss.backward()
        set_requires_grad(self.dis, True)
        self.apply_update(loss.detach(), (self.opt_gen, self.gen))
        return loss.detach(), {k: v.detach() for k, v in terms.items()}

    def state(self) -> dict[str, Any]:
        """:meth:`DABase.state`, with ``da.pseudo_align`` also its running class shares."""
        state = super().state()
        if self.cfg.da.pseudo_align:
            state["pseudo_align"] = {"pred_mean_b": self.pred_mean_b.clone(), "prior_a": self.prior_a.clone()}
        return state

    def load_state(self, state: dict[str, Any], weights_only: bool = False) -> None:
        super().load_state(state, weights_only)
        if not weights_only and self.cfg.da.pseudo_align and "pseudo_align" in state:
            self.pred_mean_b.copy_(state["pseudo_align"]["pred_mean_b"])
            self.prior_a.copy_(state["pseudo_align"]["prior_a"])
