"""Shared helpers of the export and serve tests: one tiny trained checkpoint per test session, test images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

TINY = [
    "model.ch=8",
    "model.n_res=1",
    "model.dis_ch=8",
    "data.crop_size=16",
    "data.batch_size=2",
    "data.synthetic_train=16",
    "data.synthetic_test=4",
    "train.steps=2",
    "train.ckpt_every=2",
    "train.log_every=1",
    "train.image_every=2",
    "train.image_rows=2",
]


def tiny_checkpoint(base: Path) -> Path:
    """Train the demo preset for 2 steps at toy size under ``base`` (once per session; later calls reuse it).

    Domain A is grey (1 channel), domain B colour (3 channels); the size multiple is 4.
    """
    from unitgan.checkpoint import list_checkpoints
    from unitgan.config import load_config
    from unitgan.train.loop import train

    run = base / "unitgan-tiny-run"
    found = list_checkpoints(run)
    if not found:
        train(load_config("demo", [f"train.out_dir={run}", *TINY]), progress=False)
        found = list_checkpoints(run)
    return found[-1]


def random_image(width: int, height: int, mode: str, seed: int) -> Image.Image:
    """A noise image of the given size and PIL mode ('L' or 'RGB')."""
    rng = np.random.default_rng(seed)
    shape = (height, width) if mode == "L" else (height, width, 3)
    return Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8))  # mode follows the shape


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
