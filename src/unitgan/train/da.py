"""UNIT-DA: unsupervised domain adaptation with UNIT, and the source-only baseline on the same trunk.

Domain A is the labelled source, domain B the unlabelled target. One step is one encoder/generator update
and one discriminator update, as in plain UNIT, with two additions (the paper's digits protocol):

- the discriminators' high-level layers are shared (:class:`~unitgan.models.da.DADiscriminator`) and carry a
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
trainer ``unit_da`` (its data, evaluation and checkpoint state are :class:`DABase`'s, shared with the
authors'-networks trainer ``unitgan.train.da32``): resume, signals, the non-finite guard and torchrun work as
for UNIT. With ``da.source_only`` only the source path of the classifier (private_a + trunk + head) is
trained, and target images are classified through that same path.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unitgan.config import Config
from unitgan.data import build_domain
from unitgan.errors import UnitganError
from unitgan.losses import gan_d_loss, gan_g_loss, kl_loss, l1_loss
from unitgan.metrics.da import classification_accuracy
from unitgan.models import UNITGenerator, build_generator
from unitgan.models.da import DADiscriminator
from unitgan.runtime import atomic_write_text, set_requires_grad
from unitgan.train.base import (
    TrainData,
    WeightAverage,
    apply_optim_settings,
    build_adam,
    build_step_lr,
    changed_optim_keys,
    endless_batches,
    weights_finite,
)
from unitgan.train.distributed import average_gradients

log = logging.getLogger(__name__)


class DABase(nn.Module):
    """What the DA trainers share (:class:`DATrainer`, ``unitgan.train.da32.DA32Trainer``): the data, the
    evaluation hook, the optimiser step with the non-finite guard, and the checkpoint state. A subclass builds
    ``gen``, ``dis`` (with ``classify(x, domain)``), ``opt_gen``, ``opt_dis``, ``sched_gen``, ``sched_dis``
    (through :meth:`setup`) and implements ``train_step``. Implements :class:`unitgan.train.base.Trainer`."""

    state_keys = ("gen", "dis", "opt_gen", "opt_dis")

    def setup(self, cfg: Config, device: torch.device, ddp: bool, gen: nn.Module, dis: nn.Module) -> None:
        """Keep the networks on ``device`` and build their Adam optimisers and step schedulers."""
        if cfg.da.source_only and cfg.model.input_nc_a != cfg.model.input_nc_b:
            raise UnitganError(
                "config key 'da.source_only' needs model.input_nc_a == model.input_nc_b (one input path)"
            )
        self.cfg, self.device, self.ddp = cfg, device, ddp
        self.gen, self.dis = gen, dis
        # train.ema: weight averages of both networks; the classifier's is the one evaluation reads (the DA result),
        # the generator's the one translate loads
        self.gen_ema = WeightAverage(gen, cfg.train.ema) if cfg.train.ema > 0 else None
        self.dis_ema = WeightAverage(dis, cfg.train.ema) if cfg.train.ema > 0 else None
        self.to(device)
        if cfg.train.channels_last:  # NHWC weights: the convolutions' outputs, and so CoDis32x32's max pools, are NHWC
            self.to(memory_format=torch.channels_last)
        o = cfg.optim
        self.opt_gen = build_adam(self.gen.parameters(), o.lr, cfg, device)
        self.opt_dis = build_adam(self.dis.parameters(), o.dis_lr or o.lr, cfg, device)
        self.sched_gen, self.sched_dis = build_step_lr(self.opt_gen, cfg), build_step_lr(self.opt_dis, cfg)
        self.skip_nonfinite = cfg.train.nonfinite == "skip"
        self.last_skipped = False
        self.eval_every = cfg.da.eval_every
        self._test_splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # loaded on the first evaluate

    @property
    def eval_domain(self) -> str:
        """The path target images take through the classifier: ``da.target_path`` ('b' for UNIT-DA as the authors,
        'a' = the source's first layer) or 'a' (source-only)."""
        return "a" if self.cfg.da.source_only else self.cfg.da.target_path

    def data(self, start_step: int, rank: int, world_size: int) -> TrainData:
        """Labelled source batches and unlabelled target batches: a step's batch is ``(x_a, y_a, x_b)``."""
        cfg, seed = self.cfg, self.cfg.train.seed
        ds_a = build_domain(cfg, "a", "train", return_labels=True)
        if not getattr(ds_a, "return_labels", False):
            raise UnitganError(f"data.a '{cfg.data.a}' has no labels: UNIT-DA needs a labelled source")
        ds_b = build_domain(cfg, "b", "train")  # target labels are never read
        it_a = endless_batches(cfg, ds_a, seed * 2, start_step, rank, world_size, self.device)
        it_b = endless_batches(cfg, ds_b, seed * 2 + 1, start_step, rank, world_size, self.device)

        def next_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x_a, y_a = next(it_a)
            return x_a, y_a, next(it_b)

        return TrainData(next_batch, (ds_a, ds_b), (it_a, it_b))

    def fixed_batch(self) -> None:
        return None

    def sample_rows(self, fixed: None) -> list[torch.Tensor]:
        return []  # the run is judged by its accuracy (da_results.json), not by image grids

    def apply_update(self, losses: torch.Tensor, *pairs: tuple[torch.optim.Optimizer, nn.Module]) -> None:
        """Average gradients over ranks (torchrun), then step each optimiser, unless the losses are not
        finite and ``train.nonfinite=skip`` (one host sync)."""
        self.last_skipped = self.skip_nonfinite and not bool(torch.isfinite(losses).all())
        for opt, module in pairs:
            if self.last_skipped:
                opt.zero_grad(set_to_none=True)
                continue
            if self.ddp:
                average_gradients(module)
            opt.step()
            average = self.gen_ema if module is self.gen else self.dis_ema if module is self.dis else None
            if average is not None:
                average.update(module)

    @torch.no_grad()
    def classify(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """Class logits [N, K] in eval mode, by the classifier's weight average with ``train.ema``."""
        was_training = self.training
        self.eval()
        dis = self.dis if self.dis_ema is None else self.dis_ema.net
        out = dis.classify(x.to(self.device), domain)
        self.train(was_training)
        return out

    def evaluate(self, step: int, run_dir: Path, final: bool) -> dict[str, float]:
        """Target (and source) test accuracy; at the end of the run also into ``da_results.json``."""
        results = evaluate_da(self, self.cfg, self._test_splits)
        if final:
            kind = "source-only classifier" if self.cfg.da.source_only else "UNIT-DA"
            atomic_write_text(
                run_dir / "da_results.json", json.dumps({"step": step, "kind": kind, **results}, indent=2)
            )
            log.info(
                "%s: target accuracy %.4f, source accuracy %.4f", kind, results["target_acc"], results["source_acc"]
            )
        return {"target_acc": results["target_acc"], "source_acc": results["source_acc"]}

    def learning_rate(self) -> float:
        return self.opt_gen.param_groups[0]["lr"]

    def weights_finite(self) -> bool:
        return weights_finite(self)

    def state(self) -> dict[str, Any]:
        """Everything to resume; with ``train.ema`` also the averages ``gen_ema`` (translate loads it) and
        ``dis_ema`` (evaluation reads it), with their update counts."""
        averages = {}
        if self.gen_ema is not None and self.dis_ema is not None:
            averages = {
                "gen_ema": self.gen_ema.net.state_dict(),
                "ema_updates": self.gen_ema.updates,
                "dis_ema": self.dis_ema.net.state_dict(),
                "dis_ema_updates": self.dis_ema.updates,
            }
        return {
            **averages,
            "gen": self.gen.state_dict(),
            "dis": self.dis.state_dict(),
            "opt_gen": self.opt_gen.state_dict(),
            "opt_dis": self.opt_dis.state_dict(),
            "sched_gen": self.sched_gen.state_dict(),
            "sched_dis": self.sched_dis.state_dict(),
        }

    def load_state(self, state: dict[str, Any], weights_only: bool = False) -> None:
        self.gen.load_state_dict(state["gen"])
        self.dis.load_state_dict(state["dis"])
        if self.gen_ema is not None and self.dis_ema is not None:
            self.gen_ema.load(state.get("gen_ema"), state.get("ema_updates", 0), self.gen)
            self.dis_ema.load(state.get("dis_ema"), state.get("dis_ema_updates", 0), self.dis)
        if not weights_only:
            for key in ("opt_gen", "opt_dis", "sched_gen", "sched_dis"):
                getattr(self, key).load_state_dict(state[key])
            if changed_optim_keys(state.get("config", {}), self.cfg):  # the config's optimiser settings win
                o = self.cfg.optim
                apply_optim_settings(self.opt_gen, self.sched_gen, o.lr, self.cfg)
                apply_optim_settings(self.opt_dis, self.sched_dis, o.dis_lr or o.lr, self.cfg)


class DATrainer(DABase):
    """``gen`` (the UNIT encoders/generators), ``dis`` (both discriminators with the shared trunk and the
    class head), their Adam optimisers and step schedulers (the reduced UNIT-DA design)."""

    def __init__(self, cfg: Config, device: torch.device, ddp: bool = False):
        """``ddp``: average gradients over the torchrun ranks (the process group must exist)."""
        super().__init__()
        for key, value in (
            ("target_path", cfg.da.target_path != "b"),
            ("sem_ab_w", cfg.da.sem_ab_w != 0),
            ("pseudo_w", cfg.da.pseudo_w != 0),
        ):
            if value:
                raise UnitganError(
                    f"config key 'da.{key}' is only read by model.arch=covae32 (the reduced design ignores it)"
                )
        self.setup(cfg, device, ddp, build_generator(cfg.model), DADiscriminator(cfg))

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
        """The E/G loss (UNIT's terms, plus the DA feature loss with ``da.feat_update`` gen/both) and its
        backward; the discriminator is frozen."""
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
        terms = {
            "gan_a": gan_g_loss(s_fa, gan_type),
            "gan_b": gan_g_loss(s_fb, gan_type),
            "kl_a": kl_loss(mu_a),
            "kl_b": kl_loss(mu_b),
            "recon_a": l1_loss(x_aa, x_a),
            "recon_b": l1_loss(x_bb, x_b),
        }
        loss_g = (
            w.gan_w * (terms["gan_a"] + terms["gan_b"])
            + w.kl_w * (terms["kl_a"] + terms["kl_b"])
            + w.recon_w * (terms["recon_a"] + terms["recon_b"])
        )
        if w.cyc_recon_w > 0 or w.cyc_kl_w > 0:  # the cycle costs two encodes and decodes more: skip when off
            mu_ba, mu_ab = g.encode(x_ba, "a"), g.encode(x_ab, "b")
            terms["cyc_kl_a"], terms["cyc_kl_b"] = kl_loss(mu_ba), kl_loss(mu_ab)
            terms["cyc_recon_a"] = l1_loss(g.decode(UNITGenerator.sample(mu_ab), "a"), x_a)
            terms["cyc_recon_b"] = l1_loss(g.decode(UNITGenerator.sample(mu_ba), "b"), x_b)
            loss_g = loss_g + w.cyc_kl_w * (terms["cyc_kl_a"] + terms["cyc_kl_b"])
            loss_g = loss_g + w.cyc_recon_w * (terms["cyc_recon_a"] + terms["cyc_recon_b"])
        if da.feat_w > 0 and da.feat_update in ("gen", "both"):  # same latent, same trunk features
            h_aa = h_fa[n:] if da.recon_fake else self.dis.features(x_aa, "a")
            h_bb = h_fb[n:] if da.recon_fake else self.dis.features(x_bb, "b")
            terms["feat_g"] = l1_loss(h_aa, h_fb[:n]) + l1_loss(h_bb, h_fa[:n])
            loss_g = loss_g + da.feat_w * terms["feat_g"]
        loss_g.backward()
        set_requires_grad(self.dis, True)
        terms = {k: v.detach() for k, v in terms.items()}
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


def load_split(cfg: Config, domain: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All images [N, C, S, S] and labels [N] of one domain's split (for evaluation)."""
    ds = build_domain(cfg, domain, split, return_labels=True)
    if not getattr(ds, "return_labels", False):
        raise UnitganError(f"data.{domain} has no labels for split '{split}'; DA accuracy needs them")
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def evaluate_da(
    trainer: DABase, cfg: Config, splits: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
) -> dict[str, float]:
    """Accuracy of the class head on the target test set (and on the source test set, for reference).

    ``splits`` caches the loaded test sets between calls (filled on the first call when given)."""
    splits = {} if splits is None else splits
    if not splits:
        splits["b"], splits["a"] = load_split(cfg, "b", "test"), load_split(cfg, "a", "test")
    (x_b, y_b), (x_a, y_a) = splits["b"], splits["a"]
    return {
        "target_acc": classification_accuracy(lambda x: trainer.classify(x, trainer.eval_domain), x_b, y_b),
        "source_acc": classification_accuracy(lambda x: trainer.classify(x, "a"), x_a, y_a),
        "n_target_test": len(x_b),
    }
