"""Pose-based data balancing (Feng et al., CVPR 2018, "Wing loss...", section "pose-based data balancing").

A landmark set is dominated by its common poses (a mouse walking straight, a frontal face); a model fitted to it
does worst on the rare ones. Balancing: align every shape to the mean shape (Procrustes: translation, rotation
and scale removed, on the visible points), take the first principal component of the aligned shapes (the main
pose variation that is left, e.g. head turned against body), cut its scores into equal-width bins and repeat the
samples of the sparse bins until each bin holds about as many as the fullest. The paper duplicates samples the
same way (augmentation then makes the copies differ); the bin count and the cap on copies per sample
(``max_repeat``, so one outlier is not repeated fifty times) are our choices.
"""
from __future__ import annotations

import numpy as np

__all__ = ["procrustes_align", "pose_scores", "balance_indices"]


def _similarity(shape: np.ndarray, mean: np.ndarray, common: np.ndarray) -> np.ndarray:
    """``shape`` moved onto ``mean`` by the scale, rotation (no reflection) and shift that best fit the points
    visible in both (``common``), least squares (Umeyama 1991)."""
    a, b = shape[common], mean[common]
    ca, cb = a.mean(0), b.mean(0)
    a0, b0 = a - ca, b - cb
    u, sig, vt = np.linalg.svd(b0.T @ a0)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ np.diag([1.0, d]) @ vt
    var = (a0 ** 2).sum()
    s = (sig * np.array([1.0, d])).sum() / var if var > 0 else 1.0
    return (shape - ca) @ (s * rot).T + cb


def procrustes_align(shapes: np.ndarray, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Generalised Procrustes alignment of (N, K, 2) shapes with NaN for invisible points: ``(aligned, mean)``.
    The mean is centred with unit norm; a shape with fewer than two points visible in the mean stays NaN."""
    shapes = np.asarray(shapes, dtype=np.float64)
    visible = np.isfinite(shapes).all(-1)
    aligned = np.full_like(shapes, np.nan)
    centred = shapes - np.nanmean(np.where(visible[..., None], shapes, np.nan), axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(centred, axis=0)
    for _ in range(max(1, iterations)):
        mean, known = _normalised(mean)
        for i, shape in enumerate(shapes):
            common = visible[i] & known
            aligned[i] = _similarity(shape, mean, common) if common.sum() >= 2 else np.nan
        with np.errstate(invalid="ignore"):
            new = np.nanmean(aligned, axis=0)
        if np.allclose(np.nan_to_num(new), np.nan_to_num(mean), atol=1e-10):
            break
        mean = new
    return aligned, _normalised(mean)[0]


def _normalised(mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean shape centred, with unit norm, over its known points; and which points are known."""
    known = np.isfinite(mean).all(-1)
    mean = mean - mean[known].mean(axis=0)
    return mean / np.sqrt((mean[known] ** 2).sum()), known


def pose_scores(shapes: np.ndarray) -> np.ndarray:
    """Each shape's score on the first principal component of the aligned shapes (NaN for shapes that could not
    be aligned). Invisible points take the mean shape's place, so they add no variation."""
    aligned, mean = procrustes_align(shapes)
    ok = np.isfinite(aligned).all(-1).any(-1)
    filled = np.where(np.isfinite(aligned), aligned, np.nan_to_num(mean)[None])
    flat = filled.reshape(len(filled), -1)
    scores = np.full(len(flat), np.nan)
    if ok.sum() >= 2:
        centred = flat[ok] - flat[ok].mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        scores[ok] = centred @ vt[0]
    return scores


def balance_indices(shapes: np.ndarray, bins: int = 5, seed: int = 0, max_repeat: int = 8) -> np.ndarray:
    """Indices into ``shapes`` (N, K, 2; pixels, NaN invisible) with the samples of sparse pose bins repeated:
    each bin is brought up to the fullest bin's count, a sample at most ``max_repeat`` times in all. Samples that
    cannot be scored are kept once. Sorted; seeded (which samples of a bin get the extra copy)."""
    if bins < 1 or max_repeat < 1:
        raise ValueError(f"bins and max_repeat must be >= 1; got {bins}, {max_repeat}")
    scores = pose_scores(shapes)
    ok = np.isfinite(scores)
    out = [np.flatnonzero(~ok)]
    if ok.any():
        lo, hi = scores[ok].min(), scores[ok].max()
        edges = np.linspace(lo, hi, bins + 1)
        which = np.full(len(scores), -1)
        which[ok] = np.clip(np.searchsorted(edges, scores[ok], side="right") - 1, 0, bins - 1)
        counts = np.bincount(which[ok], minlength=bins)
        target = counts.max()
        rng = np.random.default_rng(seed)
        for b in range(bins):
            members = np.flatnonzero(which == b)
            if not len(members):
                continue
            copies = min(target, len(members) * max_repeat)
            whole, extra = divmod(copies, len(members))
            out += [np.repeat(members, whole), rng.choice(members, extra, replace=False)]
    return np.sort(np.concatenate(out)).astype(np.int64)
