"""Training statistics: JSONL (always), TensorBoard (when installed), PNG image grids."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import torchvision.utils as vutils

log = logging.getLogger(__name__)


class RunLogger:
    """Writes scalars to ``metrics.jsonl`` and TensorBoard, and image grids to ``images/``."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        (self.run_dir / "images").mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 - closed in close()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.run_dir / "tb"))
            except ImportError:
                log.info("tensorboard not installed: scalars go to metrics.jsonl only")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, "time": round(time.time(), 3), **values}) + "\n")
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
        vutils.save_image(grid, path)
        if self.tb is not None:
            self.tb.add_image(name, grid, step)
        return path

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()
