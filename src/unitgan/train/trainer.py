"""The UNIT trainer: owns the networks, optimisers and schedulers, and runs one training step.

A step is one encoder/generator update followed by one discriminator update. The translations computed for
the generator step are reused (detached) by the discriminator step, so the generators run once per step.
Each phase is a module whose ``forward()`` returns its loss (``GenPhase``, ``DisPhase``), so that under
torchrun DistributedDataParallel can wrap it: DDP averages the gradients of the parameters of the module
whose ``forward()`` it hooks. ``train.accumulate`` splits a step into micro-batches.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from unitgan.config import Config
from unitgan.losses import GenOutputs, gan_d_loss, unit_gen_loss
from unitgan.models import UNITGenerator, build_discriminators, build_generator
from unitgan.models.layers import ResBlock
from unitgan.runtime import autocast, check_precision, set_requires_grad

log = logging.getLogger(__name__)


def _maybe_no_sync(module: nn.Module, sync: bool):
    """DDP's ``no_sync()`` on inner micro-batches (gradients stay local until the last one)."""
    if sync or not hasattr(module, "no_sync"):
        return contextlib.nullcontext()
    return module.no_sync()


def _gen_forward(g: UNITGenerator, x_a: torch.Tensor, x_b: torch.Tensor) -> GenOutputs:
    n = x_a.shape[0]
    mu_a = g.encode(x_a, "a")  # [N, C, h, w]
    mu_b = g.encode(x_b, "b")
    z = UNITGenerator.sample(torch.cat([mu_a, mu_b]))  # [2N, C, h, w]: z_a then z_b
    h = g.dec_shared(z)  # the shared generator blocks run once for both decoders
    x_aa, x_ba = g.dec_a(h).split(n)  # [N, Ca, H, W] each
    x_ab, x_bb = g.dec_b(h).split(n)
    mu_ba = g.encode(x_ba, "a")
    mu_ab = g.encode(x_ab, "b")
    x_aba = g.decode(UNITGenerator.sample(mu_ab), "a")
    x_bab = g.decode(UNITGenerator.sample(mu_ba), "b")
    return GenOutputs(x_a, x_b, mu_a, mu_b, x_aa, x_bb, x_ab, x_ba, mu_ab, mu_ba, x_aba, x_bab)


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

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, dict, GenOutputs]:
        dis_a, dis_b = self._dis
        out = _gen_forward(self.gen, x_a, x_b)
        loss, terms = unit_gen_loss(out, dis_b(out.x_ab), dis_a(out.x_ba), self.loss_cfg, self.gan_type)
        return loss, terms, out


class DisPhase(nn.Module):
    """The discriminator loss as one forward: real and (detached) translated images of both domains."""

    def __init__(self, dis_a: nn.Module, dis_b: nn.Module, cfg: Config):
        super().__init__()
        self.dis_a, self.dis_b = dis_a, dis_b
        self.gan_w, self.gan_type = cfg.loss.gan_w, cfg.model.gan_type

    def forward(
        self, x_a: torch.Tensor, x_b: torch.Tensor, x_ab: torch.Tensor, x_ba: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = x_a.shape[0]
        d_a = self.dis_a(torch.cat([x_a, x_ba]))  # real and fake in one pass
        d_b = self.dis_b(torch.cat([x_b, x_ab]))
        loss_d_a = gan_d_loss([s[:n] for s in d_a], [s[n:] for s in d_a], self.gan_type)
        loss_d_b = gan_d_loss([s[:n] for s in d_b], [s[n:] for s in d_b], self.gan_type)
        return self.gan_w * (loss_d_a + loss_d_b), loss_d_a, loss_d_b


class UNITTrainer(nn.Module):
    """Networks (``gen`` with ``enc_a``/``enc_b``/``dec_a``/``dec_b`` and shared blocks, ``dis_a``,
    ``dis_b``), their Adam optimisers and step schedulers."""

    def __init__(self, cfg: Config, device: torch.device, ddp: bool = False):
        """``ddp``: wrap the E/G and D passes in DistributedDataParallel (the process group must exist)."""
        super().__init__()
        self.cfg = cfg
        self.device = device
        m, o = cfg.model, cfg.optim
        self.gen = build_generator(m)
        self.dis_a, self.dis_b = build_discriminators(m)
        if cfg.train.activation_checkpointing:
            for module in self.gen.modules():
                if isinstance(module, ResBlock):
                    module.checkpointing = True
        self.to(device)
        check_precision(device, cfg.train.precision)
        if cfg.train.channels_last:
            self.to(memory_format=torch.channels_last)
        if cfg.train.compile:  # in place: state-dict keys stay those of the plain modules
            g = self.gen
            for module in (
                g.enc_a,
                g.enc_b,
                g.enc_shared,
                g.dec_shared,
                g.dec_a,
                g.dec_b,
                self.dis_a,
                self.dis_b,
            ):
                module.compile()

        adam: dict[str, Any] = {"betas": (o.beta1, o.beta2), "weight_decay": o.weight_decay}
        if o.fused and device.type in ("cuda", "cpu"):  # one kernel per update (about 4x faster on a CPU)
            adam["fused"] = True
        elif device.type != "cpu":
            adam["foreach"] = True
        self.opt_gen = torch.optim.Adam(self.gen.parameters(), lr=o.lr, **adam)
        dis_params = list(nn.ModuleList([self.dis_a, self.dis_b]).parameters())  # a shared layer counts once
        self.opt_dis = torch.optim.Adam(dis_params, lr=o.dis_lr or o.lr, **adam)
        step = o.lr_step if o.lr_step > 0 else 1 << 62
        self.sched_gen = torch.optim.lr_scheduler.StepLR(self.opt_gen, step, o.lr_gamma)
        self.sched_dis = torch.optim.lr_scheduler.StepLR(self.opt_dis, step, o.lr_gamma)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")
        self.skip_nonfinite = cfg.train.nonfinite == "skip"
        self.last_skipped = False

        # The two phases as modules whose forward() computes a loss, so that DistributedDataParallel (which
        # hooks forward) can wrap them. Kept in a plain dict: they hold the same networks, not new ones.
        gen_phase: nn.Module = GenPhase(self.gen, self.dis_a, self.dis_b, cfg)
        dis_phase: nn.Module = DisPhase(self.dis_a, self.dis_b, cfg)
        if ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            if "batch" in (cfg.model.norm, cfg.model.up_norm, cfg.model.dis_norm):
                log.warning("batch norm under DDP: statistics come from each rank's own batch (per-rank batch size)")
            ids = [device.index] if device.type == "cuda" else None
            gen_phase, dis_phase = DDP(gen_phase, device_ids=ids), DDP(dis_phase, device_ids=ids)
        self._phases = {"gen": gen_phase, "dis": dis_phase}

    @property
    def gen_phase(self) -> nn.Module:
        return self._phases["gen"]

    @property
    def dis_phase(self) -> nn.Module:
        return self._phases["dis"]

    # -- forward passes -----------------------------------------------------------------------------------

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.train.channels_last else x

    def gen_forward(self, x_a: torch.Tensor, x_b: torch.Tensor) -> GenOutputs:
        """Encode both domains once, decode reconstructions and translations, then the cycle."""
        return _gen_forward(self.gen, x_a, x_b)

    # -- one training step --------------------------------------------------------------------------------

    def train_step(
        self, x_a: torch.Tensor | Sequence[torch.Tensor], x_b: torch.Tensor | Sequence[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """One E/G update and one D update. Returns detached loss tensors (no host sync here).

        ``x_a``/``x_b`` are one batch each, or equally long lists of micro-batches (``train.accumulate``):
        each micro-batch runs the E/G and D passes with its loss divided by their number, gradients add up,
        and the optimisers step once, so K micro-batches of B equal one batch of K*B (all losses are means
        over samples). The D pass of each micro-batch reuses its detached translations, as in a plain step,
        and no parameter changes before both optimisers step, so the order of passes does not matter.
        Under DDP the gradients are averaged across ranks once, in the backward of the last micro-batch.
        With ``train.nonfinite=skip`` a step whose losses are not all finite applies no update at all (one
        host sync per step); ``last_skipped`` says whether it did.
        """
        xs_a = list(x_a) if isinstance(x_a, (list, tuple)) else [x_a]
        xs_b = list(x_b) if isinstance(x_b, (list, tuple)) else [x_b]
        if len(xs_a) != len(xs_b) or not xs_a:
            raise ValueError(f"train_step needs as many micro-batches of A as of B, got {len(xs_a)} and {len(xs_b)}")
        k = len(xs_a)
        self.train()
        self.opt_gen.zero_grad(set_to_none=True)
        self.opt_dis.zero_grad(set_to_none=True)
        totals: dict[str, torch.Tensor] = {}
        for i, (xa, xb) in enumerate(zip(xs_a, xs_b, strict=True)):
            stats = self._micro_step(self._prep(xa), self._prep(xb), k, sync=i == k - 1)
            for name, v in stats.items():
                totals[name] = totals[name] + v if name in totals else v
        # loss_g sums every G term and loss_d both D terms, so these two cover all of them
        losses = torch.stack([totals["loss_g"], totals["loss_d"]])
        self.last_skipped = self.skip_nonfinite and not bool(torch.isfinite(losses).all())
        if self.last_skipped:
            self.opt_gen.zero_grad(set_to_none=True)
            self.opt_dis.zero_grad(set_to_none=True)
        else:
            self._clip(self.opt_gen, self.gen)
            self.scaler.step(self.opt_gen)
            self._clip(self.opt_dis, nn.ModuleList([self.dis_a, self.dis_b]))
            self.scaler.step(self.opt_dis)
            self.scaler.update()
        self.sched_gen.step()  # the schedule follows the step count, skipped steps included
        self.sched_dis.step()
        return {name: v / k for name, v in totals.items()} if k > 1 else totals

    def _micro_step(self, x_a: torch.Tensor, x_b: torch.Tensor, k: int, sync: bool) -> dict[str, torch.Tensor]:
        """Forward and backward of the E/G loss, then of the D loss, for one micro-batch."""
        dev, precision = self.device, self.cfg.train.precision
        # encoder/generator pass: discriminators are frozen (they only pass gradients through)
        set_requires_grad(self.dis_a, False)
        set_requires_grad(self.dis_b, False)
        with _maybe_no_sync(self.gen_phase, sync):
            with autocast(dev, precision):
                loss_g, terms, out = self.gen_phase(x_a, x_b)
            self.scaler.scale(loss_g / k if k > 1 else loss_g).backward()
        # discriminator pass on the same translations, detached
        set_requires_grad(self.dis_a, True)
        set_requires_grad(self.dis_b, True)
        with _maybe_no_sync(self.dis_phase, sync):
            with autocast(dev, precision):
                loss_d, loss_d_a, loss_d_b = self.dis_phase(x_a, x_b, out.x_ab.detach(), out.x_ba.detach())
            self.scaler.scale(loss_d / k if k > 1 else loss_d).backward()
        return {
            "loss_g": loss_g.detach(),
            "loss_d": loss_d.detach(),
            "dis_a": loss_d_a.detach(),
            "dis_b": loss_d_b.detach(),
            **terms,
        }

    def weights_finite(self) -> bool:
        """Whether every weight of every network is finite (one host sync)."""
        flags = [torch.isfinite(p).all() for p in self.parameters()]
        return bool(torch.stack(flags).all())

    def _clip(self, opt: torch.optim.Optimizer, module: nn.Module) -> None:
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(module.parameters(), self.cfg.optim.grad_clip)

    # -- inference and state ------------------------------------------------------------------------------

    @torch.no_grad()
    def sample_rows(self, x_a: torch.Tensor, x_b: torch.Tensor) -> list[torch.Tensor]:
        """Rows for an image grid: x_a, x_aa, x_ab, x_aba and x_b, x_bb, x_ba, x_bab (z = mu)."""
        was_training = self.training
        self.eval()
        g = self.gen
        x_a, x_b = self._prep(x_a), self._prep(x_b)
        with autocast(self.device, self.cfg.train.precision):
            mu_a, mu_b = g.encode(x_a, "a"), g.encode(x_b, "b")
            x_aa, x_ab = g.decode(mu_a, "a"), g.decode(mu_a, "b")
            x_bb, x_ba = g.decode(mu_b, "b"), g.decode(mu_b, "a")
            x_aba = g.decode(g.encode(x_ab, "b"), "a")
            x_bab = g.decode(g.encode(x_ba, "a"), "b")
        self.train(was_training)
        return [t.float() for t in (x_a, x_aa, x_ab, x_aba, x_b, x_bb, x_ba, x_bab)]

    def state(self) -> dict[str, Any]:
        return {
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
        self.dis_a.load_state_dict(state["dis_a"])
        self.dis_b.load_state_dict(state["dis_b"])
        self.opt_gen.load_state_dict(state["opt_gen"])
        self.opt_dis.load_state_dict(state["opt_dis"])
        self.sched_gen.load_state_dict(state["sched_gen"])
        self.sched_dis.load_state_dict(state["sched_dis"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
