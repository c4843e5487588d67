"""In-memory data sets: the samples and targets of one split, and the train/test bundle a loader returns.

Everything is held in memory as uint8 images (or float signals): CIFAR-sized sets fit easily, and batches are
then gathered by index in one tensor operation (see ``loader.py``) instead of a per-sample collate.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .augment import AUTO, Augment, Target, default_augment
from .errors import DataLayoutError

__all__ = ["ArrayDataset", "DataBundle", "make_bundle", "channel_stats", "take"]

ArrayLike = Union[np.ndarray, torch.Tensor]


def _tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(a)))


def take(y: Target, idx) -> Target:
    """The targets at ``idx`` (an index, a slice or an index tensor) of a tensor or a dict of tensors."""
    return {k: v[idx] for k, v in y.items()} if isinstance(y, Mapping) else y[idx]


def _as_target(v: torch.Tensor) -> torch.Tensor:
    """Integer targets (labels, indices) become int64, as losses expect; float and bool ones keep their dtype."""
    return v.long() if not (v.is_floating_point() or v.is_complex() or v.dtype == torch.bool) else v


@dataclass
class ArrayDataset:
    """Samples held in memory, uint8 images (N, C, H, W) or float signals (N, C, L), and their targets ``y``.

    ``y`` is a label vector (N,), any tensor (N, ...) (e.g. float regression targets), or a dict of such tensors
    (e.g. ``{"points": (N, K, 2), "visible": (N, K)}``); integer targets become int64.
    ``mean``/``std`` are per channel on the 0..1 scale: uint8 samples are divided by 255 before normalising.
    """

    x: torch.Tensor
    y: Target
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if isinstance(self.y, Mapping):
            self.y = {str(k): _as_target(_tensor(v)) for k, v in self.y.items()}
            shapes = {k: tuple(v.shape) for k, v in self.y.items()}
        else:
            self.y = _as_target(_tensor(self.y))
            shapes = {"y": tuple(self.y.shape)}
        n = self.x.shape[0] if self.x.dim() else -1
        if self.x.dim() not in (3, 4) or not shapes or any(not s or s[0] != n for s in shapes.values()):
            raise ValueError(f"x must be (N, C, H, W) or (N, C, L) and every target (N, ...); got x "
                             f"{tuple(self.x.shape)} and targets {shapes}")
        if len(self.mean) != self.x.shape[1] or len(self.std) != self.x.shape[1]:
            raise ValueError(f"mean/std need one value per channel ({self.x.shape[1]}); got {len(self.mean)}, "
                             f"{len(self.std)}")
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def has_labels(self) -> bool:
        """Whether the targets are one class label per sample (a 1-D int64 tensor)."""
        return isinstance(self.y, torch.Tensor) and self.y.dim() == 1 and self.y.dtype == torch.int64

    def targets(self, idx) -> Target:
        """The targets of the samples at ``idx``: a tensor or a dict of tensors, like ``y``."""
        return take(self.y, idx)

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float32 on 0..1; float samples only cast to float32."""
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel ``(x - mean) / std`` of a batch (N, C, ...), converting uint8 first."""
        x = self.to_float(x)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - torch.tensor(self.mean).view(shape)) / torch.tensor(self.std).view(shape)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Union[int, Target]]:
        """``(normalised sample, target)``: the target is an ``int`` for class labels, else a tensor or a dict."""
        return self.normalize(self.x[i].unsqueeze(0))[0], int(self.y[i]) if self.has_labels else self.targets(i)

    def subset(self, n_or_indices: int | Sequence[int] | ArrayLike) -> "ArrayDataset":
        """The first ``n`` samples, or the samples at the given indices; mean/std are kept, not recomputed."""
        if isinstance(n_or_indices, numbers.Integral):
            n = int(n_or_indices)
            if not 0 <= n <= len(self):
                raise ValueError(f"subset of {n} samples from a data set of {len(self)}")
            idx = torch.arange(n)
        else:
            idx = torch.as_tensor(np.asarray(n_or_indices))
            if idx.dtype != torch.bool:
                idx = idx.long()
        return ArrayDataset(self.x[idx], self.targets(idx), self.mean, self.std)


@dataclass
class DataBundle:
    """A train and a test set with what a run needs to know of them: the classes (``num_classes`` is None for
    data that is not classified), the task they serve and the augmentation they get unless told otherwise.

    ``augment`` left at ``AUTO`` is chosen from the sample shape and task (``augment.default_augment``).
    """

    train: ArrayDataset
    test: ArrayDataset
    num_classes: Optional[int]
    class_names: list[str] = field(default_factory=list)
    name: str = ""
    task: str = "classification"
    augment: Optional[Augment] = AUTO
    info: dict = field(default_factory=dict)   # what the reader knows of the samples: sample_rate, time_offset...

    def __post_init__(self) -> None:
        if self.augment is AUTO:
            self.augment = default_augment(self.input_shape, self.task)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (C, H, W) or (C, L)."""
        return tuple(self.train.x.shape[1:])


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std on the 0..1 scale.

    uint8 images go through a 256-bin histogram per channel: exact, and no float copy of the data (one of full
    CIFAR-10 would be 600 MB). Float signals are summed in float64 chunks.
    """
    c = x.shape[1]
    if x.shape[0] == 0:
        return (0.0,) * c, (1.0,) * c
    if x.dtype == torch.uint8:
        values = torch.arange(256, dtype=torch.float64) / 255.0
        hists = [torch.bincount(x[:, i].reshape(-1), minlength=256).double() for i in range(c)]
        count = hists[0].sum()
        mean = torch.stack([(h * values).sum() for h in hists]) / count
        mean_sq = torch.stack([(h * values * values).sum() for h in hists]) / count
    else:
        total, total_sq, count = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
        for start in range(0, x.shape[0], chunk):
            part = x[start:start + chunk].transpose(0, 1).reshape(c, -1).double()
            total += part.sum(1)
            total_sq += (part * part).sum(1)
            count += part.shape[1]
        mean, mean_sq = total / count, total_sq / count
    std = (mean_sq - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def _check_classes(name: str, classes: Optional[Sequence[str]], splits: dict[str, Target]) -> None:
    """A classifier needs two classes at least, and every label must name one of them."""
    if classes is None or len(classes) < 2:
        found = "none" if not classes else f"only {list(classes)}"
        raise DataLayoutError(f"{name}: a classification data set needs at least two classes; found {found}")
    for split, y in splits.items():
        if isinstance(y, torch.Tensor) and y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataLayoutError(f"{name}: {split} labels must lie in 0..{len(classes) - 1} ({len(classes)} "
                                  f"classes); found {int(y.min())}..{int(y.max())}")


def make_bundle(name: str, xtr: ArrayLike, ytr, xte: ArrayLike, yte, classes: Optional[Sequence[str]], *,
                task: str = "classification", augment: Optional[Augment] = AUTO,
                info: Optional[dict] = None) -> DataBundle:
    """Wrap arrays (numpy or torch) as a bundle; mean/std come from the training samples only.

    ``classes`` is None for data without classes. For classification, labels become int64 and are checked
    against ``classes``; other targets (arrays or dicts of arrays) are kept as they are.
    """
    def targets(y):
        if isinstance(y, Mapping):
            return {k: _tensor(v) for k, v in y.items()}
        if task == "classification" and not isinstance(y, torch.Tensor):
            return _tensor(np.asarray(y, dtype=np.int64))
        return _tensor(y)

    xtr, xte, ytr, yte = _tensor(xtr), _tensor(xte), targets(ytr), targets(yte)
    if task == "classification":
        _check_classes(name, classes, {"train": ytr, "test": yte})
    mean, std = channel_stats(xtr)
    return DataBundle(ArrayDataset(xtr, ytr, mean, std), ArrayDataset(xte, yte, mean, std),
                      None if classes is None else len(classes), [str(c) for c in classes or []], name, task, augment,
                      dict(info or {}))
