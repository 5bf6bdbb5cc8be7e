"""Which trainer trains a config: a name -> class table. A new model is a new module and one entry here."""

from __future__ import annotations

from unitgan.config import Config
from unitgan.train.base import Trainer
from unitgan.train.da.authors import DA32Trainer
from unitgan.train.da.reduced import DATrainer
from unitgan.train.munit import MUNITTrainer
from unitgan.train.trainer import UNITTrainer

TRAINERS: dict[str, type[Trainer]] = {
    "unit": UNITTrainer,  # model.arch=unit
    "munit": MUNITTrainer,  # model.arch=munit
    "unit_da": DATrainer,  # da.enabled (UNIT-DA, or its source-only baseline), reduced design
    "unit_da32": DA32Trainer,  # da.enabled with model.arch=covae32: the authors' digit DA networks
}


def trainer_name(cfg: Config) -> str:
    """``unit_da32`` when ``da.enabled`` with ``model.arch=covae32``, ``unit_da`` when ``da.enabled``, else the
    network family ``model.arch``."""
    if cfg.da.enabled:
        return "unit_da32" if cfg.model.arch == "covae32" else "unit_da"
    return cfg.model.arch


def trainer_class(cfg: Config) -> type[Trainer]:
    name = trainer_name(cfg)
    if name not in TRAINERS:  # a family build_generator knows but no trainer trains yet
        raise ValueError(f"no trainer for '{name}' (known: {', '.join(TRAINERS)})")
    return TRAINERS[name]
