"""Multi-scale patch discriminators (one per domain), optionally sharing their later layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unitgan.config import ModelConfig
from unitgan.models.layers import ConvBlock, blur_downsample, init_weights, or_default, set_layer_norm


class PatchDiscriminator(nn.Module):
    """``dis_n_layers`` stride-2 conv layers (channels doubling, LeakyReLU) and a 1x1 conv to one score per patch.

    The first layer has kernel ``dis_first_kernel`` (0 = ``dis_kernel``) and no norm. With ``shared_tail`` (the
    last ``dis_n_shared`` conv layers and the 1x1 head of another domain's discriminator) only the first layers
    are built here and those modules are reused: both domains then hold the same Parameter objects.
    """

    def __init__(self, cfg: ModelConfig, in_ch: int, shared_tail: list[nn.Module] | None = None):
        super().__init__()
        first_kernel = cfg.dis_first_kernel or cfg.dis_kernel
        slope, bias = cfg.lrelu_slope, cfg.norm_bias
        layers: list[nn.Module] = [
            ConvBlock(in_ch, cfg.dis_ch, first_kernel, 2, "none", "lrelu", cfg.dis_pad_type, slope, bias)
        ]
        n_own = cfg.dis_n_layers - (cfg.dis_n_shared if shared_tail is not None else 0)
        c = cfg.dis_ch
        for _ in range(n_own - 1):
            layers.append(ConvBlock(c, 2 * c, cfg.dis_kernel, 2, cfg.dis_norm, "lrelu", cfg.dis_pad_type, slope, bias))
            c *= 2
        if shared_tail is None:
            layers.append(nn.Conv2d(c, 1, 1))
        self.n_private = len(layers)  # modules of ``net`` that belong to this discriminator alone
        self.net = nn.Sequential(*layers, *(shared_tail or []))

    def tail(self, n_layers: int) -> list[nn.Module]:
        """The last ``n_layers`` conv layers and the 1x1 head (the modules another discriminator shares)."""
        return list(self.net)[-(n_layers + 1) :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in_ch, H, W] -> [N, 1, H/2^n, W/2^n]
        return self.net(x)


class MultiScaleDiscriminator(nn.Module):
    """The same patch discriminator design applied to the image at ``dis_n_scales`` resolutions.

    Between scales the image is halved by a 3x3 average pool (``dis_downsample: avgpool``) or by 3x3 Gaussian
    smoothing and subsampling (``gaussian``, version_02's ``COCOMsDis``). With ``shared_with`` (``dis_a``) and
    ``dis_n_shared`` > 0, each scale reuses the last layers of the same scale of ``shared_with``
    (version_02's ``COCOSharedDis``); only this discriminator's own layers are initialised here, with
    ``dis_init`` (``same``: ``init``).
    """

    def __init__(self, cfg: ModelConfig, in_ch: int, shared_with: MultiScaleDiscriminator | None = None):
        super().__init__()
        self.downsample = cfg.dis_downsample
        self.scales = nn.ModuleList(
            PatchDiscriminator(
                cfg, in_ch, None if shared_with is None else shared_with.scales[i].tail(cfg.dis_n_shared)
            )
            for i in range(cfg.dis_n_scales)
        )
        own = nn.ModuleList(dis.net[: dis.n_private] for dis in self.scales)
        init_weights(own, or_default(cfg.dis_init, cfg.init))  # dis_init: NVlabs' N(0, 0.02) re-draw
        set_layer_norm(own, cfg.layer_norm)
        if cfg.dis_spectral_norm:  # after the init: the parametrisation divides the drawn weight by its top singular
            # value; shared layers are normalised once, by the discriminator that owns them
            for m in list(own.modules()):
                if isinstance(m, nn.Conv2d):
                    nn.utils.parametrizations.spectral_norm(m)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[N, C, H, W] -> one score map per scale, finest first."""
        outs = []
        for i, dis in enumerate(self.scales):
            if i:
                if self.downsample == "gaussian":
                    x = blur_downsample(x)
                else:
                    x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(dis(x))
        return outs
