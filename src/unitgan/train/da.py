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
evaluated, no checkpoint is chosen by target accuracy). With ``da.source_only`` only the source path of the
classifier (private_a + trunk + head) is trained, and target images are classified through that same path.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from unitgan.config import Config, save_config
from unitgan.data import build_domain, build_loader
from unitgan.errors import UnitganError
from unitgan.losses import gan_d_loss, gan_g_loss, kl_loss, l1_loss
from unitgan.metrics.da import classification_accuracy
from unitgan.models import UNITGenerator
from unitgan.models.da import DADiscriminator
from unitgan.runtime import resolve_device, set_requires_grad
from unitgan.train.checkpoint import load_latest, save_checkpoint
from unitgan.train.logger import RunLogger
from unitgan.train.loop import TrainResult, _cycle, _get_rng, _set_rng, _StopFlag, check_finite

log = logging.getLogger(__name__)


class DATrainer(nn.Module):
    """``gen`` (the UNIT encoders/generators), ``dis`` (both discriminators with the shared trunk and the
    class head), their Adam optimisers and step schedulers."""

    def __init__(self, cfg: Config, device: torch.device):
        super().__init__()
        self.cfg, self.device = cfg, device
        o = cfg.optim
        self.gen = UNITGenerator(cfg.model)
        self.dis = DADiscriminator(cfg)
        self.to(device)
        adam: dict[str, Any] = {"betas": (o.beta1, o.beta2), "weight_decay": o.weight_decay}
        self.opt_gen = torch.optim.Adam(self.gen.parameters(), lr=o.lr, **adam)
        self.opt_dis = torch.optim.Adam(self.dis.parameters(), lr=o.dis_lr or o.lr, **adam)
        step = o.lr_step if o.lr_step > 0 else 1 << 62
        self.sched_gen = torch.optim.lr_scheduler.StepLR(self.opt_gen, step, o.lr_gamma)
        self.sched_dis = torch.optim.lr_scheduler.StepLR(self.opt_dis, step, o.lr_gamma)

    @property
    def eval_domain(self) -> str:
        """The path target images take through the classifier: 'b' (UNIT-DA) or 'a' (source-only)."""
        return "a" if self.cfg.da.source_only else "b"

    def train_step(self, x_a: torch.Tensor, y_a: torch.Tensor, x_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """One E/G update and one D update (only the classifier update when source-only)."""
        x_a, y_a, x_b = x_a.to(self.device), y_a.to(self.device), x_b.to(self.device)
        self.train()
        if self.cfg.da.source_only:
            loss = F.cross_entropy(self.dis.classify(x_a, "a"), y_a)
            self.opt_dis.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_dis.step()
            self.sched_dis.step()
            return {"cls_a": loss.detach()}
        w, da, gan_type = self.cfg.loss, self.cfg.da, self.cfg.model.gan_type
        g, n = self.gen, x_a.shape[0]

        # encoder/generator step, discriminator frozen
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
        self.opt_gen.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_gen.step()

        # discriminator step: GAN on both domains, class head on source labels only, and (feat_update dis)
        # the trunk learns to give x_ab the features of x_aa and x_ba those of x_bb
        set_requires_grad(self.dis, True)
        s_a, c_a, h_a = self.dis(torch.cat([x_a, fake_a.detach()]), "a")  # real, x_ba[, x_aa]
        s_b, c_b, h_b = self.dis(torch.cat([x_b, fake_b.detach()]), "b")  # real, x_ab[, x_bb]
        terms["dis_a"] = gan_d_loss([s[:n] for s in s_a], [s[n:] for s in s_a], gan_type)
        terms["dis_b"] = gan_d_loss([s[:n] for s in s_b], [s[n:] for s in s_b], gan_type)
        terms["cls_a"] = F.cross_entropy(c_a[:n], y_a)
        loss_d = w.gan_w * (terms["dis_a"] + terms["dis_b"]) + da.cls_w * terms["cls_a"]
        if da.cls_ab_w > 0:
            terms["cls_ab"] = F.cross_entropy(c_b[n : 2 * n], y_a)  # x_ab keeps the label of its x_a
            loss_d = loss_d + da.cls_ab_w * terms["cls_ab"]
        if da.feat_w > 0 and da.feat_update in ("dis", "both"):
            h_aa = h_a[2 * n :] if da.recon_fake else self.dis.features(x_aa.detach(), "a")
            h_bb = h_b[2 * n :] if da.recon_fake else self.dis.features(x_bb.detach(), "b")
            terms["feat_d"] = l1_loss(h_b[n : 2 * n], h_aa) + l1_loss(h_a[n : 2 * n], h_bb)
            loss_d = loss_d + da.feat_w * terms["feat_d"]
        self.opt_dis.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_dis.step()
        self.sched_gen.step()
        self.sched_dis.step()
        return {"loss_g": loss_g.detach(), "loss_d": loss_d.detach(), **{k: v.detach() for k, v in terms.items()}}

    @torch.no_grad()
    def classify(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """Class logits [N, K] in eval mode."""
        was_training = self.training
        self.eval()
        out = self.dis.classify(x.to(self.device), domain)
        self.train(was_training)
        return out

    def state(self) -> dict[str, Any]:
        return {
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
        if not weights_only:
            for key in ("opt_gen", "opt_dis", "sched_gen", "sched_dis"):
                getattr(self, key).load_state_dict(state[key])


def load_split(cfg: Config, domain: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All images [N, C, S, S] and labels [N] of one domain's split (for evaluation)."""
    ds = build_domain(cfg, domain, split, return_labels=True)
    if not getattr(ds, "return_labels", False):
        raise UnitganError(f"data.{domain} has no labels for split '{split}'; DA accuracy needs them")
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def evaluate_da(
    trainer: DATrainer, cfg: Config, splits: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
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


def train_da(cfg: Config, progress: bool = True) -> TrainResult:
    """Train (or resume) a UNIT-DA or source-only run; evaluates the last step and writes ``da_results.json``."""
    tc = cfg.train
    run_dir = Path(tc.out_dir).expanduser()
    run_dir.mkdir(parents=True, exist_ok=True)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    if cfg.da.source_only and cfg.model.input_nc_a != cfg.model.input_nc_b:
        raise UnitganError("config key 'da.source_only' needs model.input_nc_a == model.input_nc_b (one input path)")
    torch.manual_seed(tc.seed)
    trainer = DATrainer(cfg, device)
    state = load_latest(run_dir, map_location=device)
    step = 0
    if state is not None:
        trainer.load_state(state)
        step = int(state["step"])
        log.info("resuming from %s (step %d)", state["_path"], step)
    save_config(cfg, run_dir / "config.yaml")
    ds_a = build_domain(cfg, "a", "train", return_labels=True)
    if not getattr(ds_a, "return_labels", False):
        raise UnitganError(f"data.a '{cfg.data.a}' has no labels: UNIT-DA needs a labelled source")
    ds_b = build_domain(cfg, "b", "train")  # target labels are never read
    bs = cfg.data.batch_size
    it_a = iter(_cycle(build_loader(cfg, ds_a, seed=tc.seed * 2, start=step * bs, device=device)))
    it_b = iter(_cycle(build_loader(cfg, ds_b, seed=tc.seed * 2 + 1, start=step * bs, device=device)))
    if state is not None:
        _set_rng(state["rng"], device)
    logger = RunLogger(run_dir, tensorboard=False)
    kind = "source-only classifier" if cfg.da.source_only else "UNIT-DA"
    log.info("training %s on %s: %d -> %d steps, batch %d per domain", kind, device, step, tc.steps, bs)
    bar = tqdm(total=tc.steps, initial=step, disable=not progress, dynamic_ncols=True, unit="step")
    t0, step0, ckpt = time.time(), step, None
    test_splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with _StopFlag() as stop:
        try:
            while step < tc.steps and stop.signum is None:
                x_a, y_a = next(it_a)
                x_b = next(it_b)
                stats = trainer.train_step(x_a, y_a, x_b)
                step += 1
                bar.update(1)
                if step % tc.log_every == 0 or step == tc.steps:
                    values = {k: float(v) for k, v in stats.items()}
                    check_finite(values, step)
                    values["steps_per_s"] = (step - step0) / max(time.time() - t0, 1e-9)
                    logger.scalars(step, values)
                    bar.set_postfix(cls=f"{values['cls_a']:.3g}")
                if cfg.da.eval_every and step % cfg.da.eval_every == 0 and step < tc.steps:
                    # a learning curve for the log only: nothing is chosen by it
                    acc = evaluate_da(trainer, cfg, test_splits)
                    logger.scalars(step, {"target_acc": acc["target_acc"], "source_acc": acc["source_acc"]})
                if step % tc.ckpt_every == 0 or step == tc.steps:
                    st = trainer.state()
                    st.update(step=step, config=cfg.to_dict(), rng=_get_rng(device))
                    ckpt = save_checkpoint(st, run_dir, tc.keep_last)
        except KeyboardInterrupt:
            stop.signum = signal.SIGINT
        finally:
            bar.close()
            logger.close()
    if stop.signum is not None and step < tc.steps:  # checkpoint where it stopped; rerun to resume
        if ckpt is None or not ckpt.name.endswith(f"{step:09d}.pt"):
            st = trainer.state()
            st.update(step=step, config=cfg.to_dict(), rng=_get_rng(device))
            ckpt = save_checkpoint(st, run_dir, tc.keep_last)
        log.info("stopped by signal %d at step %d; checkpoint %s", stop.signum, step, ckpt)
        return TrainResult(run_dir, step, ckpt, interrupted=True)
    results = {"step": step, "kind": kind, **evaluate_da(trainer, cfg, test_splits)}
    (run_dir / "da_results.json").write_text(json.dumps(results, indent=2))
    log.info("%s: target accuracy %.4f, source accuracy %.4f", kind, results["target_acc"], results["source_acc"])
    return TrainResult(run_dir, step, ckpt)
