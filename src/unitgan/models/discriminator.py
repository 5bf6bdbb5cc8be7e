"""Multi-scale patch discriminators (one per domain)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unitgan.config import ModelConfig
from unitgan.models.layers import ConvBlock, init_weights


class PatchDiscriminator(nn.Module):
    """``n_layers`` stride-2 conv layers (kernel 3 or 4) (channels doubling, LeakyReLU) and a 1x1 conv to one score per patch."""

    def __init__(self, in_ch: int, ch: int, n_layers: int, norm: str, pad_type: str, kernel: int = 3):
        super().__init__()
        layers: list[nn.Module] = [ConvBlock(in_ch, ch, kernel, 2, "none", "lrelu", pad_type)]
        c = ch
        for _ in range(n_layers - 1):
            layers.append(ConvBlock(c, 2 * c, kernel, 2, norm, "lrelu", pad_type))
            c *= 2
        layers.append(nn.Conv2d(c, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in_ch, H, W] -> [N, 1, H/2^n, W/2^n]
        return self.net(x)


class MultiScaleDiscriminator(nn.Module):
    """The same patch discriminator design applied to the image at ``n_scales`` resolutions."""

    def __init__(self, cfg: ModelConfig, in_ch: int):
        super().__init__()
        self.scales = nn.ModuleList(
            PatchDiscriminator(in_ch, cfg.dis_ch, cfg.dis_n_layers, cfg.dis_norm, cfg.dis_pad_type, cfg.dis_kernel)
            for _ in range(cfg.dis_n_scales)
        )
        init_weights(self, cfg.init)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[N, C, H, W] -> one score map per scale, finest first."""
        outs = []
        for i, dis in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(dis(x))
        return outs
