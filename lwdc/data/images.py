"""Image folders (``train/<class>/*`` + ``test/<class>/*``): decoded once with PIL, then cached as ``.npz``.

Decoding 60,000 JPEGs takes seconds, reading them back a fraction of that; the cache is keyed on every file's
size and times, so an image edited in place is decoded again rather than served stale.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from .cache import save_npz
from .errors import DataLayoutError
from .registry import Arrays, register_layout

__all__ = ["IMAGE_SUFFIXES", "read_image_folder"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_CACHE_VERSION = "2"


def _pixels(im, path: Path) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8: grey stays grey, 16-bit values are scaled (not clipped) to 8 bits."""
    if im.mode in ("L", "RGB"):
        return np.asarray(im, dtype=np.uint8)
    if im.mode.startswith("I"):        # I;16* (16-bit PNG; "I" in older Pillow): 0..65535 onto 0..255
        a = np.asarray(im).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise DataLayoutError(f"{path}: {im.mode} pixels span {a.min()}..{a.max()}, beyond 16 bits; lwdc reads "
                                  "8- and 16-bit images")
        return ((a + 128) // 257).astype(np.uint8)
    if im.mode == "F":
        raise DataLayoutError(f"{path}: floating-point pixels; save the image with 8 or 16 bits per channel")
    return np.asarray(im.convert("L" if im.mode in ("1", "LA", "La") else "RGB"), dtype=np.uint8)


def _decode(path: Path) -> np.ndarray:
    """(C, H, W) uint8: grey images keep one channel, everything else becomes RGB."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)   # lwdc keeps every pixel in memory
            with Image.open(path) as im:
                a = _pixels(im, path)
    except DataLayoutError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataLayoutError(f"{path}: refusing to decode: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataLayoutError(f"{path}: cannot decode image ({exc})") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _class_files(folder: Path, split: str, classes: list[str]) -> list[tuple[str, int, str]]:
    """``(file, label, stamp)`` for every image of ``split``, the stamp holding its size and times for the cache
    key (one ``scandir`` pass: 60,000 files take a fraction of a second). A class folder without images is
    refused, as it would silently leave a class without samples (a missing test class folder is allowed)."""
    files = []
    for label, cls in enumerate(classes):
        d = folder / split / cls
        if not d.is_dir():
            continue
        with os.scandir(d) as it:
            found = sorted((e for e in it if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file()),
                           key=lambda e: e.name)
        if not found:
            raise DataLayoutError(f"{d} holds no images ({'|'.join(IMAGE_SUFFIXES)}); add some or remove the empty "
                                  "class folder")
        for e in found:
            st = e.stat()
            files.append((e.path, label, f"{split}/{cls}/{e.name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"))
    return files


def _decode_all(files: list[tuple[str, int, str]]) -> tuple[np.ndarray, np.ndarray]:
    arrays, size, first = [], None, None
    for path, _, _ in files:
        a = _decode(Path(path))
        if size is None:
            size, first = a.shape[1:], path
        elif a.shape[1:] != size:
            raise DataLayoutError(f"{path} is {a.shape[2]}x{a.shape[1]} pixels but {first} is {size[1]}x{size[0]}: "
                                  "all images must share one size (lwdc does not resize)")
        arrays.append(a)
    if any(a.shape[0] == 3 for a in arrays):    # a few grey images among colour ones: make them RGB
        arrays = [np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a for a in arrays]
    return np.stack(arrays), np.array([label for _, label, _ in files], dtype=np.int64)


def _cache_key(folder: Path, classes: list[str], files: list[tuple[str, int, str]]) -> str:
    """Every image's path, label, size and modification and change times (ns): an in-place edit changes the key
    even when it keeps the size and restores the mtime."""
    h = hashlib.sha256(f"{_CACHE_VERSION}|{folder.resolve()}|{'/'.join(classes)}".encode())
    h.update("|".join(f"{label}:{stamp}" for _, label, stamp in files).encode())
    return h.hexdigest()[:20]


def _is_image_folder(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def read_image_folder(folder: Path, cache_dir: Path) -> Arrays:
    """``train/<class>/*`` + ``test/<class>/*``; classes are the train folder names, sorted (label = position)."""
    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataLayoutError(f"{folder / 'train'} holds no class folders; expected train/<class>/*.jpg|png")
    extra = sorted(p.name for p in (folder / "test").iterdir()
                   if p.is_dir() and not p.name.startswith(".") and p.name not in classes)
    if extra:
        raise DataLayoutError(f"{folder / 'test'} has classes missing from train/: {', '.join(extra)}")
    files = {split: _class_files(folder, split, classes) for split in ("train", "test")}
    for split, found in files.items():
        if not found:
            raise DataLayoutError(f"{folder / split} holds no images ({'|'.join(IMAGE_SUFFIXES)} in class folders)")
    prefix = f"imagefolder-{folder.name}-{hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]}"
    cached = Path(cache_dir) / f"{prefix}-{_cache_key(folder, classes, files['train'] + files['test'])}.npz"
    if cached.is_file():
        with np.load(cached, allow_pickle=False) as z:
            return z["xtr"], z["ytr"], z["xte"], z["yte"], [str(c) for c in z["classes"]]
    x, y = _decode_all(files["train"] + files["test"])
    n = len(files["train"])
    save_npz(cached, prefix, dict(xtr=x[:n], ytr=y[:n], xte=x[n:], yte=y[n:], classes=np.array(classes)),
             "decoded images")
    return x[:n], y[:n], x[n:], y[n:], classes


register_layout("imagefolder", _is_image_folder, read_image_folder,
                description="an image folder: train/<class>/*.jpg|jpeg|png + test/<class>/*.jpg|jpeg|png")
