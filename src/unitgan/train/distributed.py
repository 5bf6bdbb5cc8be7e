"""torchrun-era distributed helpers: one process per device, started by ``torchrun`` (never by us).

``torchrun --nproc_per_node N -m unitgan train CONFIG`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in each process; :func:`init` reads them, picks the device of the local
rank and joins the process group (NCCL on GPUs, gloo on CPUs). A second, gloo group carries small
control messages (the stop flag, RNG states) between host memories, so they never wait on the GPU.

Without those variables (or with ``WORLD_SIZE=1``) everything here degrades to single-process no-ops.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from unitgan.errors import UnitganError

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process stands in the job."""

    rank: int = 0  # global rank, 0 .. world_size - 1
    world_size: int = 1  # processes in the job (all nodes)
    local_rank: int = 0  # rank on this machine: picks the GPU
    owns_group: bool = False  # True when init() created the process group (and close() destroys it)
    control: Any = None  # gloo group for host-side messages (None when single-process)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, image grids and checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here (e.g. after rank 0 wrote a file the others read)."""
        if self.enabled:
            dist.barrier(group=self.control)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (so all ranks stop at the same step)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return bool(t.item())

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average scalar statistics over ranks (same keys on every rank)."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(t, group=self.control)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist(), strict=True)}

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.control)
        return out

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment; (0, 1, 0) outside torchrun."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UnitganError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None
    return rank, world, local


def pick_device(name: str, local_rank: int, world_size: int) -> torch.device:
    """The device of this process. Under torchrun, 'auto' and 'cuda' mean the GPU of the local rank."""
    from unitgan.runtime import resolve_device

    if world_size > 1 and name.split(":")[0] not in ("auto", "cpu", "cuda"):
        raise UnitganError(f"multi-process training runs on CUDA GPUs or CPUs, not on '{name}'")
    device = resolve_device(name)
    if world_size == 1:
        return device
    if device.type == "cuda":
        if name not in ("auto", "cuda"):
            raise UnitganError(
                f"config key 'train.device' is '{name}', but under torchrun each process takes the GPU of its "
                f"local rank: use train.device=cuda (or auto), or CUDA_VISIBLE_DEVICES to choose GPUs"
            )
        if local_rank >= torch.cuda.device_count():
            raise UnitganError(
                f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                f"start at most that many processes per node (--nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        return device
    if device.type != "cpu":
        raise UnitganError(f"multi-process training runs on CUDA GPUs or CPUs, not on '{device.type}'")
    return device


def init(device: torch.device, rank: int, world_size: int, local_rank: int, timeout_min: int = 30) -> DistContext:
    """Join the process group torchrun prepared (or the one the caller already created)."""
    if world_size == 1:
        return DistContext()
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"timeout": datetime.timedelta(minutes=timeout_min)}
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(backend, rank=rank, world_size=world_size, **kwargs)
        owns = True
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise UnitganError(
            f"process group has rank {dist.get_rank()} of {dist.get_world_size()}, "
            f"but the environment says rank {rank} of {world_size}"
        )
    control = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    log.info(
        "rank %d of %d (local rank %d) on %s, backend %s", rank, world_size, local_rank, device, dist.get_backend()
    )
    return DistContext(rank, world_size, local_rank, owns, control)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of the latent noise of one rank: distinct per rank, rank 0 of a 1-process run = ``seed``."""
    return (seed + rank * 0x9E3779B97F4A7C15) % (1 << 63)


def average_gradients(module: torch.nn.Module) -> None:
    """Average the gradients of ``module`` over all ranks in place (for trainers that do not wrap their
    passes in DistributedDataParallel; every rank must hold gradients for the same parameters)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads or not dist.is_initialized() or dist.get_world_size() == 1:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average_tensor(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over all ranks (``t`` itself in a one-process run)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()
