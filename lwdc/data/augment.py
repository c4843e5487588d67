"""Augmentations applied to whole batches of tensors (no torchvision), driven by an explicit generator.

Each factory returns ``fn(x, y, generator) -> (x, y)``: the targets travel with the samples, so an augmentation
that moves pixels can move landmark points with them. Randomness comes only from ``generator``, so the loader
can reproduce any batch's augmentation from its seed (resume, multi-process runs).
"""
from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Mapping, Optional, Union

import torch
import torch.nn.functional as F

__all__ = ["Augment", "Target", "AUTO", "as_augment", "default_augment", "random_crop_flip", "random_shift"]

Target = Union[torch.Tensor, Mapping[str, torch.Tensor]]
Augment = Callable[[torch.Tensor, Target, torch.Generator], "tuple[torch.Tensor, Target]"]


class _Auto:
    """Sentinel: "choose the augmentation from the data's dimensionality and task" (see ``default_augment``)."""

    def __repr__(self) -> str:
        return "AUTO"


AUTO: Any = _Auto()


def default_augment(input_shape: tuple[int, ...], task: str = "classification") -> Optional[Augment]:
    """The augmentation a data set gets unless it names one: crop + flip for classified 2-D images, else none.

    Other tasks get none by default: their targets (points, masks) must move with the pixels, which only an
    augmentation written for them does.
    """
    if task == "classification" and len(input_shape) == 3:
        return random_crop_flip(4)
    return None


def _positional_arity(fn: Callable) -> int | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):       # builtins without a signature: assume the current protocol
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def as_augment(fn: Optional[Callable]) -> Optional[Augment]:
    """``fn`` itself if it follows ``(x, y, generator) -> (x, y)``; an old-style ``(x, generator) -> x`` is wrapped
    (with a DeprecationWarning) so that labels pass through and spatial targets are refused.
    """
    if fn is None or _positional_arity(fn) != 2:
        return fn
    warnings.warn(f"augmentation {getattr(fn, '__name__', fn)!r} takes (x, generator); write it as "
                  "(x, y, generator) -> (x, y) so targets can move with the samples", DeprecationWarning,
                  stacklevel=3)

    def legacy(x: torch.Tensor, y: Target, generator: torch.Generator) -> tuple[torch.Tensor, Target]:
        _check_unmoved_targets(getattr(fn, "__name__", "augmentation"), y)
        return fn(x, generator), y

    return legacy


def _check_unmoved_targets(name: str, y: Target) -> None:
    """Refuse targets an augmentation that moves only pixels would leave behind (points, masks).

    Per-sample scalars (class labels, a value per sample, a dict of those) pass unchanged.
    """
    values = y.values() if isinstance(y, Mapping) else [y]
    spatial = [tuple(v.shape) for v in values if v.dim() > 1]
    if spatial:
        raise ValueError(f"{name} moves pixels but not targets of shape {spatial}; use an augmentation that moves "
                         "them too, or none")


def random_crop_flip(padding: int = 4, flip: bool = True) -> Augment:
    """Zero-pad (N, C, H, W) by ``padding``, crop back to H x W at a random offset per sample, and flip each
    sample horizontally with probability 1/2 (the standard CIFAR augmentation). Labels pass through.

    Vectorised: one gather over the padded batch, with the flip folded into the column index.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")

    def apply(x: torch.Tensor, y: Target, generator: torch.Generator) -> tuple[torch.Tensor, Target]:
        if x.dim() != 4:
            raise ValueError(f"random_crop_flip expects (N, C, H, W), got shape {tuple(x.shape)}")
        _check_unmoved_targets("random_crop_flip", y)
        if padding == 0 and not flip:
            return x, y
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
        return padded.reshape(n, c, -1).gather(2, flat).view(n, c, h, w), y

    apply.__name__ = f"random_crop_flip({padding}{'' if flip else ', flip=False'})"
    return apply


def random_shift(max_shift: int) -> Augment:
    """1-D counterpart for (N, C, L) signals: shift each sample by up to ``max_shift`` steps either way,
    filling with zeros (the loader augments before normalising, so this is a raw-scale zero). Labels pass through.
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")

    def apply(x: torch.Tensor, y: Target, generator: torch.Generator) -> tuple[torch.Tensor, Target]:
        if x.dim() != 3:
            raise ValueError(f"random_shift expects (N, C, L), got shape {tuple(x.shape)}")
        _check_unmoved_targets("random_shift", y)
        if max_shift == 0:
            return x, y
        n, c, length = x.shape
        padded = F.pad(x, (max_shift, max_shift))
        start = torch.randint(0, 2 * max_shift + 1, (n, 1), generator=generator)
        index = (start + torch.arange(length).view(1, length)).unsqueeze(1).expand(n, c, length)
        return padded.gather(2, index), y

    apply.__name__ = f"random_shift({max_shift})"
    return apply
