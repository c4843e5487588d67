"""A fast, reproducible, shardable batch iterator over an in-memory data set."""
from __future__ import annotations

import math
from typing import Iterator

import torch

from .augment import Augment
from .datasets import ArrayDataset

__all__ = ["BatchLoader"]


class BatchLoader:
    """Yields ``(x, y)`` batches: gather by index, augment the whole batch, normalise. No per-sample collate.

    The order of an epoch depends only on ``(seed, epoch)``, so a resumed run sees the same batches; with
    ``world_size > 1`` each rank takes a disjoint, equally long shard of the same permutation.
    """

    def __init__(self, data: ArrayDataset, batch_size: int, shuffle: bool = False, augment: Augment | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.data, self.batch_size, self.shuffle, self.augment = data, batch_size, shuffle, augment
        self.seed, self.rank, self.world_size, self.drop_last = seed, rank, world_size, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.data)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch)) \
            if self.shuffle else torch.arange(n)
        per_rank = math.ceil(n / self.world_size)
        order = torch.cat([order, order[:per_rank * self.world_size - n]])   # wrap, like DistributedSampler
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        per_rank = math.ceil(len(self.data) / self.world_size)
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def iter_from(self, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self._indices()
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch * 31 + self.rank)
        for b in range(len(self)):
            idx = indices[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.data.x[idx]
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            if self.augment is not None:
                x = self.augment(x, generator)          # drawn even for skipped batches: same stream on resume
            if b < start_batch:
                continue
            yield self.data.normalize(x), self.data.y[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)
