"""Networks: the UNIT generator (encoders + generators with shared blocks) and discriminators.

Training, inference and export build networks only through :func:`build_generator` and
:func:`build_discriminators`, so that a network family chosen in ``ModelConfig`` plugs in without changes
elsewhere.

The authors' version_02 networks in ``ModelConfig`` keys (presets unit_street, unit_animals, unit_faces; all
with ``lrelu_slope: 0.01``, ``norm_bias: true``, zero padding, deconv upsampling):

- ``COCOResGen2``: ``norm: none``, ``res_norm: instance``, ``up_norm: none``, ``activ: lrelu``,
  ``res_activ: relu``, ``res_dropout`` = their ``res_dropout_ratio``;
- ``COCOResGen``: ``norm: instance``, ``first_norm: none``, ``up_norm: instance``, ``activ: relu``,
  ``first_activ: lrelu``;
- ``COCODis``: ``dis_n_layers`` = ``n_layer``, ``dis_n_scales: 1``;
- ``COCOMsDis``: ``dis_n_scales: 3``, ``dis_downsample: gaussian``;
- ``COCOSharedDis``: ``dis_n_layers`` = ``n_front_layer + n_shared_layer``, ``dis_n_shared`` = ``n_shared_layer``,
  ``dis_first_kernel: 7``.

Their Gaussian noise layer after the shared encoder blocks (std 1, training only) is
:meth:`UNITGenerator.sample`, which the trainer applies.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from unitgan.config import ModelConfig
from unitgan.models.da.authors import CoVAE32x32
from unitgan.models.discriminator import MultiScaleDiscriminator, PatchDiscriminator
from unitgan.models.munit import MUNITGenerator, spread_rows, style_bank_problem
from unitgan.models.unit import UNITGenerator


class Generator(Protocol):
    """What translators and exports read of any generator family (UNIT, MUNIT, CoVAE32x32), so that they need not
    ask which family they hold."""

    size_multiple: int  # inputs are padded to multiples of this
    fixed_size: int  # the one square size the network takes (0 = any size, padded)
    style_dim: int  # length of the style code (0 = unimodal: translate takes no style)

    def translate(self, x: torch.Tensor, direction: str, *args, **kwargs) -> torch.Tensor:
        """[N, C_src, H, W] -> [N, C_dst, H, W]; a multimodal generator also takes ``style`` [N or 1, style_dim]."""
        ...

    def bank_problem(self) -> str | None:
        """Why its bank of remembered styles cannot be used, naming the tensor; None when it can (or has none)."""
        ...

    def style_banks(self) -> dict[str, torch.Tensor]:
        """{domain: remembered style codes [M, style_dim]} (``model.style_prior=bank``); {} when none."""
        ...


def build_generator(cfg: ModelConfig) -> UNITGenerator | MUNITGenerator | CoVAE32x32:
    """Both encoders and generators of the family ``cfg.arch``, with the shared blocks built once."""
    if cfg.arch == "unit":
        return UNITGenerator(cfg)
    if cfg.arch == "munit":
        return MUNITGenerator(cfg)
    if cfg.arch == "covae32":  # the authors' 32x32 digit-adaptation generator, width model.ch
        return CoVAE32x32(cfg.ch, cfg.input_nc_a, cfg.input_nc_b, cfg.vae_head_std)
    raise ValueError(f"unknown model.arch '{cfg.arch}'")  # config validation lists the valid ones


def build_discriminators(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """``dis_a`` and ``dis_b``; each maps [N, C, H, W] to a list of score maps. They share their last
    ``cfg.dis_n_shared`` layers (the same modules), so collect their parameters through one ``nn.ModuleList``
    (which counts a shared parameter once)."""
    dis_a = MultiScaleDiscriminator(cfg, cfg.input_nc_a)
    dis_b = MultiScaleDiscriminator(cfg, cfg.input_nc_b, shared_with=dis_a if cfg.dis_n_shared else None)
    return dis_a, dis_b


__all__ = [
    "CoVAE32x32",
    "Generator",
    "MUNITGenerator",
    "MultiScaleDiscriminator",
    "PatchDiscriminator",
    "UNITGenerator",
    "build_discriminators",
    "build_generator",
    "spread_rows",
    "style_bank_problem",
]
