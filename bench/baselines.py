"""Classical baselines the signal benchmark compares the CNNs with.

P300: shrinkage LDA on decimated epochs, the field's standard (Blankertz et al. 2011, "Single-trial analysis and
classification of ERP components -- a tutorial"): each channel is averaged over windows of ``decimate`` samples
(a low-pass and a decimation in one), the channels are concatenated into one feature vector, and a linear
discriminant with Ledoit-Wolf shrinkage of the covariance is fitted on the training folds only.
"""
from __future__ import annotations

import numpy as np

__all__ = ["decimated_features", "ShrinkageLDA"]


def decimated_features(x: np.ndarray, decimate: int = 4) -> np.ndarray:
    """(N, C, L) epochs -> (N, C * ceil(L / decimate)) window means; the last, shorter window is kept."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or decimate < 1:
        raise ValueError(f"need (N, C, L) epochs and decimate >= 1; got shape {x.shape}, decimate {decimate}")
    n, c, length = x.shape
    pad = (-length) % decimate
    if pad:     # mean of the last, shorter window: pad with its own mean
        tail = x[:, :, length - (decimate - pad):].mean(axis=2, keepdims=True)
        x = np.concatenate([x, np.repeat(tail, pad, axis=2)], axis=2)
    return x.reshape(n, c, -1, decimate).mean(axis=3).reshape(n, -1)


class ShrinkageLDA:
    """Linear discriminant with automatic (Ledoit-Wolf) shrinkage on decimated epochs; ``score`` is the signed
    distance to the boundary (higher: more target-like), which is what an ROC curve needs."""

    def __init__(self, decimate: int = 4):
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        self.decimate = decimate
        self.lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")

    def fit(self, x: np.ndarray, y: np.ndarray) -> "ShrinkageLDA":
        self.lda.fit(decimated_features(x, self.decimate), np.asarray(y))
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.lda.decision_function(decimated_features(x, self.decimate))
