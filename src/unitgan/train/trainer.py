"""The UNIT trainer: owns the networks, optimisers and schedulers, and runs one training step.

A step is one encoder/generator (E/G) update and one discriminator (D) update, in one of two orders
(``train.update_order``):

- ``simultaneous``: both gradients are taken at the step's starting weights; the translations computed for
  the E/G loss are reused (detached) by the D loss, so the generators run once per step;
- ``alternating`` (the authors' version_02 ``cocogan_trainer.py``): the D loss on fresh translations made by
  the current generators, the D optimiser steps, then the E/G loss is computed against the updated D.

Each phase is a module whose ``forward()`` returns its loss (``GenPhase``, ``DisPhase``), so that under
torchrun DistributedDataParallel can wrap it: DDP averages the gradients of the parameters of the module
whose ``forward()`` it hooks. ``train.accumulate`` splits a step into micro-batches.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unitgan.config import Config
from unitgan.data import build_domain
from unitgan.errors import UnitganError
from unitgan.losses import GenOutputs, gan_d_loss, unit_gen_loss
from unitgan.models import UNITGenerator, build_discriminators, build_generator
from unitgan.models.augment import diff_augment
from unitgan.models.layers import NearestUpConv, ResBlock
from unitgan.runtime import autocast, check_precision, set_requires_grad
from unitgan.train.base import (
    TrainData,
    WeightAverage,
    apply_optim_settings,
    build_adam,
    build_step_lr,
    changed_optim_keys,
    endless_batches,
    maybe_no_sync,
    weights_finite,
)

log = logging.getLogger(__name__)


def gen_forward(g: UNITGenerator, x_a: torch.Tensor, x_b: torch.Tensor) -> GenOutputs:
    n = x_a.shape[0]
    mu_a = g.encode(x_a, "a")  # [N, C, h, w]
    mu_b = g.encode(x_b, "b")
    z = UNITGenerator.sample(torch.cat([mu_a, mu_b]))  # [2N, C, h, w]: z_a then z_b
    z_a, z_b = z.split(n)
    h = g.dec_shared(z)  # the shared generator blocks run once for both decoders
    x_aa, x_ba = g.dec_a(h).split(n)  # [N, Ca, H, W] each
    x_ab, x_bb = g.dec_b(h).split(n)
    mu_ba = g.encode(x_ba, "a")
    mu_ab = g.encode(x_ab, "b")
    z_ab = UNITGenerator.sample(mu_ab)
    x_aba = g.decode(z_ab, "a")
    z_ba = UNITGenerator.sample(mu_ba)
    x_bab = g.decode(z_ba, "b")
    return GenOutputs(x_a, x_b, mu_a, mu_b, x_aa, x_bb, x_ab, x_ba, mu_ab, mu_ba, x_aba, x_bab, z_a, z_b, z_ab, z_ba)


class GenPhase(nn.Module):
    """The encoder/generator loss of a batch as one forward: (x_a, x_b) -> (loss, named terms, outputs).

    Only ``gen`` is a submodule (its parameters are the ones DDP averages); the discriminators are held
    outside the module tree, frozen during this phase, and only pass gradients back to the translations.
    """

    def __init__(self, gen: UNITGenerator, dis_a: nn.Module, dis_b: nn.Module, cfg: Config):
        super().__init__()
        self.gen = gen
        self._dis = (dis_a, dis_b)  # a tuple: not registered, so not part of this module's parameters
        self.loss_cfg, self.gan_type = cfg.loss, cfg.model.gan_type
        self.diffaug = cfg.loss.diffaug_policy()

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, dict, GenOutputs]:
        dis_a, dis_b = self._dis
        out = gen_forward(self.gen, x_a, x_b)
        d_ab = dis_b(diff_augment(out.x_ab, self.diffaug))  # the discriminators only ever see augmented images
        d_ba = dis_a(diff_augment(out.x_ba, self.diffaug))
        loss, terms = unit_gen_loss(out, d_ab, d_ba, self.loss_cfg, self.gan_type)
        return loss, terms, out


class DisPhase(nn.Module):
    """The discriminator loss as one forward: real and (detached) translated images of both domains."""

    def __init__(self, dis_a: nn.Module, dis_b: nn.Module, cfg: Config, gan_w: float | None = None):
        """``gan_w``: the GAN weight (None = UNIT's ``loss.gan_w``)."""
        super().__init__()
        self.dis_a, self.dis_b = dis_a, dis_b
        self.gan_w, self.gan_type = cfg.loss.gan_w if gan_w is None else gan_w, cfg.model.gan_type
        self.diffaug = cfg.loss.diffaug_policy()

    def forward(
        self, x_a: torch.Tensor, x_b: torch.Tensor, x_ab: torch.Tensor, x_ba: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = x_a.shape[0]
        d_a = self.dis_a(diff_augment(torch.cat([x_a, x_ba]), self.diffaug))  # real and fake in one pass
        d_b = self.dis_b(diff_augment(torch.cat([x_b, x_ab]), self.diffaug))
        loss_d_a = gan_d_loss([s[:n] for s in d_a], [s[n:] for s in d_a], self.gan_type)
        loss_d_b = gan_d_loss([s[:n] for s in d_b], [s[n:] for s in d_b], self.gan_type)
        return self.gan_w * (loss_d_a + loss_d_b), loss_d_a, loss_d_b


class UNITTrainer(nn.Module):
    """Networks (``gen`` with ``enc_a``/``enc_b``/``dec_a``/``dec_b`` and shared blocks, ``dis_a``,
    ``dis_b``), their Adam optimisers and step schedulers. Implements :class:`unitgan.train.base.Trainer`."""

    state_keys = ("gen", "dis_a", "dis_b", "opt_gen", "opt_dis")
    eval_every = 0  # no periodic evaluation (``unitgan evaluate`` scores a checkpoint)

    def __init__(self, cfg: Config, device: torch.device, ddp: bool = False):
        """``ddp``: wrap the E/G and D passes in DistributedDataParallel (the process group must exist)."""
        super().__init__()
        self.cfg = cfg
        self.device = device
        self.gen = build_generator(cfg.model)
        self.dis_a, self.dis_b = build_discriminators(cfg.model)
        for module in self.gen.modules():
            if isinstance(module, ResBlock):
                module.checkpointing = cfg.train.activation_checkpointing
            if isinstance(module, NearestUpConv):
                module.impl = cfg.train.upsample_impl
        # train.ema: the average of the generator's weights that inference uses (made before any compile)
        self.gen_ema = WeightAverage(self.gen, cfg.train.ema) if cfg.train.ema > 0 else None
        self.to(device)
        check_precision(device, cfg.train.precision)
        if cfg.train.channels_last:
            self.to(memory_format=torch.channels_last)
        if cfg.train.compile and cfg.train.compile_scope == "modules":  # in place: state-dict keys unchanged
            for module in (*self.gen.children(), self.dis_a, self.dis_b):
                module.compile()

        o = cfg.optim
        self.opt_gen = build_adam(self.gen.parameters(), o.lr, cfg, device)
        dis_params = list(nn.ModuleList([self.dis_a, self.dis_b]).parameters())  # a shared layer counts once
        self.opt_dis = build_adam(dis_params, o.dis_lr or o.lr, cfg, device)
        self.sched_gen, self.sched_dis = build_step_lr(self.opt_gen, cfg), build_step_lr(self.opt_dis, cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")
        self.skip_nonfinite = cfg.train.nonfinite == "skip"
        self.last_skipped = False
        self.gen_stepped = False  # whether the last train_step updated the generator (the average follows it)
        self.train_sets: tuple = ()  # set by data()

        # The two phases as modules whose forward() computes a loss, so that DistributedDataParallel (which
        # hooks forward) can wrap them. Kept in a plain dict: they hold the same networks, not new ones.
        gen_phase, dis_phase = self.build_phases(cfg)
        if ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            if "batch" in (cfg.model.norm, cfg.model.up_norm, cfg.model.dis_norm):
                log.warning("batch norm under DDP: statistics come from each rank's own batch (per-rank batch size)")
            ids = [device.index] if device.type == "cuda" else None
            gen_phase, dis_phase = DDP(gen_phase, device_ids=ids), DDP(dis_phase, device_ids=ids)
        if cfg.train.compile and cfg.train.compile_scope == "phases":  # in place, as above; the phases hold no state
            # the latent noise drawn inside the E/G phase comes from torch's generator as in eager mode (inductor
            # would otherwise draw other numbers), so a compiled run computes what an eager run computes
            import torch._inductor.config as inductor_config

            inductor_config.fallback_random = True
            gen_phase.compile()
            dis_phase.compile()
        self._phases = {"gen": gen_phase, "dis": dis_phase}

    def build_phases(self, cfg: Config) -> tuple[nn.Module, nn.Module]:
        """The E/G and D phases of this model (a subclass for another model family overrides this)."""
        return GenPhase(self.gen, self.dis_a, self.dis_b, cfg), DisPhase(self.dis_a, self.dis_b, cfg)

    def fresh_translations(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_ab, x_ba of the current networks for the D update of the alternating order (no gradients)."""
        mu_a, mu_b = self.gen.encode(x_a, "a"), self.gen.encode(x_b, "b")  # [N, C, h, w]
        return self.gen.decode(UNITGenerator.sample(mu_a), "b"), self.gen.decode(UNITGenerator.sample(mu_b), "a")

    @property
    def inference_gen(self) -> nn.Module:
        """The generator that translates: the weight average with ``train.ema``, else the trained one."""
        return self.gen if self.gen_ema is None else self.gen_ema.net

    @property
    def gen_phase(self) -> nn.Module:
        return self._phases["gen"]

    @property
    def dis_phase(self) -> nn.Module:
        return self._phases["dis"]

    # -- data ---------------------------------------------------------------------------------------------

    def data(self, start_step: int, rank: int, world_size: int) -> TrainData:
        """Domains A and B, each its own endless loader; a step's batch is ``(x_a, x_b)`` (lists of
        ``train.accumulate`` micro-batches when that is > 1)."""
        cfg, seed, k = self.cfg, self.cfg.train.seed, self.cfg.train.accumulate
        ds_a, ds_b = build_domain(cfg, "a", "train"), build_domain(cfg, "b", "train")
        self.train_sets = (ds_a, ds_b)  # the image grid falls back on them when there is no test split
        it_a = endless_batches(cfg, ds_a, seed * 2 + 0, start_step, rank, world_size, self.device)
        it_b = endless_batches(cfg, ds_b, seed * 2 + 1, start_step, rank, world_size, self.device)
        if k == 1:
            return TrainData(lambda: (next(it_a), next(it_b)), (ds_a, ds_b), (it_a, it_b))
        return TrainData(
            lambda: ([next(it_a) for _ in range(k)], [next(it_b) for _ in range(k)]), (ds_a, ds_b), (it_a, it_b)
        )

    def fixed_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The same ``train.image_rows`` images of each domain for every image grid: from the test split
        when it exists, else from the training sets of :meth:`data`."""
        cfg, k = self.cfg, self.cfg.train.image_rows
        try:
            ds_a, ds_b = build_domain(cfg, "a", "test"), build_domain(cfg, "b", "test")
        except UnitganError:
            ds_a, ds_b = self.train_sets

        def first(item):
            return item[0] if isinstance(item, (tuple, list)) else item

        return (
            torch.stack([first(ds_a[i % len(ds_a)]) for i in range(k)]),
            torch.stack([first(ds_b[i % len(ds_b)]) for i in range(k)]),
        )

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A batch on the trainer's device, in its memory layout."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.train.channels_last else x

    # -- one training step --------------------------------------------------------------------------------

    def train_step(
        self, x_a: torch.Tensor | Sequence[torch.Tensor], x_b: torch.Tensor | Sequence[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """One E/G update and one D update, in the order ``train.update_order``. Returns detached loss
        tensors (no host sync here).

        ``x_a``/``x_b`` are one batch each, or equally long lists of micro-batches (``train.accumulate``):
        each micro-batch runs its passes with its loss divided by their number, gradients add up, and each
        optimiser steps once, so K micro-batches of B equal one batch of K*B (all losses are means over
        samples). Under DDP the gradients are averaged across ranks once per phase, in the backward of the
        last micro-batch. With ``train.nonfinite=skip`` an update whose loss is not finite is not applied
        (one host sync per update): in ``simultaneous`` order the whole step is skipped; in ``alternating``
        order a bad D loss skips the D update and a bad E/G loss the E/G update. ``last_skipped`` says
        whether any update was skipped.
        """
        xs_a = list(x_a) if isinstance(x_a, (list, tuple)) else [x_a]
        xs_b = list(x_b) if isinstance(x_b, (list, tuple)) else [x_b]
        if len(xs_a) != len(xs_b) or not xs_a:
            raise ValueError(f"train_step needs as many micro-batches of A as of B, got {len(xs_a)} and {len(xs_b)}")
        batches = [(self.prepare(xa), self.prepare(xb)) for xa, xb in zip(xs_a, xs_b, strict=True)]
        self.train()
        self.opt_gen.zero_grad(set_to_none=True)
        self.opt_dis.zero_grad(set_to_none=True)
        if self.cfg.train.update_order == "alternating":
            totals = self._alternating_step(batches)
        else:
            totals = self._simultaneous_step(batches)
        if self.gen_ema is not None and self.gen_stepped:
            self.gen_ema.update(self.gen)
        self.sched_gen.step()  # the schedule follows the step count, skipped steps included
        self.sched_dis.step()
        k = len(batches)
        return {name: v / k for name, v in totals.items()} if k > 1 else totals

    def _simultaneous_step(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """E/G and D gradients at the same weights; each micro-batch's D pass reuses its detached
        translations, and no weight changes before both optimisers step."""
        k = len(batches)
        totals: dict[str, torch.Tensor] = {}
        for i, (x_a, x_b) in enumerate(batches):
            sync = i == k - 1
            loss_g, terms, out = self._gen_backward(x_a, x_b, k, sync)
            loss_d = self._dis_backward(x_a, x_b, out.x_ab.detach(), out.x_ba.detach(), k, sync)
            _add(totals, {"loss_g": loss_g, "loss_d": loss_d[0], "dis_a": loss_d[1], "dis_b": loss_d[2], **terms})
        # loss_g sums every G term and loss_d both D terms, so these two cover all of them
        self.last_skipped = self.skip_nonfinite and not bool(
            torch.isfinite(torch.stack([totals["loss_g"], totals["loss_d"]])).all()
        )
        self.gen_stepped = not self.last_skipped
        if self.last_skipped:
            self.opt_gen.zero_grad(set_to_none=True)
            self.opt_dis.zero_grad(set_to_none=True)
        else:
            self._clip(self.opt_gen, self.gen)
            self.scaler.step(self.opt_gen)
            self._clip(self.opt_dis, nn.ModuleList([self.dis_a, self.dis_b]))
            self.scaler.step(self.opt_dis)
            self.scaler.update()
        return totals

    def _alternating_step(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """D update on fresh translations of the current generators, then the E/G update against the
        updated discriminators (the translations are computed again, with gradients)."""
        k = len(batches)
        totals: dict[str, torch.Tensor] = {}
        for i, (x_a, x_b) in enumerate(batches):
            with torch.no_grad(), autocast(self.device, self.cfg.train.precision):
                x_ab, x_ba = self.fresh_translations(x_a, x_b)
            loss_d, loss_d_a, loss_d_b = self._dis_backward(x_a, x_b, x_ab, x_ba, k, sync=i == k - 1)
            _add(totals, {"loss_d": loss_d, "dis_a": loss_d_a, "dis_b": loss_d_b})
        skip_d = self.skip_nonfinite and not bool(torch.isfinite(totals["loss_d"]))
        if skip_d:
            self.opt_dis.zero_grad(set_to_none=True)
        else:
            self._clip(self.opt_dis, nn.ModuleList([self.dis_a, self.dis_b]))
            self.scaler.step(self.opt_dis)
        for i, (x_a, x_b) in enumerate(batches):
            loss_g, terms, _ = self._gen_backward(x_a, x_b, k, sync=i == k - 1)
            _add(totals, {"loss_g": loss_g, **terms})
        skip_g = self.skip_nonfinite and not bool(torch.isfinite(totals["loss_g"]))
        self.gen_stepped = not skip_g
        if skip_g:
            self.opt_gen.zero_grad(set_to_none=True)
        else:
            self._clip(self.opt_gen, self.gen)
            self.scaler.step(self.opt_gen)
        if not (skip_d and skip_g):  # the scaler adapts its scale to the updates it saw
            self.scaler.update()
        self.last_skipped = skip_d or skip_g
        return totals

    def _gen_backward(
        self, x_a: torch.Tensor, x_b: torch.Tensor, k: int, sync: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], GenOutputs]:
        """Forward and backward of the E/G loss of one micro-batch; the discriminators are frozen (they
        only pass gradients back to the translations)."""
        set_requires_grad(self.dis_a, False)
        set_requires_grad(self.dis_b, False)
        with maybe_no_sync(self.gen_phase, sync):
            with autocast(self.device, self.cfg.train.precision):
                loss_g, terms, out = self.gen_phase(x_a, x_b)
            self.scaler.scale(loss_g / k if k > 1 else loss_g).backward()
        set_requires_grad(self.dis_a, True)
        set_requires_grad(self.dis_b, True)
        return loss_g.detach(), terms, out

    def _dis_backward(
        self, x_a: torch.Tensor, x_b: torch.Tensor, x_ab: torch.Tensor, x_ba: torch.Tensor, k: int, sync: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward and backward of the D loss of one micro-batch on real and (detached) translated images."""
        with maybe_no_sync(self.dis_phase, sync):
            with autocast(self.device, self.cfg.train.precision):
                loss_d, loss_d_a, loss_d_b = self.dis_phase(x_a, x_b, x_ab, x_ba)
            self.scaler.scale(loss_d / k if k > 1 else loss_d).backward()
        return loss_d.detach(), loss_d_a.detach(), loss_d_b.detach()

    def _clip(self, opt: torch.optim.Optimizer, module: nn.Module) -> None:
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(module.parameters(), self.cfg.optim.grad_clip)

    # -- what the loop reads ------------------------------------------------------------------------------

    def weights_finite(self) -> bool:
        return weights_finite(self)

    def learning_rate(self) -> float:
        return self.opt_gen.param_groups[0]["lr"]

    def evaluate(self, step: int, run_dir: Path, final: bool) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def sample_rows(self, fixed: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        """Rows for an image grid: x_a, x_aa, x_ab, x_aba and x_b, x_bb, x_ba, x_bab (z = mu), by the
        generator that translates (:attr:`inference_gen`)."""
        was_training = self.training
        self.eval()
        g = self.inference_gen
        x_a, x_b = self.prepare(fixed[0]), self.prepare(fixed[1])
        with autocast(self.device, self.cfg.train.precision):
            mu_a, mu_b = g.encode(x_a, "a"), g.encode(x_b, "b")
            x_aa, x_ab = g.decode(mu_a, "a"), g.decode(mu_a, "b")
            x_bb, x_ba = g.decode(mu_b, "b"), g.decode(mu_b, "a")
            x_aba = g.decode(g.encode(x_ab, "b"), "a")
            x_bab = g.decode(g.encode(x_ba, "a"), "b")
        self.train(was_training)
        return [t.float() for t in (x_a, x_aa, x_ab, x_aba, x_b, x_bb, x_ba, x_bab)]

    def state(self) -> dict[str, Any]:
        """Everything to resume; with ``train.ema`` also ``gen_ema`` (the average, which inference prefers to
        ``gen``) and ``ema_updates``."""
        average = {}
        if self.gen_ema is not None:
            average = {"gen_ema": self.gen_ema.net.state_dict(), "ema_updates": self.gen_ema.updates}
        return {
            **average,
            "gen": self.gen.state_dict(),
            "dis_a": self.dis_a.state_dict(),
            "dis_b": self.dis_b.state_dict(),
            "opt_gen": self.opt_gen.state_dict(),
            "opt_dis": self.opt_dis.state_dict(),
            "sched_gen": self.sched_gen.state_dict(),
            "sched_dis": self.sched_dis.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.gen.load_state_dict(state["gen"])
        if self.gen_ema is not None:
            self.gen_ema.load(state.get("gen_ema"), state.get("ema_updates", 0), self.gen)
        self.dis_a.load_state_dict(state["dis_a"])
        self.dis_b.load_state_dict(state["dis_b"])
        self.opt_gen.load_state_dict(state["opt_gen"])
        self.opt_dis.load_state_dict(state["opt_dis"])
        self.sched_gen.load_state_dict(state["sched_gen"])
        self.sched_dis.load_state_dict(state["sched_dis"])
        if changed_optim_keys(state.get("config", {}), self.cfg):  # the config's optimiser settings win
            o = self.cfg.optim
            apply_optim_settings(self.opt_gen, self.sched_gen, o.lr, self.cfg)
            apply_optim_settings(self.opt_dis, self.sched_dis, o.dis_lr or o.lr, self.cfg)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def _add(totals: dict[str, torch.Tensor], stats: dict[str, torch.Tensor]) -> None:
    """Sum one micro-batch's statistics into ``totals``."""
    for name, v in stats.items():
        totals[name] = totals[name] + v if name in totals else v
