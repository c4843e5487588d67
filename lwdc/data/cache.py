"""The decoded-data cache: one ``.npz`` per source folder, keyed on its files, written atomically."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["save_npz"]


def save_npz(cached: Path, prefix: str, arrays: dict, what: str = "decoded data") -> None:
    """Write the cache atomically, then drop older caches of the same folder (each is the data set's size).
    A read-only cache folder only costs speed: it warns and goes on."""
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, cached)
        for old in cached.parent.glob(f"{prefix}-*.npz"):
            if old != cached:
                old.unlink(missing_ok=True)
    except OSError as exc:
        warnings.warn(f"could not cache {what} in {cached.parent}: {exc}")
