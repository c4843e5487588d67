"""Landmark annotation files, read into plain annotations before any image is opened: lwdc's ``landmarks.csv``
and DeepLabCut's ``CollectedData_<scorer>.csv`` (``.h5`` where pandas and PyTables are installed), one set per
folder, or a folder of sets. Each refusal is its own ``LandmarkDataError`` subclass naming the file and row.

``landmarks.csv``: a header ``image,width,height,<point>_x,<point>_y,...`` and one row per image (both cells of a
point empty: not visible); images under ``images/`` (or beside the CSV). DeepLabCut: header rows ``scorer``,
optionally ``individuals``, ``bodyparts``, ``coords``, then per image its path (one column in older versions,
three since 2.2) and x, y per bodypart; the images are found by file name beside the CSV, as in a project's
``labeled-data/<video>/``. Image names are file names inside the set's folder: a path that leaves it is refused.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataLayoutError

__all__ = ["LandmarkDataError", "MissingColumnsError", "PointOutsideImageError", "UnreadableImageError",
           "PointCountMismatchError", "LandmarkSet", "read_lwdc_csv", "read_dlc", "read_sets", "is_set",
           "subsets", "CSV_NAME"]

CSV_NAME = "landmarks.csv"
_DLC = re.compile(r"^CollectedData_.+\.(csv|h5)$")


class LandmarkDataError(DataLayoutError):
    """Landmark annotations lwdc refuses; the message names the file, the row and what is expected."""


class MissingColumnsError(LandmarkDataError):
    """The CSV lacks image, width, height or any <point>_x/<point>_y column."""


class PointOutsideImageError(LandmarkDataError):
    """A labelled point lies outside its image (-0.5 .. W - 0.5, -0.5 .. H - 0.5 in pixel coordinates)."""


class UnreadableImageError(LandmarkDataError):
    """An image named by the annotations is missing, does not open, or is not the size the CSV says."""


class PointCountMismatchError(LandmarkDataError):
    """Rows or header disagree on the points: an x without its y, a row with more or fewer cells than the header."""


@dataclass
class LandmarkSet:
    """One set's annotations as read: image files, declared sizes (None: taken from the image), points (N, K, 2)
    in pixels of the original images, NaN where not visible."""

    name: str
    source: Path
    parts: list[str]
    images: list[Path]
    sizes: list[tuple[int, int] | None]
    points: np.ndarray


def _rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LandmarkDataError(f"{path}: cannot read as CSV ({exc})") from None


def _number(path: Path, row: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LandmarkDataError(f"{path}, row {row}: {column} is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise LandmarkDataError(f"{path}, row {row}: {column} is {text!r}; leave both cells empty for a point that "
                                "is not visible")
    return value


def _image_path(path: Path, base: Path, row: int, name: str) -> Path:
    """``base/name``, refused if it would leave ``base`` (absolute, ``..``, a link pointing out)."""
    if not name or name.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", name) or re.match(r"^[A-Za-z]:", name):
        raise LandmarkDataError(f"{path}, row {row}: image {name!r} must be a file name inside {base}")
    target = base.joinpath(*re.split(r"[/\\]", name))
    if not target.resolve().is_relative_to(base.resolve()):
        raise LandmarkDataError(f"{path}, row {row}: image {name!r} leads outside {base}; refused")
    return target


def _points(path: Path, row: int, cells: list[str], parts: list[str]) -> np.ndarray:
    xy = np.full((len(parts), 2), np.nan)
    for k, part in enumerate(parts):
        x, y = cells[2 * k].strip(), cells[2 * k + 1].strip()
        if bool(x) != bool(y):
            raise PointCountMismatchError(f"{path}, row {row}: point {part} has {'x' if x else 'y'} but no "
                                          f"{'y' if x else 'x'}; give both, or leave both empty (not visible)")
        if x:
            xy[k] = _number(path, row, f"{part}_x", x), _number(path, row, f"{part}_y", y)
    return xy


def read_lwdc_csv(folder: Path) -> LandmarkSet:
    """``landmarks.csv`` + ``images/``: columns image,width,height then <point>_x,<point>_y pairs."""
    path = folder / CSV_NAME
    rows = _rows(path)
    if not rows:
        raise MissingColumnsError(f"{path} is empty; expected a header image,width,height,<point>_x,<point>_y,...")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in ("image", "width", "height") if c not in header]
    if missing:
        raise MissingColumnsError(f"{path} lacks column(s) {', '.join(missing)}; expected image,width,height,"
                                  f"<point>_x,<point>_y,... (found {', '.join(header)})")
    rest = [h for h in header if h not in ("image", "width", "height")]
    odd = [h for h in rest if not h.endswith(("_x", "_y"))]
    if odd:
        raise MissingColumnsError(f"{path}: column(s) {', '.join(odd)} are neither image, width, height nor "
                                  "<point>_x/<point>_y")
    parts = list(dict.fromkeys(h[:-2] for h in rest))
    if not parts:
        raise MissingColumnsError(f"{path} has no <point>_x,<point>_y columns: no landmarks to learn")
    unpaired = [f"{p}_{c}" for p in parts for c in "xy" if f"{p}_{'y' if c == 'x' else 'x'}" in rest
                and f"{p}_{c}" not in rest]
    if unpaired:
        raise PointCountMismatchError(f"{path}: column(s) {', '.join(unpaired)} missing: every point needs an _x "
                                      "and a _y column")
    col = {h: i for i, h in enumerate(header)}
    order = [col[f"{p}_{c}"] for p in parts for c in "xy"]
    base = folder / "images" if (folder / "images").is_dir() else folder
    images, sizes, points, seen = [], [], [], {}
    for r, cells in enumerate(rows[1:], start=2):
        if len(cells) != len(header):
            raise PointCountMismatchError(f"{path}, row {r}: {len(cells)} cells, the header has {len(header)}; "
                                          "every row needs one cell per column (empty for a point not visible)")
        name = cells[col["image"]].strip()
        if name in seen:
            raise LandmarkDataError(f"{path}, row {r}: image {name!r} is labelled twice (rows {seen[name]} and {r})")
        seen[name] = r
        wh = tuple(_number(path, r, c, cells[col[c]]) for c in ("width", "height"))
        if any(v < 1 or v != int(v) for v in wh):
            raise LandmarkDataError(f"{path}, row {r}: width and height must be whole pixels >= 1, got {wh}")
        images.append(_image_path(path, base, r, name))
        sizes.append((int(wh[0]), int(wh[1])))
        points.append(_points(path, r, [cells[i] for i in order], parts))
    if not images:
        raise LandmarkDataError(f"{path} labels no images")
    return LandmarkSet(folder.name, path, parts, images, sizes, np.stack(points))


def _dlc_table(path: Path) -> tuple[list[list[str]], int]:
    """DeepLabCut's table as CSV-like rows (header rows first) and the number of index columns."""
    if path.suffix == ".h5":
        try:
            import pandas as pd
            frame = pd.read_hdf(path)
        except ImportError:
            raise LandmarkDataError(f"{path}: reading DeepLabCut's .h5 needs pandas and PyTables (pip install pandas "
                                    "tables); DeepLabCut writes the same labels as CollectedData_*.csv: keep that "
                                    "file beside it") from None
        except Exception as exc:  # noqa: BLE001 - HDF5 readers raise many types for foreign files
            raise LandmarkDataError(f"{path}: not a readable DeepLabCut table ({type(exc).__name__})") from None
        levels = [list(map(str, frame.columns.get_level_values(i))) for i in range(frame.columns.nlevels)]
        names = list(frame.columns.names)
        index = ["/".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in frame.index]
        head = [[str(n)] + lv for n, lv in zip(names, levels)]
        body = [[i] + ["" if v != v else repr(float(v)) for v in row] for i, row in zip(index, frame.to_numpy())]
        return head + body, 1
    rows = _rows(path)
    coords = next((i for i, r in enumerate(rows) if r and r[0].strip() == "coords"), None)
    if not rows or rows[0][0].strip() != "scorer" or coords is None:
        raise MissingColumnsError(f"{path}: not DeepLabCut's CollectedData layout (header rows scorer, bodyparts, "
                                  "coords, then one row per image)")
    n_index = 1
    while n_index < len(rows[coords]) and not rows[coords][n_index].strip():
        n_index += 1
    return rows, n_index


def read_dlc(folder: Path) -> LandmarkSet:
    """``CollectedData_<scorer>.csv`` (or ``.h5``) and the images beside it (DeepLabCut's labeled-data folder)."""
    found = sorted(p for p in folder.iterdir() if _DLC.match(p.name))
    csvs = [p for p in found if p.suffix == ".csv"] or found
    if len(csvs) > 1:
        raise LandmarkDataError(f"{folder} holds several label files ({', '.join(p.name for p in csvs)}); keep one")
    path = csvs[0]
    rows, n_index = _dlc_table(path)
    labels = {r[0].strip(): r for r in rows if r and r[0].strip() in ("scorer", "individuals", "bodyparts", "coords")}
    if "bodyparts" not in labels:
        raise MissingColumnsError(f"{path}: no bodyparts header row")
    width = len(labels["coords"])
    if any(len(r) != width for r in labels.values()):
        raise PointCountMismatchError(f"{path}: the header rows have different lengths "
                                      f"({', '.join(f'{k} {len(r)}' for k, r in labels.items())})")
    coords = [c.strip() for c in labels["coords"][n_index:]]
    bodyparts = [c.strip() for c in labels["bodyparts"][n_index:]]
    individuals = [c.strip() for c in labels.get("individuals", [""] * width)[n_index:]]
    several = len(set(individuals)) > 1
    keep = [i for i, c in enumerate(coords) if c in ("x", "y")]       # machine labels add 'likelihood': ignored
    parts = []
    for a, b in zip(keep[::2], keep[1::2] + [None]):
        if b is None or coords[a] != "x" or coords[b] != "y" or (bodyparts[a], individuals[a]) != (
                bodyparts[b], individuals[b]):
            raise PointCountMismatchError(f"{path}: the coords row must pair x, y for each bodypart; column "
                                          f"{n_index + a + 1} ({bodyparts[a]} {coords[a]}) has no partner")
        parts.append(f"{individuals[a]}_{bodyparts[a]}" if several else bodyparts[a])
    if not parts:
        raise MissingColumnsError(f"{path}: no x/y columns")
    first = max(i for i, r in enumerate(rows) if r in labels.values()) + 1
    images, points = [], []
    for r, cells in enumerate(rows[first:], start=first + 1):
        if len(cells) != width:
            raise PointCountMismatchError(f"{path}, row {r}: {len(cells)} cells, the header has {width}")
        name = [c for c in cells[:n_index] if c.strip()][-1].strip() if any(c.strip() for c in cells[:n_index]) \
            else ""
        images.append(_image_path(path, folder, r, re.split(r"[/\\]", name)[-1] if name else ""))
        values = [cells[n_index + i] for i in keep]
        points.append(_points(path, r, values, parts))
    if not images:
        raise LandmarkDataError(f"{path} labels no images")
    return LandmarkSet(folder.name, path, parts, images, [None] * len(images), np.stack(points))


def is_set(folder: Path) -> bool:
    try:
        return (folder / CSV_NAME).is_file() or any(_DLC.match(p.name) for p in folder.iterdir())
    except OSError:
        return False


def subsets(folder: Path) -> list[Path]:
    return [c for c in sorted(folder.iterdir()) if c.is_dir() and not c.name.startswith(".") and is_set(c)]


def read_sets(folder: Path, subset: str | None = None) -> list[LandmarkSet]:
    """The annotations of ``folder`` (a set), or of its sub-folder ``subset`` / every sub-folder (a collection)."""
    folder = Path(folder)
    if is_set(folder):
        if subset is not None:
            raise LandmarkDataError(f"{folder} is a single landmark set; subset={subset!r} applies to a folder of sets")
        sets = [folder]
    else:
        sets = subsets(folder)
        names = [p.name for p in sets]
        if subset is not None:
            if str(subset) not in names:
                raise LandmarkDataError(f"{folder} has no landmark set {subset!r}; sets: {', '.join(names)}")
            sets = [folder / str(subset)]
    read = [read_lwdc_csv(p) if (p / CSV_NAME).is_file() else read_dlc(p) for p in sets]
    if len({tuple(s.parts) for s in read}) > 1:
        listing = "; ".join(f"{s.name}: {', '.join(s.parts)}" for s in read)
        raise LandmarkDataError(f"{folder} holds landmark sets with different points ({listing}); choose one with "
                                "subset=NAME (--data-option subset=NAME)")
    return read
