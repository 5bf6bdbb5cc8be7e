"""The training loop, for every model: run folder, seeding, exact resume, signals, the non-finite watch,
logging, image grids, checkpoints and torchrun/DDP.

The model is a :class:`unitgan.train.base.Trainer` chosen by ``unitgan.train.registry`` from the config;
this module never looks inside it. To resume, run the same command again: the newest complete checkpoint in
``train.out_dir`` is loaded and training continues as if it had never stopped (same data order, same noise,
same optimiser state).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from unitgan.budget import check_model_fits
from unitgan.checkpoint import checkpoint_dir, newest_loadable, save_checkpoint
from unitgan.config import Config, save_config, with_defaults
from unitgan.errors import UnitganError
from unitgan.runtime import configure_backends, make_folder
from unitgan.train import distributed
from unitgan.train.base import Trainer, get_rng, set_rng
from unitgan.train.logger import RunLogger
from unitgan.train.registry import trainer_class, trainer_name

log = logging.getLogger(__name__)

MAX_SKIPPED_IN_A_ROW = 100  # train.nonfinite=skip: this many bad steps in a row means the run has diverged


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # steps done when the loop ended
    checkpoint: Path | None  # the last checkpoint written
    interrupted: bool = False  # stopped by a signal before train.steps


def train(cfg: Config, progress: bool = True) -> TrainResult:
    """Train (or resume) the run described by ``cfg``; under torchrun, as one rank of a DDP job."""
    rank, world_size, local_rank = distributed.env_world()
    device = distributed.pick_device(cfg.train.device, local_rank, world_size)
    dctx = distributed.init(device, rank, world_size, local_rank)
    try:
        return run(cfg, progress and dctx.is_main, dctx, device)
    finally:
        dctx.close()


def run(cfg: Config, progress: bool, dctx: distributed.DistContext, device: torch.device) -> TrainResult:
    """Own the run folder (rank 0 locks it for the run's life), then :func:`run_locked`."""
    run_dir = Path(cfg.train.out_dir).expanduser()
    make_folder(run_dir, "run folder")
    with RunLock(run_dir) if dctx.is_main else contextlib.nullcontext(), contextlib.ExitStack() as cleanup:
        return run_locked(cfg, progress, dctx, device, run_dir, cleanup)


def run_locked(
    cfg: Config,
    progress: bool,
    dctx: distributed.DistContext,
    device: torch.device,
    run_dir: Path,
    cleanup: contextlib.ExitStack,
) -> TrainResult:
    """The loop itself, on one rank: set up, resume, step until done or stopped, checkpoint, evaluate.
    ``cleanup`` closes what the run opened (the data loaders) when the run ends, by return or by error."""
    tc = cfg.train
    # -- the process ----------------------------------------------------------------------------------------
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    configure_backends(device, tc.deterministic)

    # -- the model, then the checkpoint it resumes from ---------------------------------------------------
    memory = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    check_model_fits(cfg, "train", training=True, memory=memory)  # before anything is built
    torch.manual_seed(tc.seed)  # the same initial weights on every rank (DDP also copies rank 0's)
    trainer = trainer_class(cfg)(cfg, device, ddp=dctx.enabled)
    if dctx.enabled:
        torch.manual_seed(distributed.rank_seed(tc.seed, dctx.rank))  # each rank draws its own latent noise
    state = newest_loadable(run_dir, map_location=device)  # every rank resumes from the same checkpoint
    step, skipped = 0, 0
    if state is not None:
        restore(trainer, state, cfg, trains=int(state["step"]) < tc.steps)
        step, skipped = int(state["step"]), int(state.get("nonfinite_skipped", 0))
        log.info("resuming from %s (step %d)", state["_path"], step)
    if len(set(steps := dctx.gather(step))) > 1:
        raise UnitganError(f"ranks found different checkpoints (steps {steps}): put train.out_dir on a shared disk")
    if step > tc.steps:  # before config.yaml is rewritten: the run folder stays as it was
        raise UnitganError(
            f"checkpoint '{state['_path']}' is at step {step}, beyond train.steps={tc.steps}: nothing to do "
            f"(set train.steps above {step} to train on, or use another train.out_dir)"
        )
    finished = state is not None and step == tc.steps
    if finished:
        log.info("run folder %s is already trained to train.steps=%d (%s)", run_dir, step, state["_path"])
    if dctx.is_main and not finished:  # a finished run keeps the config its checkpoint was trained with
        try:
            save_config(cfg, run_dir / "config.yaml")
        except OSError as e:
            raise UnitganError(f"run folder '{run_dir}' is not writable: {e.strerror or e}") from None

    # -- data: rank 0 builds the data sets first (and writes file-list caches); the others wait, then read --
    if not dctx.is_main:
        dctx.barrier()
    data = trainer.data(step, dctx.rank, dctx.world_size)
    cleanup.callback(data.close)  # loader workers stop however the run ends (see base.EndlessBatches)
    if dctx.is_main:
        dctx.barrier()
    fixed = trainer.fixed_batch() if dctx.is_main else None
    logger = RunLogger(run_dir, enabled=dctx.is_main, start_step=step)
    if state is not None:  # the noise RNG last, so that nothing above (model init, loaders) shifts it
        resume_rng(state, dctx, device, tc.seed + step)
    bs, k, w = cfg.data.batch_size, tc.accumulate, dctx.world_size
    log.info(
        "training %s on %s: %d -> %d steps, batch %d per domain = %d per rank x %d rank(s) x %d accumulated, "
        "run folder %s",
        trainer_name(cfg),
        device,
        step,
        tc.steps,
        bs * w * k,
        bs,
        w,
        k,
        run_dir,
    )

    # -- the steps ----------------------------------------------------------------------------------------
    last_ckpt: Path | None = None if state is None else Path(state["_path"])
    bar = tqdm(total=tc.steps, initial=step, disable=not progress, dynamic_ncols=True, unit="step")
    t0, step0 = time.time(), step
    watch = NonFiniteWatch(device)
    in_a_row = 0  # steps skipped since the last good one (train.nonfinite=skip)

    def checkpoint() -> Path:
        return save(trainer, cfg, step, run_dir, watch, skipped, device, dctx)

    with StopFlag() as stop:
        try:
            while step < tc.steps:
                stats = trainer.train_step(*next_batch(data.next_batch))
                step += 1
                bar.update(1)
                if trainer.last_skipped:
                    skipped += 1
                    in_a_row += 1
                    terms = bad_terms({name: float(v) for name, v in stats.items()})
                    log.warning(
                        "step %d: non-finite loss (%s); update skipped (%d skipped so far)", step, terms, skipped
                    )
                    if in_a_row >= MAX_SKIPPED_IN_A_ROW:
                        raise UnitganError(
                            f"{in_a_row} steps in a row had a non-finite loss (the last, step {step}: {terms}); "
                            f"the run has diverged: resume from an earlier checkpoint with a lower optim.lr"
                        )
                else:
                    in_a_row = 0
                    watch.update(step, stats)
                if step % tc.log_every == 0 or step == tc.steps:
                    watch.check()
                    values = dctx.mean({name: float(v) for name, v in stats.items()})  # over ranks
                    if trainer.last_skipped:  # keep metrics.jsonl valid JSON: no NaN values
                        values = {name: v for name, v in values.items() if math.isfinite(v)}
                    if tc.nonfinite == "skip":
                        values["nonfinite_skipped"] = skipped
                    if cfg.data.bad_images == "skip":
                        values["bad_images_skipped"] = bad_image_count(data.datasets)
                    values["lr"] = trainer.learning_rate()
                    values["steps_per_s"] = (step - step0) / max(time.time() - t0, 1e-9)
                    logger.scalars(step, values)
                    bar.set_postfix({name: f"{v:.3g}" for name, v in list(values.items())[:3]})
                if dctx.is_main and (step % tc.image_every == 0 or step == tc.steps):
                    rows = trainer.sample_rows(fixed)
                    if rows:
                        logger.images(step, rows, "translations")
                if dctx.is_main and trainer.eval_every and step % trainer.eval_every == 0 and step < tc.steps:
                    logger.scalars(step, trainer.evaluate(step, run_dir, final=False))  # a learning curve
                if step % tc.ckpt_every == 0 or step == tc.steps:
                    last_ckpt = checkpoint()
                if dctx.any(stop.signum is not None):  # all ranks stop at the same step
                    stop.signum = stop.signum or signal.SIGTERM
                    break
        except KeyboardInterrupt:
            stop.signum = signal.SIGINT
        finally:
            bar.close()
            logger.close()
        interrupted = stop.signum is not None and step < tc.steps
        if interrupted:
            if last_ckpt is None or not last_ckpt.name.endswith(f"{step:09d}.pt"):
                last_ckpt = checkpoint()
            log.info("stopped by signal %d at step %d; checkpoint %s", stop.signum, step, last_ckpt)

    # -- the end --------------------------------------------------------------------------------------------
    if skipped:
        log.warning("%d of %d steps had a non-finite loss and were skipped (train.nonfinite=skip)", skipped, step)
    if bad := bad_image_count(data.datasets):
        log.warning("%d unreadable image(s) were skipped (data.bad_images=skip)", bad)
    if dctx.is_main and not interrupted:
        results = trainer.evaluate(step, run_dir, final=True)
        if results:
            log.info("evaluation at step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in results.items()))
    dctx.barrier()  # rank 0's last checkpoint (and results) exist before any rank returns
    return TrainResult(run_dir, step, last_ckpt, interrupted)


# -- the run folder's owner ----------------------------------------------------------------------------------


class RunLock:
    """An exclusive POSIX lock (``lockf``) on ``<run_dir>/.lock`` for the life of a run, holding the owner's PID.

    A second run in the same folder fails at once with one line naming the folder and that PID. The kernel
    drops the lock when the process ends in any way (kill -9 included), so a crashed run never leaves it stuck.
    A POSIX lock, not ``flock``: it belongs to the process, so forked data-loader workers do not inherit it and
    cannot keep it held after the run has ended.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise UnitganError(f"run folder '{self.path.parent}' is not writable: {e.strerror or e}") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UnitganError(
                f"run folder '{self.path.parent}' is in use by another training (PID {holder}); "
                f"wait for it to end or use another train.out_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the file stays (removing it would race a new owner)
            self.fd = None


# -- resume -------------------------------------------------------------------------------------------------


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, key + ".")
        elif va != vb:
            out.append(key)
    return out


def check_resumable(saved: dict, cfg: Config, path: str, trains: bool = True) -> None:
    """A checkpoint of another architecture or another trainer cannot be resumed; other changes are logged
    (as not applied when the run ``trains`` no further step). Keys added to unitgan after the checkpoint was
    written count as their defaults."""
    try:
        saved = with_defaults(saved)
    except UnitganError:  # a key this version does not know: compare as saved, the difference is reported
        pass
    diff = config_differences(saved, cfg.to_dict())
    fatal = [k for k in diff if k.startswith("model.") or k in ("da.enabled", "da.source_only")]
    if fatal:
        raise UnitganError(
            f"checkpoint '{path}' was trained with another config ({', '.join(fatal)} differ); "
            f"use another train.out_dir or the checkpoint's own config"
        )
    if diff and not trains:
        log.info("settings that differ from the checkpoint's (%s) are not applied: nothing is trained", ", ".join(diff))
    elif diff:
        optim = [k for k in diff if k.startswith("optim.")]
        note = " (the new optim.* values apply from now on: lr, betas, weight decay and schedule)" if optim else ""
        log.info("resuming with changed settings: %s%s", ", ".join(diff), note)


def restore(trainer: Trainer, state: dict, cfg: Config, trains: bool = True) -> None:
    """Load a training checkpoint into ``trainer``, or say clearly why it cannot be resumed (``trains``: whether
    any step follows, see :func:`check_resumable`)."""
    path = state["_path"]
    missing = [k for k in ("step", "rng", *trainer.state_keys) if k not in state]
    if missing:
        raise UnitganError(f"checkpoint '{path}' is not a training checkpoint (no {', '.join(missing)})")
    check_resumable(state["config"], cfg, path, trains)
    try:
        trainer.load_state(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()] or [type(e).__name__]
        detail = next((line for line in lines if line.startswith(("size mismatch", "Missing", "Unexpected"))), "")
        first = f"{lines[0]} {detail[:300]}".strip()  # "Error(s) in loading ..." names no key; the next line does
        raise UnitganError(f"checkpoint '{path}' does not match its config: {first}") from None


def resume_rng(state: dict, dctx: distributed.DistContext, device: torch.device, seed: int) -> None:
    """Continue this rank's latent-noise stream where the checkpoint left it."""
    rngs = state.get("rng_ranks")
    if not dctx.enabled:
        set_rng(state["rng"], device)
    elif rngs is not None and len(rngs) == dctx.world_size:
        set_rng(rngs[dctx.rank], device)
    else:
        if dctx.is_main:
            log.warning("checkpoint written by another number of processes: latent noise is reseeded per rank")
        torch.manual_seed(distributed.rank_seed(seed, dctx.rank))


def save(
    trainer: Trainer,
    cfg: Config,
    step: int,
    run_dir: Path,
    watch: NonFiniteWatch,
    skipped: int,
    device: torch.device,
    dctx: distributed.DistContext,
) -> Path:
    """Called on every rank (their RNG states are gathered); rank 0 writes, the others get its path."""
    watch.check()
    if not trainer.weights_finite():
        raise UnitganError(
            f"weights became non-finite by step {step}; stopped without writing a checkpoint "
            f"(the previous checkpoint is intact)"
        )
    rngs = dctx.gather(get_rng(device))
    if not dctx.is_main:
        return checkpoint_dir(run_dir) / f"ckpt_{step:09d}.pt"
    state = trainer.state()
    state.update(step=step, config=cfg.to_dict(), rng=rngs[0], nonfinite_skipped=skipped)
    if dctx.enabled:
        state["rng_ranks"] = rngs  # each rank's latent-noise stream continues exactly on resume
    return save_checkpoint(state, run_dir, cfg.train.keep_last)


# -- stops, data errors, non-finite losses ----------------------------------------------------------------


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checkpoints and exits at the end of the current step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def next_batch(get) -> tuple:
    """``get()``; a data error raised in a loader worker comes back as the one line it was."""
    try:
        return get()
    except UnitganError as e:
        lines = str(e).strip().splitlines()
        if len(lines) > 1:  # "Caught UnitganError in DataLoader worker process 0." + the worker's traceback
            raise UnitganError(lines[-1].split("UnitganError: ", 1)[-1]) from None
        raise


def bad_image_count(datasets) -> int:
    return sum(getattr(ds, "bad_count", 0) for ds in datasets)


def bad_terms(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))


class NonFiniteWatch:
    """Remembers the first step whose losses were not all finite (``train.nonfinite=error``).

    On the CPU each step is checked at once. On an accelerator the check stays on the device (no host sync
    per step) and is read at log and checkpoint steps, so the error still names the first bad step and its
    terms, and no checkpoint is written after it.
    """

    def __init__(self, device: torch.device) -> None:
        self.eager = device.type == "cpu"
        self.first_step: torch.Tensor | None = None  # 0 = none yet
        self.first_values: torch.Tensor | None = None
        self.names: list[str] = []

    def update(self, step: int, stats: dict[str, torch.Tensor]) -> None:
        if self.eager:
            values = {k: float(v) for k, v in stats.items()}
            if not all(math.isfinite(v) for v in values.values()):
                raise nonfinite_error(step, bad_terms(values))
            return
        v = torch.stack([t.float() for t in stats.values()])
        if self.first_step is None:
            self.names = list(stats)
            self.first_step = torch.zeros((), dtype=torch.long, device=v.device)
            self.first_values = torch.zeros_like(v)
        new = (self.first_step == 0) & ~torch.isfinite(v).all()
        self.first_step = self.first_step.masked_fill(new, step)  # a scalar argument: no host-device copy
        self.first_values = torch.where(new, v, self.first_values)

    def check(self) -> None:
        if self.first_step is not None and int(self.first_step) != 0:
            values = dict(zip(self.names, self.first_values.tolist(), strict=True))
            raise nonfinite_error(int(self.first_step), bad_terms(values))


def nonfinite_error(step: int, terms: str) -> UnitganError:
    return UnitganError(
        f"non-finite loss at step {step}: {terms}; stopped without writing a checkpoint after it "
        f"(set train.nonfinite=skip to skip such steps, or lower optim.lr)"
    )
