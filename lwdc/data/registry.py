"""Registries of named data sets and on-disk layouts, and ``load_data``, which turns a name or a path into a bundle.

A new data set is one ``register_dataset`` entry; a new file layout is one ``register_layout`` entry (a detector
and a reader). Both return plain arrays; the registry wraps them with the entry's task and default augmentation.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

from . import archives
from .augment import AUTO, Augment
from .datasets import DataBundle, make_bundle
from .errors import DataLayoutError

__all__ = ["Arrays", "register_dataset", "register_layout", "list_datasets", "list_layouts", "describe_layouts",
           "find_layout", "load_data", "default_cache_dir", "parse_options"]

# (x_train, y_train, x_test, y_test, class_names or None[, info dict]); y may be an array or a dict of arrays;
# info (optional) describes the samples: sample_rate, time_offset, per-sample groups... (DataBundle.info)
Arrays = Tuple[object, ...]
DatasetLoader = Callable[[Path, bool], Arrays]          # (cache_dir, download) -> arrays
LayoutReader = Callable[[Path, Path], Arrays]           # (folder, cache_dir) -> arrays


@dataclass(frozen=True)
class _Entry:
    """One registered data set or layout: how to get its arrays, and what they are for."""

    name: str
    read: Callable
    task: str
    augment: Optional[Augment]
    description: str
    detect: Optional[Callable[[Path], bool]] = None

    def bundle(self, name: str, arrays: Arrays) -> DataBundle:
        info = arrays[5] if len(arrays) > 5 else None
        return make_bundle(name, *arrays[:5], task=self.task, augment=self.augment, info=info)

    def options(self) -> list[str]:
        """The options its reader takes (``load_data(..., options=...)``): its keyword-only parameters."""
        return [p.name for p in inspect.signature(self.read).parameters.values() if p.kind is p.KEYWORD_ONLY]

    def read_with(self, args: tuple, options: dict | None):
        """``read(*args)`` with the user's options, each checked against what the reader takes."""
        options = dict(options or {})
        accepted = self.options()
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise DataLayoutError(f"{self.name} data take no option(s) {', '.join(unknown)}; accepted: "
                                  f"{', '.join(accepted) or 'none'}")
        return self.read(*args, **options)


_DATASETS: dict[str, _Entry] = {}
_LAYOUTS: dict[str, _Entry] = {}
_GENERIC = ("the parent folder of one of these", "a .tar.gz / .tgz archive of one of these")


def _add(table: dict[str, _Entry], kind: str, entry: _Entry, overwrite: bool) -> None:
    if entry.name in table and not overwrite:
        raise ValueError(f"a {kind} named {entry.name!r} is already registered; pass overwrite=True to replace it")
    table[entry.name] = entry


def register_dataset(name: str, loader_fn: Optional[DatasetLoader] = None, *, task: str = "classification",
                     augment: Optional[Augment] = AUTO, description: str = "", overwrite: bool = False):
    """Make ``load_data(name)`` return ``loader_fn(cache_dir, download)``'s arrays as a bundle for ``task``.

    ``augment`` is the bundle's default augmentation (``AUTO``: chosen from the sample shape and task; None:
    none). Usable as a decorator: ``@register_dataset("mine")``.
    """
    def add(fn: DatasetLoader) -> DatasetLoader:
        _add(_DATASETS, "data set", _Entry(name, fn, task, augment, description or fn.__doc__ or ""), overwrite)
        return fn

    return add if loader_fn is None else add(loader_fn)


def register_layout(name: str, detect: Callable[[Path], bool], read: LayoutReader, *, description: str,
                    task: str = "classification", augment: Optional[Augment] = AUTO,
                    overwrite: bool = False) -> None:
    """Make ``load_data(path)`` read folders for which ``detect(folder)`` holds with ``read(folder, cache_dir)``.

    Layouts are tried in registration order; ``description`` is shown when a path holds no known layout.
    """
    _add(_LAYOUTS, "layout", _Entry(name, read, task, augment, description, detect), overwrite)


def list_datasets() -> list[str]:
    """Names ``load_data`` accepts besides paths."""
    return sorted(_DATASETS)


def list_layouts() -> list[str]:
    """Names of the registered on-disk layouts, in the order they are tried."""
    return list(_LAYOUTS)


def describe_layouts() -> tuple[str, ...]:
    """One line per accepted layout, for error messages and help texts."""
    return tuple(e.description for e in _LAYOUTS.values()) + _GENERIC


def _detect(path: Path) -> Optional[_Entry]:
    return next((e for e in _LAYOUTS.values() if e.detect(path)), None)


def find_layout(root: Path, depth: int = 2) -> Optional[tuple[str, Path]]:
    """``(layout name, folder)`` at ``root`` or in its sub-folders (shallowest first, up to ``depth``)."""
    level = [Path(root)]
    for _ in range(depth + 1):
        found = [(e.name, p) for p in level if (e := _detect(p)) is not None]
        if len(found) > 1:
            raise DataLayoutError(f"{root} holds several data sets ({', '.join(str(p) for _, p in found)}); "
                                  "give the path of the one to use")
        if found:
            return found[0]
        level = [c for p in level for c in sorted(p.iterdir()) if c.is_dir() and not c.name.startswith(".")]
    return None


def parse_options(pairs) -> dict:
    """``KEY=VALUE`` strings (``--data-option``) -> reader options; values that read as numbers become numbers."""
    options = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip().isidentifier():
            raise DataLayoutError(f"data option {pair!r}: use KEY=VALUE, e.g. fold=2")
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                continue
        options[key.strip()] = value
    return options


def default_cache_dir() -> Path:
    """``$LWDC_DATA`` if set, else ``~/.cache/lwdc``."""
    return Path(os.environ.get("LWDC_DATA") or Path.home() / ".cache" / "lwdc").expanduser()


def load_data(source: str = "cifar10-subset", cache_dir: str | Path | None = None, download: bool = False, *,
              max_unpack_bytes: int | None = None, options: dict | None = None) -> DataBundle:
    """Load a registered data set by name (``list_datasets()``) or one from a path.

    A path may be a folder holding one of the registered layouts (or the parent of one), or a ``.tar.gz``/``.tgz``
    archive of one, unpacked once into ``cache_dir`` (at most ``max_unpack_bytes``, default
    ``$LWDC_MAX_UNPACK_BYTES`` or 4 GiB). Decoded image folders are cached there as ``.npz``, so only the first
    load pays for decoding. ``cache_dir`` defaults to ``$LWDC_DATA`` or ``~/.cache/lwdc``. ``options`` go to
    the layout's reader (e.g. the P300 epochs' ``{"subject": 1, "fold": 2}``); one it does not take is an error.
    """
    source = str(source)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if source in _DATASETS:
        entry = _DATASETS[source]
        return entry.bundle(source, entry.read_with((cache, download), options))
    path = Path(source).expanduser()
    if not path.exists():
        raise DataLayoutError(f"data source {source!r} is neither a registered data set ({', '.join(list_datasets())})"
                              " nor an existing path; a path must hold one of: " + "; ".join(describe_layouts()))
    root = path
    if path.is_file() and path.name.lower().endswith((".tar.gz", ".tgz")):
        root = archives.unpack(path, cache, max_bytes=max_unpack_bytes)
    found = find_layout(root) if root.is_dir() else None
    if found is None:
        raise DataLayoutError(f"no recognised data layout in {source}; accepted layouts: "
                              + "; ".join(describe_layouts()))
    entry = _LAYOUTS[found[0]]
    return entry.bundle(source, entry.read_with((found[1], cache), options))
