"""The report's sections for classifiers judged beyond accuracy, and for 1-D signals.

* Detection: both models on the whole test split: confusion matrices always; for two classes also ROC curves with
  the Youden points and the clinical table (AUC, balanced accuracy, sensitivity, specificity, precision, F1,
  Youden's J and its threshold); for more classes the per-class recall and macro AUC.
* Signal saliency: |input gradient x input| of the true class, averaged over the test samples of each class, as a
  channels x time map, so a field's expected window (the P300 at about 250-500 ms) can be seen, or its absence
  noticed. Binary tasks show both classes and their difference.
"""
from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from . import plots
from ..metrics import clinical_metrics, roc_curve
from ..modes import eval_mode
from .markup import fmt, img, table
from .saliency import _input_gradient, _inspecting

__all__ = ["model_outputs", "detection_numbers", "detection_section", "class_saliency", "signal_saliency_section"]

CLINICAL = (("auc", "AUC"), ("balanced_accuracy", "balanced accuracy (%)"), ("sensitivity", "sensitivity"),
            ("specificity", "specificity"), ("precision", "precision"), ("f1", "F1"), ("youden_j", "Youden's J"),
            ("threshold", "threshold (P(class 1))"), ("accuracy", "accuracy, argmax (%)"))


@torch.no_grad()
def model_outputs(model: nn.Module, dataset, batch: int = 256) -> torch.Tensor:
    """Eval-mode logits on every sample of an ``ArrayDataset``, in order."""
    with eval_mode(model):
        return torch.cat([model(dataset.normalize(dataset.x[i:i + batch])) for i in range(0, len(dataset), batch)])


def detection_numbers(models: Mapping[str, nn.Module], dataset) -> dict[str, dict]:
    """``{label: clinical metrics (+ the ROC curve for two classes)}`` of each model on ``dataset``."""
    labels = dataset.y
    out = {}
    for label, model in models.items():
        logits = model_outputs(model, dataset)
        m = clinical_metrics(logits, labels)
        if logits.shape[1] == 2:
            p = torch.softmax(logits.double(), 1)[:, 1].numpy()
            fpr, tpr, thr = roc_curve(p, labels.numpy())
            best = int(np.argmax(tpr - fpr))
            m["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": m["auc"], "youden_fpr": float(fpr[best]),
                        "youden_tpr": float(tpr[best])}
        out[label] = m
    return out


def detection_section(models: Mapping[str, nn.Module], dataset, class_names: Sequence[str]) -> tuple[str, dict, dict]:
    """(HTML, figures, numbers) of the detection section."""
    numbers = detection_numbers(models, dataset)
    figures = {"confusion.png": plots.confusion_matrices({k: v["confusion"] for k, v in numbers.items()},
                                                         class_names)}
    parts = [f"<p>Both models on all {len(dataset)} test samples. Confusion matrices: rows are the true class, "
             "shading is the share of the row (recall).</p>", img(figures["confusion.png"], "confusion matrices")]
    binary = all("roc" in v for v in numbers.values())
    if binary:
        figures["roc.png"] = plots.roc_curves({k: v["roc"] for k, v in numbers.items()})
        parts += ["<p>ROC curves (dots: Youden's point, where sensitivity + specificity - 1 is largest). The table's "
                  "threshold-based figures are at each model's Youden threshold on this test split: they describe "
                  "the test split, not a threshold chosen beforehand.</p>", img(figures["roc.png"], "ROC curves"),
                  table(["metric", *numbers], [[name, *(fmt(v.get(key), 3) for v in numbers.values())]
                                               for key, name in CLINICAL])]
    else:
        k = len(next(iter(numbers.values()))["per_class"]["recall"])
        names = list(class_names) if len(class_names) == k else [str(i) for i in range(k)]
        rows = [[html.escape(names[c]), *(fmt(100 * v["per_class"]["recall"][c], 1) for v in numbers.values())]
                for c in range(k)]
        rows += [["balanced accuracy (%)", *(fmt(v["balanced_accuracy"], 2) for v in numbers.values())],
                 ["macro AUC (one-vs-rest)", *(fmt(v["auc"], 3) for v in numbers.values())],
                 ["macro F1", *(fmt(v["macro_f1"], 3) for v in numbers.values())]]
        parts.append(table(["class: recall (%)", *numbers], rows))
    return "".join(parts), figures, numbers


def class_saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int) -> dict[int, torch.Tensor]:
    """Mean |d logit_y / d x * x| per class: ``{class: (C, L)}`` over the samples of that class."""
    with _inspecting(model):
        grad = _input_gradient(model, x, y)
    maps = {}
    attribution = (grad * x).abs()
    for c in range(classes):
        if (y == c).any():
            maps[c] = attribution[y == c].mean(0)
    return maps


def _pick_per_class(dataset, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    idx = []
    for c in torch.unique(dataset.y).tolist():
        members = torch.nonzero(dataset.y == c).flatten()
        idx.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    idx = torch.cat(idx)
    return dataset.normalize(dataset.x[idx]), dataset.y[idx]


def signal_saliency_section(models: Mapping[str, nn.Module], dataset, class_names: Sequence[str], info: Mapping,
                            per_class: int = 200, seed: int = 0) -> tuple[str, dict, dict]:
    """(HTML, figures, numbers): channels x time saliency per class for (C, L) inputs."""
    x, y = _pick_per_class(dataset, per_class, seed)
    channels, length = x.shape[1], x.shape[2]
    rate, offset = info.get("sample_rate"), float(info.get("time_offset", 0.0))
    times = (offset + np.arange(length) / rate) if rate else np.arange(length)
    time_label = "time (s)" if rate else "sample"
    channel_names = list(info.get("channels", [])) or [str(c) for c in range(channels)]
    k = int(y.max()) + 1
    names = list(class_names) if len(class_names) >= k else [str(c) for c in range(k)]
    maps, numbers = {}, {}
    for label, model in models.items():
        per = class_saliency(model, x, y, k)
        if k == 2 and 0 in per and 1 in per:
            named = {names[1]: per[1], names[0]: per[0], f"difference ({names[1]} - {names[0]})": per[1] - per[0]}
        elif channels == 1:      # one channel (audio): classes x time in one map
            named = {"classes x time": torch.stack([per[c][0] if c in per else torch.zeros(length)
                                                    for c in range(k)])}
        else:
            named = {names[c]: per[c] for c in sorted(per)}
        maps[label] = named
        peak = {n: float(times[int(m.sum(0).argmax())]) for n, m in named.items() if m.shape[0] == channels}
        numbers[label] = {"peak_time": peak}
    rows_named = channel_names if channels > 1 or k == 2 else names     # audio: one row per class
    png = plots.signal_saliency(maps, times, rows_named, time_label)
    where = (f"sampled at {rate:g} Hz from {offset:g} s" if rate else "sample index (no sample rate known)")
    rows = [[html.escape(lbl), *(fmt(v["peak_time"].get(n), 3) for n in next(iter(maps.values())))]
            for lbl, v in numbers.items()] if numbers else []
    body = (f"<p>|gradient x input| of the true class, averaged over up to {per_class} test samples per class, for "
            f"each channel and time step ({where}). Where a model looks in time, and whether compression moved it."
            "</p>" + img(png, "signal saliency")
            + "<p>Time of each map's peak (summed over channels):</p>"
            + table(["model", *next(iter(maps.values()))], rows))
    return body, {"signal_saliency.png": png}, numbers
