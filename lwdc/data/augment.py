"""Augmentations applied to whole batches of tensors (no torchvision), driven by an explicit generator.

Each factory returns ``fn(batch, generator) -> batch``. Randomness comes only from ``generator``, so the loader
can reproduce any batch's augmentation from its seed (resume, multi-process runs).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["Augment", "random_crop_flip", "random_shift"]

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def random_crop_flip(padding: int = 4, flip: bool = True) -> Augment:
    """Zero-pad (N, C, H, W) by ``padding``, crop back to H x W at a random offset per sample, and flip each
    sample horizontally with probability 1/2 (the standard CIFAR augmentation).

    Vectorised: one gather over the padded batch, with the flip folded into the column index.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"random_crop_flip expects (N, C, H, W), got shape {tuple(x.shape)}")
        if padding == 0 and not flip:
            return x
        n, c, h, w = x.shape
        p = padding
        padded = F.pad(x, (p, p, p, p)) if p else x
        dy = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
        dx = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
        cols = torch.arange(w).view(1, w)
        if flip:
            flipped = torch.rand(n, 1, generator=generator) < 0.5
            cols = torch.where(flipped, (w - 1) - cols, cols)
        rows = dy + torch.arange(h).view(1, h)                      # (n, h)
        cols = dx + cols                                            # (n, w)
        wp = w + 2 * p
        flat = (rows.view(n, 1, h, 1) * wp + cols.view(n, 1, 1, w)).expand(n, c, h, w).reshape(n, c, h * w)
        return padded.reshape(n, c, -1).gather(2, flat).view(n, c, h, w)

    return apply


def random_shift(max_shift: int) -> Augment:
    """1-D counterpart for (N, C, L) signals: shift each sample by up to ``max_shift`` steps either way,
    filling with zeros (the loader augments before normalising, so this is a raw-scale zero).
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"random_shift expects (N, C, L), got shape {tuple(x.shape)}")
        if max_shift == 0:
            return x
        n, c, length = x.shape
        padded = F.pad(x, (max_shift, max_shift))
        start = torch.randint(0, 2 * max_shift + 1, (n, 1), generator=generator)
        index = (start + torch.arange(length).view(1, length)).unsqueeze(1).expand(n, c, length)
        return padded.gather(2, index)

    return apply
