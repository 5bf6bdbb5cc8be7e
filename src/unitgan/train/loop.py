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
from unitgan.train.checkpoint import load_latest, save_checkpoint
from unitgan.train.logger import RunLogger
from unitgan.train.trainer import UNITTrainer, resolve_device

log = logging.getLogger(__name__)


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


def train(cfg: Config, progress: bool = True) -> TrainResult:
    """Train (or resume) the run described by ``cfg``."""
    if cfg.da.enabled:  # UNIT-DA has its own discriminators with a class head: unitgan.train.da
        from unitgan.train.da import train_da

        return train_da(cfg, progress)
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
    device = resolve_device(tc.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not tc.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(tc.seed)
    trainer = UNITTrainer(cfg, device)
    state = load_latest(run_dir, map_location=device)
    step = 0
    if state is not None:
        check_resumable(state["config"], cfg, state["_path"])
        trainer.load_state(state)
        step = int(state["step"])
        log.info("resuming from %s (step %d)", state["_path"], step)
    save_config(cfg, run_dir / "config.yaml")

    ds_a, ds_b = build_domain(cfg, "a", "train"), build_domain(cfg, "b", "train")
    bs = cfg.data.batch_size
    loader_a = build_loader(cfg, ds_a, seed=tc.seed * 2 + 0, start=step * bs, device=device)
    loader_b = build_loader(cfg, ds_b, seed=tc.seed * 2 + 1, start=step * bs, device=device)
    fixed_a, fixed_b = _fixed_batch(cfg, ds_a, ds_b)

    logger = RunLogger(run_dir)
    # restore the noise RNG last, so nothing above (model init, loaders) shifts it
    if state is not None:
        _set_rng(state["rng"], device)
    log.info(
        "training %s on %s: %d -> %d steps, batch %d per domain, run folder %s",
        "UNIT",
        device,
        step,
        tc.steps,
        bs,
        run_dir,
    )
    last_ckpt: Path | None = None
    it_a, it_b = iter(_cycle(loader_a)), iter(_cycle(loader_b))
    bar = tqdm(total=tc.steps, initial=step, disable=not progress, dynamic_ncols=True, unit="step")
    t0, step0 = time.time(), step
    stats: dict[str, torch.Tensor] = {}
    with _StopFlag() as stop:
        try:
            while step < tc.steps:
                x_a, x_b = next(it_a), next(it_b)
                stats = trainer.train_step(x_a, x_b)
                step += 1
                bar.update(1)
                if step % tc.log_every == 0 or step == tc.steps:
                    values = {k: float(v) for k, v in stats.items()}
                    _check_finite(values, step)
                    values["lr"] = trainer.opt_gen.param_groups[0]["lr"]
                    values["steps_per_s"] = (step - step0) / max(time.time() - t0, 1e-9)
                    logger.scalars(step, values)
                    bar.set_postfix(
                        g=f"{values['loss_g']:.3g}",
                        d=f"{values['loss_d']:.3g}",
                        rec=f"{(values['recon_a'] + values['recon_b']) / 2:.3g}",
                    )
                if step % tc.image_every == 0 or step == tc.steps:
                    logger.images(step, trainer.sample_rows(fixed_a, fixed_b), "translations")
                if step % tc.ckpt_every == 0 or step == tc.steps:
                    last_ckpt = _save(trainer, cfg, step, run_dir, stats, device)
                if stop.signum is not None:
                    break
        except KeyboardInterrupt:
            stop.signum = signal.SIGINT
        finally:
            bar.close()
        interrupted = stop.signum is not None and step < tc.steps
        if interrupted:
            if last_ckpt is None or not last_ckpt.name.endswith(f"{step:09d}.pt"):
                last_ckpt = _save(trainer, cfg, step, run_dir, stats, device)
            log.info("stopped by signal %d at step %d; checkpoint %s", stop.signum, step, last_ckpt)
    logger.close()
    return TrainResult(run_dir, step, last_ckpt, interrupted)


def _check_finite(values: dict[str, float], step: int) -> None:
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        terms = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise UnitganError(f"non-finite loss at step {step}: {terms}; no checkpoint was written for this step")


def _save(trainer: UNITTrainer, cfg: Config, step: int, run_dir: Path, stats: dict, device) -> Path:
    if stats:
        _check_finite({k: float(v) for k, v in stats.items()}, step)
    state = trainer.state()
    state.update(step=step, config=cfg.to_dict(), rng=_get_rng(device))
    return save_checkpoint(state, run_dir, cfg.train.keep_last)


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
