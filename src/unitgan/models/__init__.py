"""Networks: the UNIT generator (encoders + generators with shared blocks) and discriminators.

Training, inference and export build networks only through :func:`build_generator` and
:func:`build_discriminators`, so that a network family chosen in ``ModelConfig`` plugs in without changes
elsewhere.
"""

from __future__ import annotations

from torch import nn

from unitgan.config import ModelConfig
from unitgan.models.discriminator import MultiScaleDiscriminator, PatchDiscriminator
from unitgan.models.unit import UNITGenerator


def build_generator(cfg: ModelConfig) -> UNITGenerator:
    """Both encoders and generators of the family ``cfg.arch``, with the shared blocks built once."""
    if cfg.arch == "unit":
        return UNITGenerator(cfg)
    raise ValueError(f"unknown model.arch '{cfg.arch}'")  # config validation lists the valid ones


def build_discriminators(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """``dis_a`` and ``dis_b``; each maps [N, C, H, W] to a list of score maps. They share their last
    ``cfg.dis_n_shared`` layers (the same modules), so collect their parameters through one ``nn.ModuleList``
    (which counts a shared parameter once)."""
    dis_a = MultiScaleDiscriminator(cfg, cfg.input_nc_a)
    dis_b = MultiScaleDiscriminator(cfg, cfg.input_nc_b, shared_with=dis_a if cfg.dis_n_shared else None)
    return dis_a, dis_b


__all__ = [
    "MultiScaleDiscriminator",
    "PatchDiscriminator",
    "UNITGenerator",
    "build_discriminators",
    "build_generator",
]
