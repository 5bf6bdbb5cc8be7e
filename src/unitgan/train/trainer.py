"""The UNIT trainer: owns the networks, optimisers and schedulers, and runs one training step.

A step is one encoder/generator update followed by one discriminator update. The translations computed for
the generator step are reused (detached) by the discriminator step, so the generators run once per step.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from unitgan.config import Config
from unitgan.losses import GenOutputs, gan_d_loss, unit_gen_loss
from unitgan.models import MultiScaleDiscriminator, UNITGenerator
from unitgan.train.perf import check_precision

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


class UNITTrainer(nn.Module):
    """Networks (``gen`` with ``enc_a``/``enc_b``/``dec_a``/``dec_b`` and shared blocks, ``dis_a``,
    ``dis_b``), their Adam optimisers and step schedulers."""

    def __init__(self, cfg: Config, device: torch.device):
        super().__init__()
        self.cfg = cfg
        self.device = device
        m, o = cfg.model, cfg.optim
        self.gen = UNITGenerator(m)
        self.dis_a = MultiScaleDiscriminator(m, m.input_nc_a)
        self.dis_b = MultiScaleDiscriminator(m, m.input_nc_b)
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
        dis_params = list(self.dis_a.parameters()) + list(self.dis_b.parameters())
        self.opt_dis = torch.optim.Adam(dis_params, lr=o.dis_lr or o.lr, **adam)
        step = o.lr_step if o.lr_step > 0 else 1 << 62
        self.sched_gen = torch.optim.lr_scheduler.StepLR(self.opt_gen, step, o.lr_gamma)
        self.sched_dis = torch.optim.lr_scheduler.StepLR(self.opt_dis, step, o.lr_gamma)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")

    # -- forward passes -----------------------------------------------------------------------------------

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.train.channels_last else x

    def gen_forward(self, x_a: torch.Tensor, x_b: torch.Tensor) -> GenOutputs:
        """Encode both domains once, decode reconstructions and translations, then the cycle."""
        g = self.gen
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

    # -- one training step --------------------------------------------------------------------------------

    def train_step(self, x_a: torch.Tensor, x_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """One E/G update and one D update. Returns detached loss tensors (no host sync here)."""
        cfg, dev = self.cfg, self.device
        x_a, x_b = self._prep(x_a), self._prep(x_b)
        self.train()

        # encoder/generator step: discriminators are frozen
        _set_requires_grad(self.dis_a, False)
        _set_requires_grad(self.dis_b, False)
        with autocast(dev, cfg.train.precision):
            out = self.gen_forward(x_a, x_b)
            d_fake_ab = self.dis_b(out.x_ab)
            d_fake_ba = self.dis_a(out.x_ba)
            loss_g, terms = unit_gen_loss(out, d_fake_ab, d_fake_ba, cfg.loss, cfg.model.gan_type)
        self.opt_gen.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward()
        self._clip(self.opt_gen, self.gen)
        self.scaler.step(self.opt_gen)

        # discriminator step on the same translations, detached
        _set_requires_grad(self.dis_a, True)
        _set_requires_grad(self.dis_b, True)
        x_ab, x_ba = out.x_ab.detach(), out.x_ba.detach()
        with autocast(dev, cfg.train.precision):
            d_a = self.dis_a(torch.cat([x_a, x_ba]))  # real and fake in one pass
            d_b = self.dis_b(torch.cat([x_b, x_ab]))
            n = x_a.shape[0]
            loss_d_a = gan_d_loss([s[:n] for s in d_a], [s[n:] for s in d_a], cfg.model.gan_type)
            loss_d_b = gan_d_loss([s[:n] for s in d_b], [s[n:] for s in d_b], cfg.model.gan_type)
            loss_d = cfg.loss.gan_w * (loss_d_a + loss_d_b)
        self.opt_dis.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d).backward()
        self._clip(self.opt_dis, nn.ModuleList([self.dis_a, self.dis_b]))
        self.scaler.step(self.opt_dis)
        self.scaler.update()
        self.sched_gen.step()
        self.sched_dis.step()
        return {
            "loss_g": loss_g.detach(),
            "loss_d": loss_d.detach(),
            "dis_a": loss_d_a.detach(),
            "dis_b": loss_d_b.detach(),
            **terms,
        }

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
