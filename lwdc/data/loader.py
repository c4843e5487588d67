"""A fast, reproducible, shardable batch iterator over an in-memory ``ArrayDataset``.

Why not ``torch.utils.data.DataLoader``: for CIFAR-sized data held in memory, a per-sample ``__getitem__`` and
collate costs more than the model on small networks; gathering a batch by index and augmenting it as one tensor
is several times faster on CPU and needs no worker processes.
"""
from __future__ import annotations

import hashlib
import math
from typing import Callable, Iterator, Optional

import torch

from .augment import Target, as_augment
from .datasets import ArrayDataset

__all__ = ["BatchLoader", "derive_seed"]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of integers, stable across processes and Python versions (unlike ``hash``)."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class BatchLoader:
    """Iterable of ``(x, y)`` batches: x float32 normalised (augmented first, if ``augment``), y the targets as
    the data set holds them (int64 labels, a tensor or a dict of tensors).

    An epoch's order depends only on ``(seed, epoch)`` and its augmentation only on ``(seed, epoch, rank,
    batch)``, so a resumed run sees exactly the batches it would have seen; call ``set_epoch`` before each epoch
    (as with ``DistributedSampler``). With ``world_size > 1`` each rank takes a disjoint shard of one shared
    permutation, padded by wrapping so that every rank has the same number of batches.
    """

    def __init__(self, data: ArrayDataset, batch_size: int, shuffle: bool = False,
                 augment: Optional[Callable] = None, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size); got rank {rank}, world_size {world_size}")
        self.data, self.batch_size, self.shuffle, self.augment = data, batch_size, shuffle, as_augment(augment)
        self.seed, self.rank, self.world_size, self.drop_last = seed, rank, world_size, drop_last
        self.epoch = 0
        if drop_last and self._per_rank() < batch_size:   # an epoch of no steps would "train" silently
            raise ValueError(f"drop_last=True yields no batch: {self._per_rank()} samples per rank ({len(data)} "
                             f"over {world_size} rank(s)) is fewer than batch_size {batch_size}; use a smaller "
                             "batch or drop_last=False")

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order (and augmentation) the next iteration yields."""
        self.epoch = int(epoch)

    def _per_rank(self) -> int:
        return math.ceil(len(self.data) / self.world_size)

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, in order."""
        n = len(self.data)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.seed, self.epoch)))
        else:
            order = torch.arange(n)
        total = self._per_rank() * self.world_size
        if total > n:   # wrap around (repeatedly, if the data set is smaller than world_size)
            order = order.repeat(math.ceil(total / n))[:total]
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        per_rank = self._per_rank()
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def batch(self, idx: torch.Tensor, batch_index: int = 0) -> tuple[torch.Tensor, Target]:
        """Gather, convert, augment and normalise the samples at ``idx``; the targets go through the augmentation
        with them (points move with pixels)."""
        x, y = self.data.to_float(self.data.x[idx]), self.data.targets(idx)
        if self.augment is not None:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, self.rank, batch_index))
            x, y = self.augment(x, y, g)
        return self.data.normalize(x), y

    def iter_from(self, start_batch: int) -> Iterator[tuple[torch.Tensor, Target]]:
        """The current epoch's batches from ``start_batch`` on, identical to skipping the first ones (resume)."""
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        indices = self.indices()
        for b in range(start_batch, len(self)):
            yield self.batch(indices[b * self.batch_size:(b + 1) * self.batch_size], b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Target]]:
        return self.iter_from(0)
