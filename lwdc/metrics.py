"""Metrics for imbalanced and clinical classification, computed from whole-set outputs (numpy only).

Accuracy alone misleads when classes are 1:5 (a P300 detector that never fires is 84% accurate), so detection
tasks report what their fields report: ROC AUC, balanced accuracy, sensitivity, specificity, precision, F1 and
Youden's J with the threshold that attains it, and the confusion matrix.

Conventions (checked against scikit-learn in tests/test_metrics.py):

* ``accuracy`` and ``balanced_accuracy`` are in percent, like ``Classification``'s accuracy; every other figure
  (AUC, sensitivity, specificity, precision, F1, J) is a fraction in 0..1.
* A ratio with a zero denominator is 0.0 (scikit-learn's ``zero_division=0``), except AUC, which is NaN when one
  class is absent (no pair to rank) rather than an error, so a fold without positives still reports the rest.
* Binary scores are "higher means positive"; a sample is called positive when ``score >= threshold``.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["confusion_matrix", "roc_curve", "roc_auc", "youden", "detection_metrics", "multiclass_metrics",
           "clinical_metrics"]


def _np(a, dtype=None) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class (int64, ``num_classes`` square)."""
    y, p = _np(labels, np.int64).ravel(), _np(predictions, np.int64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions differ in length: {y.size} vs {p.size}")
    if y.size and (min(y.min(), p.min()) < 0 or max(y.max(), p.max()) >= num_classes):
        raise ValueError(f"labels and predictions must lie in 0..{num_classes - 1}")
    return np.bincount(y * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _binary(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s, y = _np(scores, np.float64).ravel(), _np(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {y.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("binary metrics need labels 0 (negative) and 1 (positive)")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    return s, y.astype(np.int64)


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score used as threshold, highest first.

    Tied scores form one point. The curve starts at (0, 0) with threshold +inf (nothing called positive), as
    scikit-learn's does; unlike its default it keeps collinear points (``drop_intermediate=False``). A rate whose
    class is absent is 0 throughout.
    """
    s, y = _binary(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1] if s.size else np.zeros(0, np.int64)
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    pos, neg = int(y.sum()), int(y.size - y.sum())
    tpr = np.r_[0.0, tps / pos if pos else np.zeros(len(tps))]
    fpr = np.r_[0.0, fps / neg if neg else np.zeros(len(fps))]
    return fpr, tpr, np.r_[np.inf, s[last]]


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve: the chance that a random positive outranks a random negative, ties counting
    half (Mann-Whitney U / (P N)). NaN when one class is absent."""
    s, y = _binary(scores, labels)
    pos, neg = int(y.sum()), int(y.size - y.sum())
    if pos == 0 or neg == 0:
        return math.nan
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]          # average rank of each tie group, 1-based
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def youden(scores, labels) -> tuple[float, float]:
    """Youden's J = max(sensitivity + specificity - 1) over the ROC thresholds, and the threshold attaining it
    (the highest such threshold on ties). With one class absent, J is 0 at threshold +inf."""
    fpr, tpr, thresholds = roc_curve(scores, labels)
    j = tpr - fpr
    best = int(np.argmax(j))
    return float(j[best]), float(thresholds[best])


def detection_metrics(scores, labels, threshold: float | None = None) -> dict:
    """Binary detection figures at ``threshold`` (default: Youden's on these same scores; pass one chosen on
    training data to report honest test figures)."""
    s, y = _binary(scores, labels)
    j_best, t_best = youden(s, y)
    t = t_best if threshold is None else float(threshold)
    pred = (s >= t).astype(np.int64)
    cm = confusion_matrix(y, pred, 2)
    tn, fp, fn, tp = (int(v) for v in cm.ravel())
    sens, spec, prec = _ratio(tp, tp + fn), _ratio(tn, tn + fp), _ratio(tp, tp + fp)
    return {"auc": roc_auc(s, y), "balanced_accuracy": 100.0 * (sens + spec) / 2, "sensitivity": sens,
            "specificity": spec, "precision": prec, "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "youden_j": sens + spec - 1, "best_youden_j": j_best, "threshold": t,
            "accuracy": 100.0 * _ratio(tp + tn, y.size), "confusion": cm.tolist()}


def multiclass_metrics(probabilities, labels, num_classes: int) -> dict:
    """Accuracy, balanced accuracy (mean recall over the classes present), macro F1 (over every class, as
    scikit-learn's ``f1_score(average='macro')`` with ``labels=range(num_classes)``), macro one-vs-rest AUC over
    the classes present (NaN if fewer than two), per-class recall/precision/F1 and the confusion matrix."""
    p, y = _np(probabilities, np.float64), _np(labels, np.int64).ravel()
    if p.ndim != 2 or p.shape != (y.size, num_classes):
        raise ValueError(f"probabilities must be (N, {num_classes}) for {y.size} labels; got {p.shape}")
    cm = confusion_matrix(y, p.argmax(1), num_classes)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    recall = [_ratio(tp[k], support[k]) for k in range(num_classes)]
    precision = [_ratio(tp[k], predicted[k]) for k in range(num_classes)]
    f1 = [_ratio(2 * tp[k], support[k] + predicted[k]) for k in range(num_classes)]
    present = [k for k in range(num_classes) if support[k]]
    aucs = [roc_auc(p[:, k], (y == k).astype(np.int64)) for k in present] if len(present) >= 2 else []
    return {"accuracy": 100.0 * _ratio(tp.sum(), y.size),
            "balanced_accuracy": 100.0 * float(np.mean([recall[k] for k in present])) if present else 0.0,
            "macro_f1": float(np.mean(f1)), "auc": float(np.mean(aucs)) if aucs else math.nan,
            "per_class": {"recall": recall, "precision": precision, "f1": f1}, "confusion": cm.tolist()}


def clinical_metrics(outputs, labels) -> dict:
    """Metrics from logits (N, K): softmax, then ``multiclass_metrics``; for two classes also
    ``detection_metrics`` on P(class 1), whose threshold-based figures (balanced accuracy, sensitivity...) are at
    Youden's threshold, while ``accuracy`` stays the argmax accuracy the training loop reports
    (``accuracy_at_threshold`` is the other)."""
    z = _np(outputs, np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"clinical metrics need logits of shape (N, K >= 2); got {z.shape}")
    z = z - z.max(1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    multi = multiclass_metrics(prob, labels, z.shape[1])
    if z.shape[1] != 2:
        return multi
    detection = detection_metrics(prob[:, 1], labels)
    return {**multi, **detection, "accuracy": multi["accuracy"], "accuracy_at_threshold": detection["accuracy"]}
