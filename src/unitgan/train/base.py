"""What the training loop needs from a model (:class:`Trainer`), and the helpers trainers share.

``unitgan.train.loop.train`` drives any object with the methods of :class:`Trainer`; the registry in
``unitgan.train.registry`` picks the class from the config. A trainer owns its networks, optimisers and
schedulers; the loop owns the run folder, seeding, resume, signals, the non-finite watch, logging, image
grids, checkpoints and the torchrun process group.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from unitgan.config import Config
from unitgan.data import build_loader

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    """One trainer's training data, as the loop consumes it."""

    next_batch: Callable[[], tuple]  # one step's input: the loop calls trainer.train_step(*next_batch())
    datasets: tuple[Dataset, ...]  # the training sets (the loop reports their skipped bad images)
    batches: tuple[EndlessBatches, ...] = ()  # the loaders behind next_batch: the loop closes them at the end

    def close(self) -> None:
        """Stop every loader's worker processes (the loop calls this however the run ends)."""
        for b in self.batches:
            b.close()


class Trainer(Protocol):
    """The interface between the loop and a model (UNIT: ``UNITTrainer``, UNIT-DA: ``DATrainer``).

    Constructed as ``cls(cfg, device, ddp=...)`` right after ``torch.manual_seed(train.seed)``; with
    ``ddp`` the torchrun process group exists and the trainer averages its gradients over the ranks.
    """

    state_keys: tuple[str, ...]  # keys a checkpoint must hold for load_state (besides step, rng, config)
    eval_every: int  # call evaluate() every this many steps (0 = only at the end of the run)
    last_skipped: bool  # whether the last train_step applied no update (train.nonfinite=skip)

    def data(self, start_step: int, rank: int, world_size: int) -> TrainData:
        """Build the training sets and endless loaders, positioned after ``start_step`` steps."""
        ...

    def fixed_batch(self) -> Any:
        """The inputs of every image grid (rank 0 only), or None."""
        ...

    def train_step(self, *batch: Any) -> dict[str, torch.Tensor]:
        """One optimisation step on one batch; returns detached scalar loss tensors (no host sync needed)."""
        ...

    def sample_rows(self, fixed: Any) -> list[torch.Tensor]:
        """Image-grid rows [N, C, H, W] in [-1, 1] for ``fixed`` (may be [])."""
        ...

    def evaluate(self, step: int, run_dir: Path, final: bool) -> dict[str, float]:
        """Periodic (and final) evaluation on rank 0: scalars for the log; may write files into ``run_dir``."""
        ...

    def learning_rate(self) -> float: ...

    def weights_finite(self) -> bool: ...

    def state(self) -> dict[str, Any]:
        """Everything to resume (weights, optimisers, schedulers); tensors and plain values only. Must hold
        ``gen``, the generator's state dict (translate, export and evaluate read it)."""
        ...

    def load_state(self, state: dict[str, Any]) -> None: ...


class EndlessBatches:
    """Batches of an (infinite-sampler) loader, for ever; :meth:`close` stops its worker processes.

    The workers ignore SIGTERM (``unitgan.data.build_loader``: a signal to the process group must not kill them
    before the main process has checkpointed), so they must be shut down explicitly: left to the garbage
    collector, a loader that sits in a reference cycle (an exception's traceback) outlives the run, and at
    interpreter exit ``multiprocessing`` waits for ever on workers that ignore its SIGTERM.
    """

    def __init__(self, loader: DataLoader):
        self.loader: DataLoader | None = loader
        self._it: Iterator | None = None

    def __iter__(self) -> EndlessBatches:
        return self

    def __next__(self):
        if self.loader is None:
            raise RuntimeError("these batches were closed")
        if self._it is None:
            self._it = iter(self.loader)
        try:
            return next(self._it)
        except StopIteration:  # a finite sampler: start the next pass
            self._it = iter(self.loader)
            return next(self._it)

    def close(self) -> None:
        """Shut the worker processes down now, with torch's own shutdown (joins the workers, closes their
        queues); the loader and its iterator are dropped."""
        it, self._it, self.loader = self._it, None, None
        if it is not None and hasattr(it, "_shutdown_workers"):  # single-process iterators have no workers
            it._shutdown_workers()


def endless_batches(
    cfg: Config, ds: Dataset, seed: int, start_step: int, rank: int, world_size: int, device: torch.device
) -> EndlessBatches:
    """An endless iterator over ``ds`` that continues after ``start_step`` steps of this rank."""
    start = start_step * cfg.data.batch_size * cfg.train.accumulate
    loader = build_loader(cfg, ds, seed=seed, start=start, rank=rank, world_size=world_size, device=device)
    return EndlessBatches(loader)


def build_adam(params, lr: float, cfg: Config, device: torch.device) -> torch.optim.Adam:
    """Adam with the optim.* settings (fused / foreach kernels where they help)."""
    o = cfg.optim
    kwargs: dict[str, Any] = {"betas": (o.beta1, o.beta2), "weight_decay": o.weight_decay}
    if o.fused and device.type in ("cuda", "cpu"):  # one kernel per update (about 4x faster on a CPU)
        kwargs["fused"] = True
    elif device.type != "cpu":
        kwargs["foreach"] = True
    return torch.optim.Adam(params, lr=lr, **kwargs)


def build_step_lr(opt: torch.optim.Optimizer, cfg: Config) -> torch.optim.lr_scheduler.StepLR:
    """The optim.lr_step / optim.lr_gamma schedule (lr_step 0 = constant)."""
    o = cfg.optim
    return torch.optim.lr_scheduler.StepLR(opt, o.lr_step if o.lr_step > 0 else 1 << 62, o.lr_gamma)


OPTIM_KEYS = ("lr", "dis_lr", "beta1", "beta2", "weight_decay", "lr_step", "lr_gamma")  # what resume re-applies


def changed_optim_keys(saved: dict, cfg: Config) -> list[str]:
    """``optim.*`` keys of :data:`OPTIM_KEYS` whose value in the checkpoint's config ``saved`` differs from ``cfg``."""
    old, new = saved.get("optim", {}), cfg.to_dict()["optim"]
    return [f"optim.{k}" for k in OPTIM_KEYS if k in old and old[k] != new[k]]


def apply_optim_settings(
    opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.StepLR, base_lr: float, cfg: Config
) -> None:
    """The resume rule: after loading an optimiser and its schedule from a checkpoint, the config's settings win.

    The schedule keeps its position (steps done) and takes the config's ``lr_step``/``lr_gamma`` and base lr
    ``base_lr``; every parameter group takes the scheduled lr at that position, the betas and the weight decay.
    Adam's moment estimates are kept. Called only when a setting changed, so an unchanged resume is bit-exact.
    """
    o = cfg.optim
    sched.step_size = o.lr_step if o.lr_step > 0 else 1 << 62
    sched.gamma = o.lr_gamma
    sched.base_lrs = [base_lr] * len(opt.param_groups)
    lr = base_lr * o.lr_gamma ** (sched.last_epoch // sched.step_size)
    for group in opt.param_groups:
        group.update(lr=lr, initial_lr=base_lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
    sched._last_lr = [lr] * len(opt.param_groups)  # what get_last_lr() reports


class WeightAverage(nn.Module):
    """An exponential moving average of a network's weights (``train.ema``), kept beside the trained network.

    ``net`` is a frozen copy of the network in eval mode; :meth:`update` moves each of its parameters towards the
    trained one by ``1 - decay`` and copies the buffers (style banks, norm statistics) as they are. The decay of
    the n-th update is ``min(decay, (1 + n) / (10 + n))``: early on the average follows the network closely, so it
    never holds much of the random initial weights. Make it before the network is compiled (the copy stays eager).
    """

    def __init__(self, net: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        self.updates = 0  # updates so far (a checkpoint keeps it: resume continues the ramp)

    def train(self, mode: bool = True) -> WeightAverage:
        """The average is never trained: it stays in eval mode whatever its owner's mode."""
        super().train(mode)
        self.net.eval()
        return self

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """One step of the average towards ``net`` (call it after each optimiser step of ``net``)."""
        self.updates += 1
        n = self.updates
        weight = 1.0 - min(self.decay, (1 + n) / (10 + n))  # of the new weights
        torch._foreach_lerp_(list(self.net.parameters()), list(net.parameters()), weight)
        for b_avg, b_new in zip(self.net.buffers(), net.buffers(), strict=True):
            b_avg.copy_(b_new)

    def load(self, weights: dict[str, Any] | None, updates: int, net: nn.Module) -> None:
        """Resume the average from a checkpoint's ``weights`` after ``updates`` updates; a checkpoint written
        without one (``weights`` None: train.ema was off) starts it again from ``net``, the trained weights."""
        if weights is None:
            log.info("the checkpoint holds no weight average (train.ema was off): it starts from the trained weights")
            weights, updates = net.state_dict(), 0
        self.net.load_state_dict(weights)
        self.updates = int(updates)


def maybe_no_sync(module: nn.Module, sync: bool):
    """DDP's ``no_sync()`` on inner micro-batches (gradients stay local until the last one)."""
    if sync or not hasattr(module, "no_sync"):
        return contextlib.nullcontext()
    return module.no_sync()


def weights_finite(module: nn.Module) -> bool:
    """Whether every parameter of ``module`` is finite (one host sync)."""
    return bool(torch.stack([torch.isfinite(p).all() for p in module.parameters()]).all())


def get_rng(device: torch.device) -> dict:
    """The global RNG states (latent noise) to put into a checkpoint."""
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def set_rng(rng: dict, device: torch.device) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"].cpu(), device)
