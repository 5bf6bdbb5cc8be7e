"""An endless, resumable, rank-aware sampler.

The global stream of sample positions k = 0, 1, 2, ... walks through a fresh permutation each epoch.
Position k yields ``(index, seed)``: the data set uses ``seed`` for that sample's random crop and flip, so
augmentation does not depend on worker processes or on where a run was resumed. Rank r of W takes
positions r, r + W, r + 2W, ... starting at ``start`` (the number of samples this rank already consumed).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant to decorrelate (seed, epoch) and (seed, position)


class InfiniteSampler(Sampler):
    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0, shuffle: bool = True):
        if n <= 0:
            raise ValueError("InfiniteSampler needs a non-empty data set")
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.start, self.shuffle = start, shuffle

    def _perm(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed((self.seed * _MIX + epoch) % (1 << 63))
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        i = self.start
        epoch, perm = -1, None
        while True:
            k = i * self.world_size + self.rank
            e, within = divmod(k, self.n)
            if e != epoch:
                epoch, perm = e, self._perm(e)
            yield int(perm[within]), (self.seed * _MIX + 7 * k + 1) % (1 << 63)
            i += 1

    def __len__(self) -> int:  # endless; DataLoader only needs a number for progress bars
        return 1 << 62
