"""Data: the two unpaired domains (image folders, arrays, built-in synthetic scenes) and their loaders."""

from __future__ import annotations

import signal
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from unitgan.config import Config
from unitgan.data.datasets import ArrayDomain, ImageFolderDomain
from unitgan.data.sampler import InfiniteSampler
from unitgan.data.synthetic import SyntheticDomain
from unitgan.errors import UnitganError

__all__ = [
    "ArrayDomain",
    "ImageFolderDomain",
    "InfiniteSampler",
    "SyntheticDomain",
    "build_domain",
    "build_loader",
]


def build_domain(cfg: Config, domain: str, split: str = "train", return_labels: bool = False) -> Dataset:
    """The data set of domain 'a' or 'b' for split 'train' or 'test', as the config describes it."""
    d, m = cfg.data, cfg.model
    channels = m.input_nc_a if domain == "a" else m.input_nc_b
    train = split == "train"
    if d.source == "synthetic":
        length = d.synthetic_train if train else d.synthetic_test
        ds = SyntheticDomain(
            domain,
            split,
            d.crop_size,
            length,
            seed=cfg.train.seed,
            palette=d.synthetic_palette,
            modes=d.synthetic_modes,
        )
        if ds.channels != channels:
            raise UnitganError(
                f"config key 'model.input_nc_{domain}' must be {ds.channels} for the synthetic domain {domain.upper()}"
            )
        return ds
    if d.source == "arrays":
        spec = d.a if domain == "a" else d.b
        box = cfg.da.digit_box_a if domain == "a" else cfg.da.digit_box_b
        inverted = cfg.da.use_inversion and domain == "b" and train
        return ArrayDomain(
            spec, split, channels, d.crop_size, train, d.flip, d.download, d.cache_dir, return_labels, box, inverted
        )
    folder = Path(d.root).expanduser() / f"{split}{domain.upper()}"
    if not Path(d.root).expanduser().is_dir():
        raise UnitganError(f"data root '{d.root}' does not exist (expected trainA/ trainB/ testA/ testB/ inside)")
    return ImageFolderDomain(
        folder, channels, d.crop_size, d.load_size, train, d.flip, d.bad_images, cache_dir=d.cache_dir or None
    )


def build_loader(
    cfg: Config,
    dataset: Dataset,
    seed: int,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
) -> DataLoader:
    """An endless loader of batches; ``start`` = samples this rank consumed before (for exact resume)."""
    d = cfg.data
    sampler = InfiniteSampler(len(dataset), seed=seed, rank=rank, world_size=world_size, start=start)
    workers = d.num_workers if not isinstance(dataset, SyntheticDomain) or d.num_workers <= 2 else 2
    return DataLoader(
        dataset,
        batch_size=d.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=d.pin_memory and device is not None and device.type == "cuda",
        persistent_workers=workers > 0,
        drop_last=True,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),  # keeps the global RNG (latent noise) untouched
        worker_init_fn=_ignore_stop_signals if workers > 0 else None,
    )


def _ignore_stop_signals(worker_id: int) -> None:
    """Ctrl-C reaches every process of the terminal's group, and ``kill -TERM -PGID`` too: workers leave the
    stop to the main process, which finishes the step, checkpoints, then shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
