"""Augmentations on whole batches of tensors (no torchvision), driven by an explicit generator."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

__all__ = ["Augment", "random_crop_flip", "random_shift"]


def random_crop_flip(padding: int = 4, flip: bool = True) -> Augment:
    """Zero-pad by ``padding``, crop back to size at a random offset per sample, flip half horizontally."""

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        if padding > 0:
            padded = F.pad(x, (padding,) * 4)
            dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
            dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
            rows = (dy.view(n, 1) + torch.arange(h).view(1, h))            # (n, h)
            cols = (dx.view(n, 1) + torch.arange(w).view(1, w))            # (n, w)
            idx = torch.arange(n).view(n, 1, 1)
            x = padded.permute(0, 2, 3, 1)[idx, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
        if flip:
            mask = torch.rand(n, generator=generator) < 0.5
            x = torch.where(mask.view(n, 1, 1, 1), x.flip(3), x)
        return x.contiguous()

    return apply


def random_shift(max_shift: int) -> Augment:
    """1-D counterpart: shift each (N, C, L) signal by up to ``max_shift`` samples, zero-filled."""

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, length = x.shape
        padded = F.pad(x, (max_shift, max_shift))
        start = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
        index = (start.view(n, 1) + torch.arange(length).view(1, length)).unsqueeze(1).expand(-1, x.shape[1], -1)
        return padded.gather(2, index)

    return apply
