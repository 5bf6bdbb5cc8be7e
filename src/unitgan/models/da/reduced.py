"""The discriminators of UNIT-DA: private low-level layers per domain, a shared high-level trunk, two heads.

The paper's domain-adaptation networks share the discriminators' high-level layers between the domains and
put a 10-class head on that trunk, trained on source labels only; the target's test accuracy is read from the
same head applied to target images (through the target's private layers).

    x_a -> private_a --+                     +-> gan_head  -> patch scores [N, 1, s, s]
                       +-> shared trunk h ---+
    x_b -> private_b --+   [N, C, s, s]      +-> cls_head  -> class logits [N, K]
"""

from __future__ import annotations

import torch
from torch import nn

from unitgan.config import Config
from unitgan.models.layers import ConvBlock, init_weights


class DADiscriminator(nn.Module):
    """``dis_a`` and ``dis_b`` of UNIT-DA in one module; the trunk and both heads are shared.

    Args:
        cfg: the run's config; reads ``model.input_nc_a/b``, ``model.dis_ch``, ``model.dis_n_layers``,
            ``model.dis_norm``, ``model.dis_pad_type``, ``model.lrelu_slope``, ``model.norm_bias``, ``model.init``,
            ``data.crop_size`` and
            ``da.dis_n_private``, ``da.n_classes``, ``da.dropout``.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        m, da = cfg.model, cfg.da
        self.private_a = self._private(m.input_nc_a, cfg)
        self.private_b = self._private(m.input_nc_b, cfg)
        c = m.dis_ch * 2 ** (da.dis_n_private - 1)
        shared: list[nn.Module] = []
        for _ in range(m.dis_n_layers - da.dis_n_private):
            shared.append(ConvBlock(c, 2 * c, 3, 2, m.dis_norm, "lrelu", m.dis_pad_type, m.lrelu_slope, m.norm_bias))
            if da.dropout > 0:
                shared.append(nn.Dropout(da.dropout))
            c *= 2
        self.shared = nn.Sequential(*shared)
        self.size = cfg.data.crop_size // 2**m.dis_n_layers  # trunk output is [N, c, size, size]
        self.trunk_ch = c
        self.gan_head = nn.Conv2d(c, 1, 1)
        self.cls_head = nn.Linear(c * self.size * self.size, da.n_classes)
        init_weights(self, m.init)

    @staticmethod
    def _private(in_ch: int, cfg: Config) -> nn.Sequential:
        m = cfg.model
        layers: list[nn.Module] = [ConvBlock(in_ch, m.dis_ch, 3, 2, "none", "lrelu", m.dis_pad_type, m.lrelu_slope)]
        c = m.dis_ch
        for _ in range(cfg.da.dis_n_private - 1):
            layers.append(ConvBlock(c, 2 * c, 3, 2, m.dis_norm, "lrelu", m.dis_pad_type, m.lrelu_slope, m.norm_bias))
            c *= 2
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """Shared trunk features: [N, C_domain, H, W] -> [N, trunk_ch, H/2^n, W/2^n]."""
        private = self.private_a if domain == "a" else self.private_b
        return self.shared(private(x))

    def forward(self, x: torch.Tensor, domain: str) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """GAN scores (a one-scale list, as ``gan_d_loss`` takes), class logits [N, K] and trunk features."""
        h = self.features(x, domain)
        return [self.gan_head(h)], self.cls_head(h.flatten(1)), h

    def classify(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """Class logits [N, K] of images of ``domain`` (the target's accuracy is read from these)."""
        return self.cls_head(self.features(x, domain).flatten(1))
