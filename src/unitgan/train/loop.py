"""The training loop: run folder, exact resume, logging, checkpoints, clean stops.

To resume, run the same command again: the newest complete checkpoint in ``train.out_dir`` is loaded
and training continues as if it had never stopped (same data order, same noise, same optimiser state).
"""

from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from unitgan.config import Config, save_config
from unitgan.data import build_domain, build_loader
from unitgan.errors import UnitganError
from unitgan.runtime import configure_backends
from unitgan.train import distributed
from unitgan.train.checkpoint import checkpoint_dir, load_latest, save_checkpoint
from unitgan.train.logger import RunLogger
from unitgan.train.trainer import UNITTrainer

log = logging.getLogger(__name__)

MAX_SKIPPED_IN_A_ROW = 100  # train.nonfinite=skip: this many bad steps in a row means the run has diverged


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # steps done when the loop ended
    checkpoint: Path | None  # the last checkpoint written
    interrupted: bool = False  # stopped by a signal before train.steps


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


def check_resumable(saved: dict, cfg: Config, path: str) -> None:
    """A checkpoint from another architecture cannot be resumed; other changes are logged."""
    diff = config_differences(saved, cfg.to_dict())
    fatal = [k for k in diff if k.startswith("model.")]
    if fatal:
        raise UnitganError(
            f"checkpoint '{path}' was trained with another config ({', '.join(fatal)} differ); "
            f"use another train.out_dir or the checkpoint's own config"
        )
    if diff:
        log.info("resuming with changed settings: %s", ", ".join(diff))


class _StopFlag:
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


def _cycle(loader):
    while True:
        yield from loader


def _next(it):
    """The next batch; a data error raised in a loader worker comes back as the one line it was."""
    try:
        return next(it)
    except UnitganError as e:
        lines = str(e).strip().splitlines()
        if len(lines) > 1:  # "Caught UnitganError in DataLoader worker process 0." + the worker's traceback
            last = lines[-1]
            raise UnitganError(last.split("UnitganError: ", 1)[-1]) from None
        raise


def train(cfg: Config, progress: bool = True) -> TrainResult:
    """Train (or resume) the run described by ``cfg``; under torchrun, as one rank of a DDP job."""
    if cfg.da.enabled:  # UNIT-DA has its own discriminators with a class head: unitgan.train.da
        from unitgan.train.da import train_da

        return train_da(cfg, progress)
    rank, world_size, local_rank = distributed.env_world()
    device = distributed.pick_device(cfg.train.device, local_rank, world_size)
    dctx = distributed.init(device, rank, world_size, local_rank)
    try:
        return _train(cfg, progress and dctx.is_main, dctx, device)
    finally:
        dctx.close()


def _train(cfg: Config, progress: bool, dctx: distributed.DistContext, device: torch.device) -> TrainResult:
    tc = cfg.train
    run_dir = Path(tc.out_dir).expanduser()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UnitganError(f"run folder '{run_dir}' cannot be created: {e.strerror or e}") from None
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    configure_backends(device, cfg.train.deterministic)

    torch.manual_seed(tc.seed)
    trainer = UNITTrainer(cfg, device, ddp=dctx.enabled)  # DDP copies rank 0's initial weights to all ranks
    if dctx.enabled:
        torch.manual_seed(distributed.rank_seed(tc.seed, dctx.rank))  # each rank draws its own latent noise
    state = load_latest(run_dir, map_location=device)  # every rank resumes from the same checkpoint
    step, skipped = 0, 0
    if state is not None:
        _restore(trainer, state, cfg)
        step = int(state["step"])
        skipped = int(state.get("nonfinite_skipped", 0))
        log.info("resuming from %s (step %d)", state["_path"], step)
    if len(set(steps := dctx.gather(step))) > 1:
        raise UnitganError(f"ranks found different checkpoints (steps {steps}): put train.out_dir on a shared disk")
    if dctx.is_main:
        try:
            save_config(cfg, run_dir / "config.yaml")
        except OSError as e:
            raise UnitganError(f"run folder '{run_dir}' is not writable: {e.strerror or e}") from None

    # rank 0 builds the data sets first (and writes file-list caches); the others wait, then read them
    if not dctx.is_main:
        dctx.barrier()
    ds_a, ds_b = build_domain(cfg, "a", "train"), build_domain(cfg, "b", "train")
    if dctx.is_main:
        dctx.barrier()
    bs, k, r, w = cfg.data.batch_size, tc.accumulate, dctx.rank, dctx.world_size
    loader_a = build_loader(cfg, ds_a, seed=tc.seed * 2 + 0, start=step * bs * k, rank=r, world_size=w, device=device)
    loader_b = build_loader(cfg, ds_b, seed=tc.seed * 2 + 1, start=step * bs * k, rank=r, world_size=w, device=device)
    fixed_a, fixed_b = _fixed_batch(cfg, ds_a, ds_b) if dctx.is_main else (None, None)

    logger = RunLogger(run_dir, enabled=dctx.is_main, start_step=step)
    # restore the noise RNG last, so nothing above (model init, loaders) shifts it
    if state is not None:
        _resume_rng(state, dctx, device, tc.seed + step)
    log.info(
        "training UNIT on %s: %d -> %d steps, batch %d per domain = %d per rank x %d rank(s) x %d accumulated, "
        "run folder %s",
        device,
        step,
        tc.steps,
        bs * w * k,
        bs,
        w,
        k,
        run_dir,
    )
    last_ckpt: Path | None = None
    it_a, it_b = iter(_cycle(loader_a)), iter(_cycle(loader_b))
    bar = tqdm(total=tc.steps, initial=step, disable=not progress, dynamic_ncols=True, unit="step")
    t0, step0 = time.time(), step
    watch = _NonFiniteWatch(device)
    in_a_row = 0  # steps skipped since the last good one (train.nonfinite=skip)
    with _StopFlag() as stop:
        try:
            while step < tc.steps:
                if k == 1:
                    stats = trainer.train_step(_next(it_a), _next(it_b))
                else:
                    stats = trainer.train_step([_next(it_a) for _ in range(k)], [_next(it_b) for _ in range(k)])
                step += 1
                bar.update(1)
                if trainer.last_skipped:
                    skipped += 1
                    in_a_row += 1
                    terms = _bad_terms({k: float(v) for k, v in stats.items()})
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
                        values["bad_images_skipped"] = _bad_image_count(ds_a, ds_b)
                    values["lr"] = trainer.opt_gen.param_groups[0]["lr"]
                    values["steps_per_s"] = (step - step0) / max(time.time() - t0, 1e-9)
                    logger.scalars(step, values)
                    if "loss_g" in values:
                        bar.set_postfix(
                            g=f"{values['loss_g']:.3g}",
                            d=f"{values['loss_d']:.3g}",
                            rec=f"{(values['recon_a'] + values['recon_b']) / 2:.3g}",
                        )
                if dctx.is_main and (step % tc.image_every == 0 or step == tc.steps):
                    logger.images(step, trainer.sample_rows(fixed_a, fixed_b), "translations")
                if step % tc.ckpt_every == 0 or step == tc.steps:
                    last_ckpt = _save(trainer, cfg, step, run_dir, watch, skipped, device, dctx)
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
                last_ckpt = _save(trainer, cfg, step, run_dir, watch, skipped, device, dctx)
            log.info("stopped by signal %d at step %d; checkpoint %s", stop.signum, step, last_ckpt)
    if skipped:
        log.warning("%d of %d steps had a non-finite loss and were skipped (train.nonfinite=skip)", skipped, step)
    bad = _bad_image_count(ds_a, ds_b)
    if bad:
        log.warning("%d unreadable image(s) were skipped (data.bad_images=skip)", bad)
    dctx.barrier()  # rank 0's last checkpoint exists before any rank returns
    return TrainResult(run_dir, step, last_ckpt, interrupted)


def _restore(trainer: UNITTrainer, state: dict, cfg: Config) -> None:
    """Load a training checkpoint into ``trainer``, or say clearly why it cannot be resumed."""
    path = state["_path"]
    missing = [k for k in ("step", "rng", "dis_a", "dis_b", "opt_gen", "opt_dis") if k not in state]
    if missing:
        raise UnitganError(f"checkpoint '{path}' is not a training checkpoint (no {', '.join(missing)})")
    check_resumable(state["config"], cfg, path)
    try:
        trainer.load_state(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnitganError(f"checkpoint '{path}' does not match its config: {first}") from None


def _bad_image_count(*datasets) -> int:
    return sum(getattr(ds, "bad_count", 0) for ds in datasets)


def _bad_terms(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))


class _NonFiniteWatch:
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
                raise _nonfinite_error(step, _bad_terms(values))
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
            raise _nonfinite_error(int(self.first_step), _bad_terms(values))


def check_finite(values: dict[str, float], step: int) -> None:
    """Raise the non-finite-loss error if any logged value is NaN or inf."""
    if not all(math.isfinite(v) for v in values.values()):
        raise _nonfinite_error(step, _bad_terms(values))


def _nonfinite_error(step: int, terms: str) -> UnitganError:
    return UnitganError(
        f"non-finite loss at step {step}: {terms}; stopped without writing a checkpoint after it "
        f"(set train.nonfinite=skip to skip such steps, or lower optim.lr)"
    )


def _save(trainer: UNITTrainer, cfg: Config, step: int, run_dir: Path, watch, skipped: int, device, dctx) -> Path:
    """Called on every rank (their RNG states are gathered); rank 0 writes, the others get its path."""
    watch.check()
    if not trainer.weights_finite():
        raise UnitganError(
            f"weights became non-finite by step {step}; stopped without writing a checkpoint "
            f"(the previous checkpoint is intact)"
        )
    rngs = dctx.gather(_get_rng(device))
    if not dctx.is_main:
        return checkpoint_dir(run_dir) / f"ckpt_{step:09d}.pt"
    state = trainer.state()
    state.update(step=step, config=cfg.to_dict(), rng=rngs[0], nonfinite_skipped=skipped)
    if dctx.enabled:
        state["rng_ranks"] = rngs  # each rank's latent-noise stream continues exactly on resume
    return save_checkpoint(state, run_dir, cfg.train.keep_last)


def _resume_rng(state: dict, dctx: distributed.DistContext, device: torch.device, seed: int) -> None:
    rngs = state.get("rng_ranks")
    if not dctx.enabled:
        _set_rng(state["rng"], device)
    elif rngs is not None and len(rngs) == dctx.world_size:
        _set_rng(rngs[dctx.rank], device)
    else:
        if dctx.is_main:
            log.warning("checkpoint written by another number of processes: latent noise is reseeded per rank")
        torch.manual_seed(distributed.rank_seed(seed, dctx.rank))


def _get_rng(device: torch.device) -> dict:
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def _set_rng(rng: dict, device: torch.device) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"].cpu(), device)


def _fixed_batch(cfg: Config, ds_a, ds_b) -> tuple[torch.Tensor, torch.Tensor]:
    """The same few images for every image grid: from the test split when it exists."""
    k = cfg.train.image_rows
    try:
        ds_a, ds_b = build_domain(cfg, "a", "test"), build_domain(cfg, "b", "test")
    except UnitganError:
        pass
    pick = lambda ds: torch.stack([_first(ds[i % len(ds)]) for i in range(k)])  # noqa: E731
    return pick(ds_a), pick(ds_b)


def _first(item):
    return item[0] if isinstance(item, (tuple, list)) else item


def read_run_config(run_dir: str | Path) -> dict:
    return yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
