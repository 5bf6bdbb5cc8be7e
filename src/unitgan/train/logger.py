"""Training statistics: JSONL (always), TensorBoard (when installed), PNG image grids."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import torchvision.utils as vutils

from unitgan.errors import UnitganError
from unitgan.runtime import atomic_write_text

log = logging.getLogger(__name__)


class RunLogger:
    """Writes scalars to ``metrics.jsonl`` and TensorBoard, and image grids to ``images/``."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True, start_step: int = 0):
        """``start_step``: the step this run starts from (that of the checkpoint it resumes, or 0); records
        of later steps, written by a run that was stopped after its last checkpoint, are dropped so that no
        step appears twice."""
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        path = self.run_dir / "metrics.jsonl"
        try:
            (self.run_dir / "images").mkdir(parents=True, exist_ok=True)
            if path.is_file():
                _trim_jsonl(path, start_step)
            self.jsonl = open(path, "a", buffering=1)  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise UnitganError(f"run folder '{self.run_dir}' is not writable: {e.strerror or e}") from None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step)
            except ImportError:
                log.info("tensorboard not installed: scalars go to metrics.jsonl only")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        try:
            self.jsonl.write(json.dumps({"step": step, "time": round(time.time(), 3), **values}) + "\n")
        except OSError as e:
            raise UnitganError(f"could not write '{self.jsonl.name}': {e.strerror or e}") from None
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def images(self, step: int, rows: list[torch.Tensor], name: str) -> Path | None:
        """Each row a batch [N, C, H, W] in [-1, 1]; grey rows are shown as RGB."""
        if not self.enabled:
            return None
        rows = [
            r.detach().float().cpu().expand(-1, 3, -1, -1) if r.shape[1] == 1 else r.detach().float().cpu()
            for r in rows
        ]
        grid = vutils.make_grid(torch.cat(rows), nrow=rows[0].shape[0], normalize=True, value_range=(-1, 1))
        path = self.run_dir / "images" / f"{name}_{step:09d}.png"
        try:
            vutils.save_image(grid, path)
        except OSError as e:
            raise UnitganError(f"could not write image grid '{path}': {e.strerror or e}") from None
        if self.tb is not None:
            self.tb.add_image(name, grid, step)
        return path

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()


def _trim_jsonl(path: Path, last_step: int) -> None:
    """Keep the records of steps <= ``last_step`` (and drop a half-written last line), atomically."""
    keep = []
    for line in path.read_text().splitlines():
        try:
            ok = int(json.loads(line)["step"]) <= last_step
        except (ValueError, TypeError, KeyError):  # JSONDecodeError is a ValueError
            continue
        if ok:
            keep.append(line + "\n")
    atomic_write_text(path, "".join(keep))
