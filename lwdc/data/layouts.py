"""Readers for the on-disk layouts ``load_data`` accepts, safe archive unpacking and the CIFAR download.

Every reader returns plain arrays ``(x_train, y_train, x_test, y_test, class_names)``; ``datasets.py`` wraps them.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import sys
import tarfile
import urllib.request
import warnings
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

__all__ = ["LAYOUTS", "DataLayoutError", "UnsafeArchiveError", "CIFAR", "find_layout", "read_pickled",
           "read_image_folder", "unpack", "find_cifar", "download_cifar"]

LAYOUTS = ("cifar-10-batches-py/ (pickled CIFAR-10: data_batch_1..5 + test_batch)",
           "cifar-100-python/ (pickled CIFAR-100: train + test, fine labels)",
           "an image folder: train/<class>/*.jpg|jpeg|png + test/<class>/*.jpg|jpeg|png",
           "the parent folder of one of these",
           "a .tar.gz / .tgz archive of one of these")
# name -> (official archive URL, folder inside it, md5 of the archive)
CIFAR = {"cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-batches-py",
                     "c58f30108f718f92721af3b95e74349a"),
         "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python",
                      "eb9058c3a382ffc7106e4002c42a8d85")}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_CACHE_VERSION = "1"
_MARKER = ".lwdc-unpacked"
# (x_train, y_train, x_test, y_test, class_names)
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]


class DataLayoutError(ValueError):
    """The path holds no layout lwdc can read; the message names the path and the accepted layouts."""


class UnsafeArchiveError(DataLayoutError):
    """An archive member would land outside the target folder (absolute path, ``..``, link or device)."""


# ---------------------------------------------------------------------------------------------- layout detection
def _kind(path: Path) -> str | None:
    if (path / "data_batch_1").is_file() or (path / "test_batch").is_file():
        return "cifar10"
    if (path / "train").is_file() and (path / "test").is_file():
        return "cifar100"
    if (path / "train").is_dir() and (path / "test").is_dir():
        return "imagefolder"
    return None


def find_layout(root: Path, depth: int = 2) -> tuple[str, Path] | None:
    """``(kind, folder)`` of the layout at ``root`` or in its sub-folders (shallowest first, up to ``depth``)."""
    level = [root]
    for _ in range(depth + 1):
        found = [(k, p) for p in level if (k := _kind(p)) is not None]
        if len(found) > 1:
            raise DataLayoutError(f"{root} holds several data sets ({', '.join(str(p) for _, p in found)}); "
                                  "give the path of the one to use")
        if found:
            return found[0]
        level = [c for p in level for c in sorted(p.iterdir()) if c.is_dir() and not c.name.startswith(".")]
    return None


# ---------------------------------------------------------------------------------------------- pickled CIFAR
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only dicts, lists, strings, numbers and numpy arrays: a data file cannot run code."""

    _NUMPY = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}

    def find_class(self, module: str, name: str):
        if (module.split(".")[0] == "numpy" and name in self._NUMPY) or (module, name) == ("_codecs", "encode"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)   # numpy.core -> numpy._core in numpy 2
                return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data and numpy arrays")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataLayoutError(f"{path} is not a pickled CIFAR file ({exc})") from None
    if not isinstance(obj, dict):
        raise DataLayoutError(f"{path} holds a {type(obj).__name__}, not the dict of a pickled CIFAR file")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _images(batch: dict, path: Path) -> np.ndarray:
    data = np.asarray(batch.get("data"), dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataLayoutError(f"{path}: 'data' must be (N, 3072) uint8, got shape {data.shape}")
    return data.reshape(-1, 3, 32, 32)


def read_pickled(folder: Path) -> Arrays:
    """A ``cifar-10-batches-py`` or ``cifar-100-python`` folder (the official pickled format)."""
    if _kind(folder) == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataLayoutError(f"{folder} looks like cifar-10-batches-py but lacks {', '.join(missing)}")
        batches = [_unpickle(folder / n) for n in names]
        xs = [_images(b, folder / n) for b, n in zip(batches, names)]
        ys = [np.asarray(b["labels"], dtype=np.int64) for b in batches]
        meta = folder / "batches.meta"
        classes = [str(c) for c in _unpickle(meta)["label_names"]] if meta.is_file() else CIFAR10_CLASSES
        return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5], classes
    train, test = _unpickle(folder / "train"), _unpickle(folder / "test")
    meta = folder / "meta"
    n_classes = 1 + int(max(np.max(train["fine_labels"]), np.max(test["fine_labels"])))
    classes = ([str(c) for c in _unpickle(meta)["fine_label_names"]] if meta.is_file()
               else [str(i) for i in range(n_classes)])
    return (_images(train, folder / "train"), np.asarray(train["fine_labels"], dtype=np.int64),
            _images(test, folder / "test"), np.asarray(test["fine_labels"], dtype=np.int64), classes)


# ---------------------------------------------------------------------------------------------- image folders
def _decode(path: Path) -> np.ndarray:
    """(C, H, W) uint8: grey images keep one channel, everything else becomes RGB."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "RGB"):
                im = im.convert("L") if im.mode in ("1", "LA", "I", "I;16", "F") else im.convert("RGB")
            a = np.asarray(im, dtype=np.uint8)
    except OSError as exc:
        raise DataLayoutError(f"{path}: cannot decode image ({exc})") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _split_files(folder: Path, split: str, classes: list[str]) -> list[tuple[Path, int]]:
    files = []
    for label, cls in enumerate(classes):
        d = folder / split / cls
        if d.is_dir():
            files += [(p, label) for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return files


def _decode_all(files: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    arrays, size, first = [], None, None
    for path, _ in files:
        a = _decode(path)
        if size is None:
            size, first = a.shape[1:], path
        elif a.shape[1:] != size:
            raise DataLayoutError(f"{path} is {a.shape[2]}x{a.shape[1]} pixels but {first} is {size[1]}x{size[0]}: "
                                  "all images must share one size (lwdc does not resize)")
        arrays.append(a)
    if any(a.shape[0] == 3 for a in arrays):    # a few grey images among colour ones: make them RGB
        arrays = [np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a for a in arrays]
    return np.stack(arrays), np.array([label for _, label in files], dtype=np.int64)


def _cache_key(folder: Path, classes: list[str]) -> str:
    """Absolute path + modification (and change) times of the split and class folders."""
    parts = [_CACHE_VERSION, str(folder.resolve())]
    for split in ("train", "test"):
        for d in [folder / split] + [folder / split / c for c in classes]:
            if d.is_dir():
                st = d.stat()
                parts.append(f"{d.name}:{st.st_mtime_ns}:{st.st_ctime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def read_image_folder(folder: Path, cache_dir: Path) -> Arrays:
    """``train/<class>/*`` + ``test/<class>/*``; classes are the train folder names, sorted (label = position).

    The decoded arrays are cached as an uncompressed ``.npz`` in ``cache_dir``: decoding 60,000 JPEGs takes
    seconds, reading them back a fraction of that.
    """
    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataLayoutError(f"{folder / 'train'} holds no class folders; expected train/<class>/*.jpg|png")
    extra = sorted(p.name for p in (folder / "test").iterdir()
                   if p.is_dir() and not p.name.startswith(".") and p.name not in classes)
    if extra:
        raise DataLayoutError(f"{folder / 'test'} has classes missing from train/: {', '.join(extra)}")
    cached = Path(cache_dir) / f"imagefolder-{folder.name}-{_cache_key(folder, classes)}.npz"
    if cached.is_file():
        with np.load(cached, allow_pickle=False) as z:
            return z["xtr"], z["ytr"], z["xte"], z["yte"], [str(c) for c in z["classes"]]
    files = {split: _split_files(folder, split, classes) for split in ("train", "test")}
    for split, found in files.items():
        if not found:
            raise DataLayoutError(f"{folder / split} holds no images ({'|'.join(IMAGE_SUFFIXES)} in class folders)")
    x, y = _decode_all(files["train"] + files["test"])
    n = len(files["train"])
    xtr, ytr, xte, yte = x[:n], y[:n], x[n:], y[n:]
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, xtr=xtr, ytr=ytr, xte=xte, yte=yte, classes=np.array(classes))
        os.replace(tmp, cached)
    except OSError as exc:   # a read-only cache only costs speed
        warnings.warn(f"could not cache decoded images in {cache_dir}: {exc}")
    return xtr, ytr, xte, yte, classes


# ---------------------------------------------------------------------------------------------- archives
def _check_member(archive: Path, m: tarfile.TarInfo) -> None:
    name = m.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if (name.startswith(("/", "\\")) or PureWindowsPath(name).drive or ".." in parts
            or not (m.isfile() or m.isdir())):
        raise UnsafeArchiveError(f"{archive}: refusing to unpack member {name!r} (absolute path, '..', link or "
                                 "special file); only plain files and folders inside the archive are accepted")


def _stem(archive: Path) -> str:
    name = archive.name
    for suffix in (".tar.gz", ".tgz"):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return name


def _extract(archive: Path, dest: Path) -> None:
    """One streaming pass over the archive: check each member, then write it under ``dest``.

    Checked members have relative paths without ``..`` and are plain files or folders, and no link is ever
    created, so every write lands inside ``dest``.
    """
    try:
        with tarfile.open(archive, "r|*") as tar:
            for m in tar:
                _check_member(archive, m)
                path = dest.joinpath(*PurePosixPath(m.name.replace("\\", "/")).parts)
                if m.isdir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(path, "wb") as out:
                    shutil.copyfileobj(src, out)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DataLayoutError(f"{archive} is not a readable .tar.gz archive ({exc})") from None


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Hold an exclusive advisory lock on ``lock_path`` (POSIX); elsewhere, no lock."""
    try:
        import fcntl
    except ImportError:         # Windows: concurrent first unpacks are not serialised there
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def unpack(archive: Path, cache_dir: Path) -> Path:
    """Unpack ``archive`` once into ``cache_dir/<stem>/`` and return that folder.

    A marker records which archive (path, size, mtime) was unpacked, so a changed archive is unpacked again.
    Extraction goes to a temporary folder renamed at the end, so an interrupted unpack never looks finished;
    an unsafe member aborts it (nothing outside that folder is ever written) and the folder is removed.
    Processes that start at once (two benchmark runs) take turns through a lock file: one unpacks, the others
    then find its marker (without it, both replaced the folder and one deleted files under the other).
    """
    archive = Path(archive).resolve()
    st = archive.stat()
    stamp = f"{archive}:{st.st_size}:{st.st_mtime_ns}"
    target = Path(cache_dir) / _stem(archive)
    marker = target / _MARKER
    if marker.is_file() and marker.read_text() == stamp:
        return target
    with _exclusive(target.with_name(f".{target.name}.lock")):
        if marker.is_file() and marker.read_text() == stamp:     # another process unpacked it meanwhile
            return target
        if target.exists() and not marker.is_file():
            raise DataLayoutError(f"{target} exists but was not unpacked by lwdc from {archive}; remove it or pass "
                                  "another cache_dir")
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            _extract(archive, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        (tmp / _MARKER).write_text(stamp)
        if target.exists():   # an older unpack of a changed archive (it carries our marker)
            shutil.rmtree(target)
        os.replace(tmp, target)
    return target


# ---------------------------------------------------------------------------------------------- named CIFAR
def find_cifar(name: str, cache_dir: Path) -> Path | None:
    """The pickled folder of ``cifar10``/``cifar100`` under ``cache_dir``, unpacking a downloaded archive if needed."""
    url, folder, _ = CIFAR[name]
    archive = Path(cache_dir) / url.rsplit("/", 1)[1]
    for candidate in (Path(cache_dir) / folder, Path(cache_dir) / _stem(archive) / folder):
        if candidate.is_dir():
            return candidate
    if archive.is_file():
        return unpack(archive, cache_dir) / folder
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
    return unpack(archive, cache_dir) / folder
