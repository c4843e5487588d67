"""The report's landmark section (issue 17): predicted and true points drawn on test frames for the original and
the compressed model, and each point's mean error before and after compression.

Drawn in the model input's pixels (the frames as the model sees them); the error bars are the run's own
``error_px/<point>`` metrics, in the original frames' pixels (``lwdc.landmarks.task``)."""
from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from . import plots
from .markup import img, table

__all__ = ["landmark_section"]


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    out = model(x)
    return out.reshape(len(x), -1, 2)


def _frames(images: torch.Tensor, truth: torch.Tensor, predictions: Mapping[str, torch.Tensor],
            names: Sequence[str]) -> bytes:
    """One row per model, one column per frame: the true points (circles) and the model's (crosses), joined."""
    plt = plots.plt
    n, rows = len(images), len(predictions)
    h, w = images.shape[-2:]
    fig, axes = plt.subplots(rows, n, figsize=(2.4 * n, 2.4 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for r, (label, pred) in enumerate(predictions.items()):
        for c in range(n):
            ax = axes[r][c]
            img = images[c].float()
            img = img.permute(1, 2, 0).squeeze(-1) if img.shape[0] in (1, 3) else img[0]
            ax.imshow(img / max(float(img.max()), 1e-6), cmap="gray" if img.dim() == 2 else None)
            for k in range(truth.shape[1]):
                tx, ty = truth[c, k] * torch.tensor([w, h]) - 0.5
                px, py = pred[c, k] * torch.tensor([w, h]) - 0.5
                colour = colours(k % 10)
                if torch.isfinite(truth[c, k]).all():
                    ax.plot([tx, px], [ty, py], color=colour, lw=0.8)
                    ax.scatter([tx], [ty], s=28, facecolors="none", edgecolors=[colour], lw=1.2)
                ax.scatter([px], [py], s=28, marker="x", color=colour, lw=1.2,
                           label=names[k] if (r == 0 and c == 0 and k < len(names)) else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label)
    if names:
        axes[0][0].legend(fontsize=6, loc="lower left")
    fig.suptitle("true (o) and predicted (x) points", fontsize=9)
    return plots._png(fig)


def _error_bars(before: Mapping, after: Mapping, names: Sequence[str]) -> tuple[bytes, list[list[str]]]:
    plt = plots.plt
    keys = [n for n in names if f"error_px/{n}" in before and f"error_px/{n}" in after]
    fig, ax = plt.subplots(figsize=(max(3.5, 0.9 * len(keys) + 1.5), 2.8))
    xs = torch.arange(len(keys)).float()
    ax.bar(xs - 0.2, [before[f"error_px/{k}"] for k in keys], 0.4, label="original")
    ax.bar(xs + 0.2, [after[f"error_px/{k}"] for k in keys], 0.4, label="compressed")
    ax.set_xticks(xs.tolist())
    ax.set_xticklabels(keys, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean error (px of the frames)")
    ax.legend(fontsize=7)
    rows = [[k, f"{before[f'error_px/{k}']:.2f}", f"{after[f'error_px/{k}']:.2f}"] for k in keys]
    return plots._png(fig), rows


def landmark_section(pair: Mapping[str, nn.Module], dataset, report: Mapping, names: Sequence[str],
                     frames: int = 4) -> tuple[str, dict[str, bytes], dict]:
    """HTML, figures and numbers: ``frames`` test frames with both models' points, and per-point errors."""
    n = min(frames, len(dataset))
    idx = torch.arange(n)
    truth = dataset.targets(idx)["points"].float()
    x = dataset.normalize(dataset.x[idx])
    predictions = {label: _predict(model, x) for label, model in pair.items()}
    figs = {"landmark_frames.png": _frames(dataset.to_float(dataset.x[idx]), truth, predictions, names)}
    before, after = report.get("before", {}), report.get("after", {})
    png, rows = _error_bars(before, after, names)
    figs["landmark_errors.png"] = png
    summary = [[m, f"{before.get(m, float('nan')):.3f}", f"{after.get(m, float('nan')):.3f}"]
               for m in ("rmse_px", "mean_error_px", "nme", "pck") if m in before]
    body = (f"<p>The first {n} test frames as the model sees them: true points (circles) and each model's "
            "(crosses), joined. Errors are in pixels of the original frames; NME and PCK as the run measured "
            "them on the whole test split.</p>"
            + table(["metric", "original", "compressed"], summary)
            + img(figs["landmark_frames.png"], "true and predicted points")
            + table(["point", "original px", "compressed px"], [[html.escape(c) for c in r] for r in rows])
            + img(png, "per-point error"))
    numbers = {"frames": n, "per_point": {r[0]: {"original": float(r[1]), "compressed": float(r[2])} for r in rows}}
    return body, figs, numbers
