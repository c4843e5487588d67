"""In-memory data sets and the loaders for the layouts lwdc accepts.

Layouts: the pickled CIFAR-10 (``cifar-10-batches-py``) and CIFAR-100 (``cifar-100-python``) folders, an image
folder (``train/<class>/*`` + ``test/<class>/*``), a ``.tar.gz`` of any of them, and the CIFAR-10 subset shipped
inside the package (500 train + 100 test images per class, JPEG bytes in one ``.npz``).
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["ArrayDataset", "DataBundle", "DataLayoutError", "load_data", "LAYOUTS", "SUBSET_PATH"]

SUBSET_PATH = Path(__file__).with_name("cifar10_subset.npz")
LAYOUTS = ("cifar-10-batches-py/ (pickled CIFAR-10: data_batch_1..5, test_batch)",
           "cifar-100-python/ (pickled CIFAR-100: train, test)",
           "an image folder: train/<class>/*.jpg|png and test/<class>/*.jpg|png",
           "a .tar.gz / .tgz archive of one of these")
_URLS = {"cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-batches-py"),
         "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python")}
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class DataLayoutError(ValueError):
    pass


@dataclass
class ArrayDataset:
    """Samples held in memory: uint8 images (N, C, H, W) or float signals (N, C, L), int64 labels."""

    x: torch.Tensor
    y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - torch.tensor(self.mean).view(shape)) / torch.tensor(self.std).view(shape)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.normalize(self.x[i:i + 1])[0], int(self.y[i])

    def subset(self, n_or_indices) -> "ArrayDataset":
        idx = torch.arange(n_or_indices) if isinstance(n_or_indices, int) else torch.as_tensor(n_or_indices)
        return ArrayDataset(self.x[idx], self.y[idx], self.mean, self.std)


@dataclass
class DataBundle:
    train: ArrayDataset
    test: ArrayDataset
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    name: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def _bundle(name: str, xtr: np.ndarray, ytr, xte: np.ndarray, yte, classes: list[str]) -> DataBundle:
    xtr_t = torch.from_numpy(np.ascontiguousarray(xtr))
    scale = 255.0 if xtr_t.dtype == torch.uint8 else 1.0
    dims = [0] + list(range(2, xtr_t.dim()))
    mean = tuple((xtr_t.float() / scale).mean(dim=dims).tolist())
    std = tuple((xtr_t.float() / scale).std(dim=dims).clamp_min(1e-6).tolist())
    make = lambda x, y: ArrayDataset(torch.from_numpy(np.ascontiguousarray(x)), torch.as_tensor(np.asarray(y),
                                                                                                 dtype=torch.long), mean, std)
    return DataBundle(make(xtr, ytr), make(xte, yte), len(classes), classes, name)


def _decode(blob: bytes) -> np.ndarray:
    from PIL import Image
    with Image.open(io.BytesIO(blob)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)


def _load_subset() -> DataBundle:
    z = np.load(SUBSET_PATH, allow_pickle=False)
    blobs, offsets = z["jpeg"], z["offsets"]
    images = np.stack([_decode(blobs[offsets[i]:offsets[i + 1]].tobytes()) for i in range(len(offsets) - 1)])
    n_train = int(z["n_train"])
    labels = z["labels"]
    return _bundle("cifar10-subset", images[:n_train], labels[:n_train], images[n_train:], labels[n_train:],
                   [str(c) for c in z["classes"]])


def _load_pickled(folder: Path) -> DataBundle:
    def read(name):
        with open(folder / name, "rb") as f:
            return pickle.load(f, encoding="latin1")   # the official format is a pickle; only for trusted files

    if (folder / "data_batch_1").exists():
        parts = [read(f"data_batch_{i}") for i in range(1, 6)]
        test = read("test_batch")
        classes = read("batches.meta")["label_names"] if (folder / "batches.meta").exists() else [str(i) for i in range(10)]
        xtr = np.concatenate([p["data"] for p in parts]).reshape(-1, 3, 32, 32)
        ytr = np.concatenate([p["labels"] for p in parts])
        return _bundle("cifar10", xtr, ytr, test["data"].reshape(-1, 3, 32, 32), test["labels"], classes)
    train, test = read("train"), read("test")
    classes = read("meta")["fine_label_names"] if (folder / "meta").exists() else [str(i) for i in range(100)]
    return _bundle("cifar100", train["data"].reshape(-1, 3, 32, 32), train["fine_labels"],
                   test["data"].reshape(-1, 3, 32, 32), test["fine_labels"], classes)


def _load_image_folder(folder: Path, cache_dir: Path) -> DataBundle:
    stat = (folder / "train").stat()
    key = hashlib.sha256(f"{folder.resolve()}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = cache_dir / f"imagefolder-{key}.npz"
    if cached.exists():
        z = np.load(cached, allow_pickle=False)
        return _bundle(str(folder), z["xtr"], z["ytr"], z["xte"], z["yte"], [str(c) for c in z["classes"]])
    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())

    def read(split):
        xs, ys, shape = [], [], None
        for label, cls in enumerate(classes):
            for path in sorted((folder / split / cls).iterdir()):
                if path.suffix.lower() not in _IMAGE_SUFFIXES:
                    continue
                img = _decode(path.read_bytes())
                if shape is None:
                    shape = img.shape
                elif img.shape != shape:
                    raise DataLayoutError(f"{path} is {img.shape[2]}x{img.shape[1]}, the others "
                                          f"{shape[2]}x{shape[1]}: images must share one size (no resizing)")
                xs.append(img)
                ys.append(label)
        if not xs:
            raise DataLayoutError(f"{folder / split} holds no images ({', '.join(sorted(_IMAGE_SUFFIXES))})")
        return np.stack(xs), np.array(ys)

    xtr, ytr = read("train")
    xte, yte = read("test")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, xtr=xtr, ytr=ytr, xte=xte, yte=yte, classes=np.array(classes))
    os.replace(tmp, cached)
    return _bundle(str(folder), xtr, ytr, xte, yte, classes)


def _unpack(archive: Path, cache_dir: Path) -> Path:
    target = cache_dir / archive.name.replace(".tar.gz", "").replace(".tgz", "")
    done = target / ".unpacked"
    if done.exists():
        return target
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if member.name.startswith(("/", "\\")) or ".." in parts or member.issym() or member.islnk():
                raise DataLayoutError(f"{archive}: refusing unsafe member {member.name!r}")
        target.mkdir(parents=True, exist_ok=True)
        tar.extractall(target, filter="data")
    done.touch()
    return target


def _find_layout(path: Path, cache_dir: Path, depth: int = 2) -> DataBundle | None:
    if (path / "data_batch_1").exists() or ((path / "train").is_file() and (path / "test").is_file()):
        return _load_pickled(path)
    if (path / "train").is_dir() and (path / "test").is_dir():
        return _load_image_folder(path, cache_dir)
    if depth > 0 and path.is_dir():
        for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found = _find_layout(child, cache_dir, depth - 1)
            if found is not None:
                return found
    return None


def _download(name: str, cache_dir: Path) -> Path:
    url, folder = _URLS[name]
    archive = cache_dir / Path(url).name
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_suffix(".part")
    urllib.request.urlretrieve(url, tmp)   # nosec: the official CIFAR address
    os.replace(tmp, archive)
    return _unpack(archive, cache_dir) / folder


def load_data(source: str = "cifar10-subset", cache_dir: str | Path | None = None,
              download: bool = False) -> DataBundle:
    """Load a data set by name (``cifar10-subset``, ``cifar10``, ``cifar100``) or from a path of a known layout."""
    cache = Path(cache_dir or os.environ.get("LWDC_DATA") or Path.home() / ".cache" / "lwdc")
    if source == "cifar10-subset":
        return _load_subset()
    if source in _URLS:
        folder = cache / _URLS[source][1]
        if not folder.exists():
            if not download:
                raise DataLayoutError(f"{source} is not in {cache}; pass download=True (--download) when online, "
                                      f"or give the path of a folder or archive holding it")
            folder = _download(source, cache)
        return _load_pickled(folder)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataLayoutError(f"data source {source!r} is neither a known name (cifar10-subset, cifar10, cifar100) "
                              "nor an existing path")
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        path = _unpack(path, cache)
    found = _find_layout(path, cache) if path.is_dir() else None
    if found is None:
        raise DataLayoutError(f"no recognised data layout in {source}; accepted layouts: " + "; ".join(LAYOUTS))
    return found
