"""Networks: the UNIT generator (encoders + generators with shared blocks) and discriminators.

Training, inference and export build networks only through :func:`build_generator` and
:func:`build_discriminators`, so that a network family chosen in ``ModelConfig`` plugs in without changes
elsewhere.
"""

from __future__ import annotations

from torch import nn

from unitgan.config import ModelConfig
from unitgan.models.da32 import CoVAE32x32
from unitgan.models.discriminator import MultiScaleDiscriminator, PatchDiscriminator
from unitgan.models.unit import UNITGenerator


def build_generator(cfg: ModelConfig) -> UNITGenerator | CoVAE32x32:
    """Both encoders and generators of the family ``cfg.arch``, with the shared blocks built once."""
    if cfg.arch == "unit":
        return UNITGenerator(cfg)
    if cfg.arch == "covae32":  # the authors' 32x32 digit-adaptation generator, width model.ch
        return CoVAE32x32(cfg.ch, cfg.input_nc_a, cfg.input_nc_b)
    raise ValueError(f"unknown model.arch '{cfg.arch}'")  # config validation lists the valid ones


def build_discriminators(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """``dis_a`` and ``dis_b``; each maps [N, C, H, W] to a list of score maps. They may share modules, so
    collect their parameters through one ``nn.ModuleList`` (which counts a shared parameter once)."""
    return MultiScaleDiscriminator(cfg, cfg.input_nc_a), MultiScaleDiscriminator(cfg, cfg.input_nc_b)


__all__ = [
    "CoVAE32x32",
    "MultiScaleDiscriminator",
    "PatchDiscriminator",
    "UNITGenerator",
    "build_discriminators",
    "build_generator",
]
