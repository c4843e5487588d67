"""CIFAR-10/100: the official pickled layouts (read without running code), the named data sets with their
download, and the JPEG subset lwdc ships.

Pickles can run arbitrary code on load, so they are read with an unpickler that resolves only the exact globals
numpy needs to rebuild an array, and everything they hold is checked before it becomes a data set.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import sys
import urllib.request
import warnings
from pathlib import Path

import numpy as np

from . import archives
from .errors import DataLayoutError
from .registry import Arrays, register_dataset, register_layout

__all__ = ["CIFAR", "SUBSET_PATH", "read_cifar10", "read_cifar100", "find_cifar", "download_cifar"]

# name -> (official archive URL, folder inside it, md5 of the archive)
CIFAR = {"cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-batches-py",
                     "c58f30108f718f92721af3b95e74349a"),
         "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python",
                      "eb9058c3a382ffc7106e4002c42a8d85")}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SUBSET_PATH = Path(__file__).with_name("cifar10_subset.npz")
_PIXELS = 3 * 32 * 32


# ---------------------------------------------------------------------------------------------- safe unpickling
class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the globals numpy's array pickles name; any other global is refused before it is imported.

    The official files (Python 2, numpy 1) name ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and
    ``numpy.dtype``; numpy 2 writes ``numpy._core``; protocol 2 from Python 3 adds ``_codecs.encode`` for bytes,
    protocol 5 uses ``_frombuffer``, and numpy scalars (a label saved as ``np.int64``) use ``scalar``.
    """

    ALLOWED = frozenset({("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
                        | {(f"{core}.multiarray", name) for core in ("numpy.core", "numpy._core")
                           for name in ("_reconstruct", "scalar")}
                        | {(f"{core}.numeric", "_frombuffer") for core in ("numpy.core", "numpy._core")})

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: a CIFAR file holds only "
                                         "plain data and numpy arrays")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # numpy.core -> numpy._core in numpy 2
            return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except Exception as exc:         # noqa: BLE001 - a malformed pickle can fail in any way; name the file
        raise DataLayoutError(f"{path} is not a pickled CIFAR file ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataLayoutError(f"{path} holds a {type(obj).__name__}, not the dict of a pickled CIFAR file")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(batch: dict, key: str, path: Path):
    if key not in batch:
        raise DataLayoutError(f"{path} lacks {key!r} (has {', '.join(map(str, batch)) or 'nothing'})")
    return batch[key]


# ---------------------------------------------------------------------------------------------- validation
def _images(batch: dict, path: Path) -> np.ndarray:
    """(N, 3, 32, 32) uint8 from the (N, 3072) ``data`` array, refusing other shapes, dtypes and ranges."""
    data = np.asarray(_field(batch, "data", path))
    if data.dtype.kind not in "ui" or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise DataLayoutError(f"{path}: 'data' must be (N, {_PIXELS}) uint8 pixels, got {data.dtype} of shape "
                              f"{data.shape}")
    if data.dtype != np.uint8 and data.size and (data.min() < 0 or data.max() > 255):
        raise DataLayoutError(f"{path}: pixels must lie in 0..255, found {data.min()}..{data.max()}")
    return data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32)


def _labels(batch: dict, key: str, n: int, num_classes: int, path: Path) -> np.ndarray:
    """The ``key`` labels as int64, one per image and each in 0..num_classes-1."""
    labels = np.asarray(_field(batch, key, path))
    if labels.size == 0:        # np.asarray([]) is float64
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "ui" or labels.shape != (n,):
        raise DataLayoutError(f"{path}: {key!r} must hold {n} integer labels (one per image), got {labels.dtype} "
                              f"of shape {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataLayoutError(f"{path}: {key!r} must lie in 0..{num_classes - 1} ({num_classes} classes), found "
                              f"{labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def _split(path: Path, key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    x = _images(batch, path)
    return x, _labels(batch, key, len(x), num_classes, path)


def _class_names(meta: Path, key: str, default: list[str]) -> list[str]:
    if not meta.is_file():
        return default
    names = _field(_unpickle(meta), key, meta)
    if not isinstance(names, (list, tuple)) or not all(isinstance(c, (str, bytes)) for c in names):
        raise DataLayoutError(f"{meta}: {key!r} must be a list of class names")
    return [c.decode("latin1") if isinstance(c, bytes) else c for c in names]


# ---------------------------------------------------------------------------------------------- layouts
def _is_cifar10(path: Path) -> bool:
    return (path / "data_batch_1").is_file() or (path / "test_batch").is_file()


def _is_cifar100(path: Path) -> bool:
    return (path / "train").is_file() and (path / "test").is_file()


def read_cifar10(folder: Path, cache_dir: Path | None = None) -> Arrays:
    """A ``cifar-10-batches-py`` folder: ``data_batch_1..5`` + ``test_batch`` (+ ``batches.meta``)."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataLayoutError(f"{folder} looks like cifar-10-batches-py but lacks {', '.join(missing)}")
    classes = _class_names(folder / "batches.meta", "label_names", CIFAR10_CLASSES)
    xs, ys = zip(*(_split(folder / n, "labels", len(classes)) for n in names))
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5], classes


def read_cifar100(folder: Path, cache_dir: Path | None = None) -> Arrays:
    """A ``cifar-100-python`` folder: ``train`` + ``test`` (+ ``meta``), with the 100 fine labels."""
    classes = _class_names(folder / "meta", "fine_label_names", [str(i) for i in range(100)])
    (xtr, ytr), (xte, yte) = (_split(folder / s, "fine_labels", len(classes)) for s in ("train", "test"))
    return xtr, ytr, xte, yte, classes


register_layout("cifar10-pickled", _is_cifar10, read_cifar10,
                description="cifar-10-batches-py/ (pickled CIFAR-10: data_batch_1..5 + test_batch)")
register_layout("cifar100-pickled", _is_cifar100, read_cifar100,
                description="cifar-100-python/ (pickled CIFAR-100: train + test, fine labels)")


# ---------------------------------------------------------------------------------------------- named data sets
def find_cifar(name: str, cache_dir: Path) -> Path | None:
    """The pickled folder of ``cifar10``/``cifar100`` under ``cache_dir``, unpacking a downloaded archive if needed."""
    url, folder, _ = CIFAR[name]
    archive = Path(cache_dir) / url.rsplit("/", 1)[1]
    for candidate in (Path(cache_dir) / folder, Path(cache_dir) / archives.stem(archive) / folder):
        if candidate.is_dir():
            return candidate
    if archive.is_file():
        return archives.unpack(archive, cache_dir) / folder
    return None


def download_cifar(name: str, cache_dir: Path) -> Path:
    """Download the official archive (checked against its md5), unpack it, return the pickled folder."""
    url, folder, md5 = CIFAR[name]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    archive = cache_dir / url.rsplit("/", 1)[1]
    part = archive.with_name(archive.name + ".part")
    print(f"downloading {url} to {archive} ...", file=sys.stderr, flush=True)
    urllib.request.urlretrieve(url, part)  # nosec B310: fixed https address of the official data set
    digest = hashlib.md5(part.read_bytes()).hexdigest()  # nosec B324: integrity check, not security
    if digest != md5:
        part.unlink()
        raise DataLayoutError(f"{url}: downloaded file has md5 {digest}, expected {md5}; try again")
    os.replace(part, archive)
    return archives.unpack(archive, cache_dir) / folder


def _load_named(name: str, cache_dir: Path, download: bool) -> Arrays:
    folder = find_cifar(name, cache_dir)
    if folder is None:
        if not download:
            url, inner, _ = CIFAR[name]
            raise DataLayoutError(f"{name} was not found under {cache_dir} (looked for {inner}/ and "
                                  f"{url.rsplit('/', 1)[1]}); pass download=True (--download) when online, set "
                                  "$LWDC_DATA / cache_dir to where it is, or give the path of a folder or archive "
                                  "holding it")
        folder = download_cifar(name, cache_dir)
    return read_cifar10(folder) if name == "cifar10" else read_cifar100(folder)


def _load_subset(cache_dir: Path | None = None, download: bool = False, path: Path = SUBSET_PATH) -> Arrays:
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
    return images[:n_train], labels[:n_train], images[n_train:], labels[n_train:], classes


register_dataset("cifar10-subset", _load_subset, description="6,000 CIFAR-10 images shipped with lwdc")
for _name in CIFAR:
    register_dataset(_name, functools.partial(_load_named, _name),
                     description=f"{_name} from $LWDC_DATA / cache_dir, downloaded with download=True")
