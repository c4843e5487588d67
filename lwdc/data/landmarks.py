"""Landmark (keypoint) data: two layouts, each a set of images with K labelled points, read into fixed-size
images with normalised point coordinates, split into k folds.

* lwdc's layout: ``landmarks.csv`` (columns ``image,width,height,<point>_x,<point>_y,...``; an empty pair = not
  visible) beside ``images/``. ``landmarks_dlc.tar.gz`` ships two such sets (openfield/, reaching/).
* DeepLabCut's ``CollectedData_<scorer>.csv`` (header rows scorer[/individuals]/bodyparts/coords, then one row
  per image: its path and x, y per point) beside the images, as in a project's ``labeled-data/<video>/``; the
  ``.h5`` twin only where pandas and PyTables are installed.

A folder whose sub-folders are such sets (``landmarks_dlc/``, a project's ``labeled-data/``) is a collection:
``subset=NAME`` picks one, else sets with the same points are merged. Every image is resized to ``size`` (64: ours,
for CPU training; ``size=96`` or ``size=128x96`` for more detail) with PIL's antialiased bilinear filter; points
become fractions of the image, ``u = (x + 0.5) / W``, ``v = (y + 0.5) / H`` (pixel centres at integers, the
DeepLabCut convention), which resizing leaves unchanged. Targets: ``points`` (N, K, 2) (NaN: not visible),
``size`` (N, 2) the original width and height (errors are reported in those pixels), ``norm`` (N,) the NME
normaliser in those pixels, ``mirror`` (N, K) each point's left/right partner (for flips).

Reader options (``load_data(path, options={...})``, ``--data-option KEY=VALUE``): ``subset``, ``size``, ``folds``
(5) and ``fold`` (0: the test fold) with ``seed`` (0) for the k-fold split, ``normalizer`` (auto, bbox, image or
two point names ``a,b``), ``flip`` (auto: pairs named left/right; ``a:b,c:d``; none), ``balance`` (none or pose,
``lwdc.data.poses``) with ``bins`` (5). Files from strangers: image names must stay inside the set's folder, images
are decoded with PIL's decompression-bomb guard, and bad input is refused with a named error before anything is
cached.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .cache import save_npz
from .errors import DataLayoutError
from .images import _decode
from .landmark_files import (CSV_NAME, LandmarkDataError, LandmarkSet, MissingColumnsError, PointCountMismatchError,
                             PointOutsideImageError, UnreadableImageError, is_set, read_sets, subsets)
from .landmark_augment import landmark_augment
from .poses import balance_indices
from .registry import Arrays, register_layout

__all__ = ["LandmarkDataError", "MissingColumnsError", "PointOutsideImageError", "UnreadableImageError",
           "PointCountMismatchError", "LandmarkSet", "read_landmarks", "read_sets", "kfold_indices",
           "DEFAULT_SIZE", "DEFAULT_FOLDS", "NORMALIZERS", "CSV_NAME"]

DEFAULT_SIZE = 64
DEFAULT_FOLDS = 5
_CACHE_VERSION = "1"

#: The NME normaliser of each known set, recognised by its points: (points it has, normaliser, why). Others use
#: the diagonal of the visible points' bounding box. Open field: the body length, as the inter-ocular distance is
#: for faces (102-143 px, median 117; the inter-ear distance, 14-26 px, is too short to be stable). Reaching: one
#: camera at a fixed distance and no rigid body length among its points (the joystick markers move: 151-220 px),
#: so the image diagonal (1,117 px), which adds no per-frame noise.
NORMALIZERS = [(("snout", "leftear", "rightear", "tailbase"), "snout,tailbase", "body length, snout to tail base"),
               (("Hand", "Finger1", "Tongue", "Joystick1", "Joystick2"), "image", "image diagonal")]


def _is_landmarks(folder: Path) -> bool:
    return is_set(folder) or bool(subsets(folder))


def _decode_resized(path: Path, out_wh: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    from PIL import Image

    if not path.is_file():
        raise UnreadableImageError(f"{path}: no such image file")
    try:
        a = _decode(path)
    except DataLayoutError as exc:
        raise UnreadableImageError(str(exc)) from None
    size = (a.shape[2], a.shape[1])
    im = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
    out = np.asarray(im.resize(out_wh, Image.Resampling.BILINEAR), dtype=np.uint8)
    return (out[None] if out.ndim == 2 else out.transpose(2, 0, 1)), size


def _cache_path(sets: list[LandmarkSet], out_wh: tuple[int, int], cache_dir: Path) -> tuple[Path, str]:
    """Keyed on every image's path, size and times and the output size: an edited image is decoded again."""
    h = hashlib.sha256(f"{_CACHE_VERSION}|{out_wh}".encode())
    for p in (p for s in sets for p in s.images):
        st = p.stat() if p.is_file() else None
        h.update(f"|{p.resolve()}:{st and (st.st_size, st.st_mtime_ns, st.st_ctime_ns)}".encode())
    root = sets[0].source.parent.parent
    prefix = f"landmarks-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]}-{out_wh[0]}x{out_wh[1]}"
    return Path(cache_dir) / f"{prefix}-{h.hexdigest()[:20]}.npz", prefix


def _pixels(sets: list[LandmarkSet], out_wh: tuple[int, int], cached: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Resized images (N, C, H, W) uint8 and original sizes (N, 2), from ``cached`` when it exists."""
    if cached is not None and cached.is_file():
        with np.load(cached, allow_pickle=False) as z:
            return z["x"], z["sizes"]
    files = [p for s in sets for p in s.images]
    decoded = [_decode_resized(p, out_wh) for p in files]
    if any(a.shape[0] == 3 for a, _ in decoded):
        decoded = [(np.repeat(a, 3, 0) if a.shape[0] == 1 else a, s) for a, s in decoded]
    x, sizes = np.stack([a for a, _ in decoded]), np.array([s for _, s in decoded], np.int64)
    declared = [d for s in sets for d in s.sizes]
    for p, d, got in zip(files, declared, sizes):
        if d is not None and tuple(d) != tuple(got):
            raise UnreadableImageError(f"{p} is {got[0]}x{got[1]} pixels but the CSV says {d[0]}x{d[1]}")
    return x, sizes


def _check_inside(sets: list[LandmarkSet], sizes: np.ndarray) -> None:
    i = 0
    for s in sets:
        for j, pts in enumerate(s.points):
            w, h = sizes[i + j]
            bad = np.isfinite(pts).all(1) & ((pts[:, 0] < -0.5) | (pts[:, 0] > w - 0.5) | (pts[:, 1] < -0.5)
                                              | (pts[:, 1] > h - 0.5))
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise PointOutsideImageError(f"{s.source}: {s.images[j].name}: point {s.parts[k]} at "
                                             f"({pts[k, 0]:g}, {pts[k, 1]:g}) lies outside its {w}x{h} image "
                                             f"(x in -0.5..{w - 0.5:g}, y in -0.5..{h - 0.5:g})")
        i += len(s.points)


def _normaliser(spec: str, parts: list[str], points: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, str]:
    """Per-sample NME normaliser in original pixels, and what it is."""
    if spec == "auto":
        known = next(((rule, why) for names, rule, why in NORMALIZERS if set(names) == set(parts)), None)
        if known is not None:
            return _normaliser(known[0], parts, points, sizes)[0], known[1]
        spec = "bbox"
    if spec == "image":
        return np.hypot(sizes[:, 0], sizes[:, 1]).astype(np.float64), "image diagonal"
    if spec == "bbox":
        vis = np.isfinite(points).all(-1)
        lo = np.where(vis[..., None], points, np.inf).min(1)
        hi = np.where(vis[..., None], points, -np.inf).max(1)
        with np.errstate(invalid="ignore"):
            diag = np.hypot(*(hi - lo).T)
        return np.where(vis.sum(1) >= 2, diag, np.nan), "diagonal of the visible points' bounding box"
    pair = [p.strip() for p in spec.split(",")]
    if len(pair) != 2 or not set(pair) <= set(parts):
        raise LandmarkDataError(f"normalizer {spec!r}: give auto, bbox, image or two point names a,b of "
                                f"{', '.join(parts)}")
    a, b = parts.index(pair[0]), parts.index(pair[1])
    d = np.hypot(*(points[:, a] - points[:, b]).T)
    return d, f"distance {pair[0]} to {pair[1]}"


def _mirror(spec: str, parts: list[str]) -> tuple[np.ndarray, list[list[str]]]:
    """Each point's partner under a horizontal flip (itself if none), and the pairs."""
    pairs = []
    if spec == "auto":
        for p in parts:
            for a, b in (("left", "right"), ("Left", "Right"), ("LEFT", "RIGHT")):
                q = p.replace(a, b) if a in p else None
                if q and q != p and q in parts:
                    pairs.append([p, q])
    elif spec not in ("none", ""):
        for item in spec.split(","):
            pair = [v.strip() for v in item.split(":")]
            if len(pair) != 2 or not set(pair) <= set(parts) or pair[0] == pair[1]:
                raise LandmarkDataError(f"flip {spec!r}: give pairs a:b,c:d of distinct points of {', '.join(parts)}"
                                        ", auto or none")
            pairs.append(pair)
    partner = np.arange(len(parts))
    for a, b in pairs:
        partner[parts.index(a)], partner[parts.index(b)] = parts.index(b), parts.index(a)
    return partner, pairs


def kfold_indices(n: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    """``folds`` disjoint, sorted index arrays covering ``range(n)``, of sizes differing by at most one; the
    assignment is a seeded permutation (the same ``n, folds, seed`` always give the same folds)."""
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be 2..{n} for {n} samples; got {folds}")
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(perm, folds)]


def _out_size(size) -> tuple[int, int]:
    """``size`` option -> (width, height): 64 (square) or '128x96' (width x height)."""
    try:
        w, h = (int(size), int(size)) if not isinstance(size, str) or "x" not in size else map(int, size.split("x"))
    except ValueError:
        raise LandmarkDataError(f"size {size!r}: give pixels (64) or WIDTHxHEIGHT (128x96)") from None
    if not (8 <= w <= 1024 and 8 <= h <= 1024):
        raise LandmarkDataError(f"size {size!r}: width and height must be 8..1024 pixels")
    return w, h


def read_landmarks(folder: Path, cache_dir: Path | None = None, *, subset: str | None = None,
                   size: int | str = DEFAULT_SIZE, folds: int = DEFAULT_FOLDS, fold: int = 0, seed: int = 0,
                   normalizer: str = "auto", flip: str = "auto", balance: str = "none", bins: int = 5) -> Arrays:
    """Train/test split (fold ``fold`` of ``folds``) of a landmark set; see the module docstring."""
    if balance not in ("none", "pose"):
        raise LandmarkDataError(f"balance must be none or pose, got {balance!r}")
    out_wh = _out_size(size)
    sets = read_sets(Path(folder), subset)
    parts = sets[0].parts
    points_px = np.concatenate([s.points for s in sets])
    n = len(points_px)
    try:
        split = kfold_indices(n, int(folds), int(seed))
    except ValueError as exc:
        raise LandmarkDataError(f"{folder}: {exc}") from None
    if not 0 <= int(fold) < int(folds):
        raise LandmarkDataError(f"fold must be 0..{int(folds) - 1}; got {fold}")
    partner, pairs = _mirror(str(flip), parts)
    cached, prefix = _cache_path(sets, out_wh, cache_dir) if cache_dir is not None else (None, "")
    x, sizes = _pixels(sets, out_wh, cached)
    _check_inside(sets, sizes)
    norm, norm_text = _normaliser(str(normalizer), parts, points_px, sizes)
    if cached is not None and not cached.is_file():      # only once every check has passed: nothing left behind
        save_npz(cached, prefix, {"x": x, "sizes": sizes}, "decoded landmark images")
    wh = sizes.astype(np.float64)
    points = ((points_px + 0.5) / wh[:, None, :]).astype(np.float32)
    test = split[int(fold)]
    train = np.setdiff1d(np.arange(n), test)
    before = len(train)
    if balance == "pose":
        train = train[balance_indices(points_px[train], int(bins), int(seed))]
    files = [f"{s.name}/{p.name}" for s in sets for p in s.images]
    target = lambda idx: {"points": points[idx], "size": sizes[idx].astype(np.float32),  # noqa: E731
                          "norm": norm[idx].astype(np.float32), "mirror": np.tile(partner, (len(idx), 1))}
    info = {"points": parts, "flip_pairs": pairs, "normalizer": norm_text, "input_size": [out_wh[1], out_wh[0]],
            "image_sizes": sorted({(int(w), int(h)) for w, h in sizes}), "folds": int(folds), "fold": int(fold),
            "seed": int(seed), "sets": [s.name for s in sets], "source": [str(s.source) for s in sets],
            "balance": {"mode": balance, "bins": int(bins), "train_before": before, "train_after": len(train)},
            "files": {"train": [files[i] for i in train], "test": [files[i] for i in test]},
            "invisible": int((~np.isfinite(points_px).all(-1)).sum())}
    return x[train], target(train), x[test], target(test), None, info


register_layout("landmarks", _is_landmarks, read_landmarks, task="landmarks", augment=landmark_augment(),
                description="landmarks: landmarks.csv (image,width,height,<point>_x,<point>_y) + images/, or "
                            "DeepLabCut's CollectedData_*.csv beside its images, or a folder of such sets")
