"""In-memory data sets and ``load_data``, the one entry point that turns a name or a path into train/test sets.

Everything is held in memory as uint8 images (or float signals): CIFAR-sized sets fit easily, and batches are
then gathered by index in one tensor operation (see ``loader.py``) instead of a per-sample collate.
"""
from __future__ import annotations

import io
import numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from . import layouts
from .layouts import LAYOUTS, DataLayoutError

__all__ = ["ArrayDataset", "DataBundle", "DataLayoutError", "load_data", "LAYOUTS", "SUBSET_PATH", "default_cache_dir"]

SUBSET_PATH = Path(__file__).with_name("cifar10_subset.npz")
NAMES = ("cifar10-subset", "cifar10", "cifar100")
ArrayLike = Union[np.ndarray, torch.Tensor]


@dataclass
class ArrayDataset:
    """Samples held in memory: uint8 images (N, C, H, W) or float signals (N, C, L), int64 labels (N,).

    ``mean``/``std`` are per channel on the 0..1 scale: uint8 samples are divided by 255 before normalising.
    """

    x: torch.Tensor
    y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.x.dim() not in (3, 4) or self.x.shape[0] != self.y.shape[0] or self.y.dim() != 1:
            raise ValueError(f"x must be (N, C, H, W) or (N, C, L) and y (N,); got {tuple(self.x.shape)} and "
                             f"{tuple(self.y.shape)}")
        if len(self.mean) != self.x.shape[1] or len(self.std) != self.x.shape[1]:
            raise ValueError(f"mean/std need one value per channel ({self.x.shape[1]}); got {len(self.mean)}, "
                             f"{len(self.std)}")
        self.y = self.y.long()
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float32 on 0..1; float samples only cast to float32."""
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel ``(x - mean) / std`` of a batch (N, C, ...), converting uint8 first."""
        x = self.to_float(x)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - torch.tensor(self.mean).view(shape)) / torch.tensor(self.std).view(shape)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.normalize(self.x[i].unsqueeze(0))[0], int(self.y[i])

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
        return ArrayDataset(self.x[idx], self.y[idx], self.mean, self.std)


@dataclass
class DataBundle:
    """A train and a test set with their class names; ``name`` says where they came from."""

    train: ArrayDataset
    test: ArrayDataset
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    name: str = ""

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


def make_bundle(name: str, xtr: ArrayLike, ytr: ArrayLike, xte: ArrayLike, yte: ArrayLike,
                classes: list[str]) -> DataBundle:
    """Wrap arrays (numpy or torch) as a bundle; mean/std come from the training samples only."""
    def tensor(a: ArrayLike) -> torch.Tensor:
        return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))

    xtr, xte = tensor(xtr), tensor(xte)
    ytr, yte = tensor(np.asarray(ytr, dtype=np.int64)), tensor(np.asarray(yte, dtype=np.int64))
    mean, std = channel_stats(xtr)
    return DataBundle(ArrayDataset(xtr, ytr, mean, std), ArrayDataset(xte, yte, mean, std), len(classes),
                      [str(c) for c in classes], name)


def default_cache_dir() -> Path:
    """``$LWDC_DATA`` if set, else ``~/.cache/lwdc``."""
    return Path(os.environ.get("LWDC_DATA") or Path.home() / ".cache" / "lwdc").expanduser()


def _load_subset(path: Path = SUBSET_PATH) -> DataBundle:
    """The shipped subset: JPEG bytes concatenated in one array, cut by ``offsets``, decoded with PIL."""
    from PIL import Image

    with np.load(path, allow_pickle=False) as z:
        blob, offsets, labels = z["jpeg"].tobytes(), z["offsets"], z["labels"]
        classes, n_train = [str(c) for c in z["classes"]], int(z["n_train"])
    images = None
    for i in range(len(offsets) - 1):
        with Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]])) as im:
            a = np.asarray(im.convert("RGB"))
        if images is None:
            images = np.empty((len(offsets) - 1,) + a.shape, dtype=np.uint8)
        images[i] = a
    images = images.transpose(0, 3, 1, 2)
    return make_bundle("cifar10-subset", images[:n_train], labels[:n_train], images[n_train:], labels[n_train:],
                       classes)


def _load_named(name: str, cache: Path, download: bool) -> DataBundle:
    folder = layouts.find_cifar(name, cache)
    if folder is None:
        if not download:
            raise DataLayoutError(f"{name} was not found under {cache} (looked for {layouts.CIFAR[name][1]}/ and "
                                  f"{layouts.CIFAR[name][0].rsplit('/', 1)[1]}); pass download=True (--download) "
                                  "when online, set $LWDC_DATA / cache_dir to where it is, or give the path of a "
                                  "folder or archive holding it")
        folder = layouts.download_cifar(name, cache)
    xtr, ytr, xte, yte, classes = layouts.read_pickled(folder)
    return make_bundle(name, xtr, ytr, xte, yte, classes)


def load_data(source: str = "cifar10-subset", cache_dir: str | Path | None = None,
              download: bool = False) -> DataBundle:
    """Load a data set by name (``cifar10-subset``, ``cifar10``, ``cifar100``) or from a path.

    A path may be a folder holding one of ``LAYOUTS`` (or the parent of one), or a ``.tar.gz``/``.tgz`` archive
    of one, unpacked once into ``cache_dir``. Decoded image folders are cached there as ``.npz``, so only the
    first load pays for decoding. ``cache_dir`` defaults to ``$LWDC_DATA`` or ``~/.cache/lwdc``.
    """
    source = str(source)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if source == "cifar10-subset":
        return _load_subset()
    if source in layouts.CIFAR:
        return _load_named(source, cache, download)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataLayoutError(f"data source {source!r} is neither a known name ({', '.join(NAMES)}) nor an "
                              "existing path; a path must hold one of: " + "; ".join(LAYOUTS))
    root = path
    if path.is_file() and path.name.lower().endswith((".tar.gz", ".tgz")):
        root = layouts.unpack(path, cache)
    found = layouts.find_layout(root) if root.is_dir() else None
    if found is None:
        raise DataLayoutError(f"no recognised data layout in {source}; accepted layouts: " + "; ".join(LAYOUTS))
    kind, folder = found
    if kind == "imagefolder":
        xtr, ytr, xte, yte, classes = layouts.read_image_folder(folder, cache)
    else:
        xtr, ytr, xte, yte, classes = layouts.read_pickled(folder)
    return make_bundle(source, xtr, ytr, xte, yte, classes)


def _main() -> None:  # pragma: no cover - `python -m lwdc.data.datasets SOURCE [CACHE]`: timing by hand
    import sys
    t = time.perf_counter()
    b = load_data(sys.argv[1] if len(sys.argv) > 1 else "cifar10-subset", *sys.argv[2:3])
    print(f"{b.name}: {len(b.train)} train / {len(b.test)} test, {b.num_classes} classes, shape {b.input_shape}, "
          f"{time.perf_counter() - t:.2f} s")


if __name__ == "__main__":  # pragma: no cover
    _main()
