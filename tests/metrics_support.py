"""Shared helper of the FID tests: a stand-in feature network, small enough to script and save."""

from __future__ import annotations

import torch
from torch import nn


class TinyFeatures(nn.Module):
    """A stand-in 'Inception': mean colour -> 8-d features (fixed weights)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3)))
