"""The report's figures: each function takes plain numbers or tensors and returns PNG bytes.

matplotlib runs headless (Agg) and every figure is closed after saving, so building many reports in one process
neither needs a display nor leaks memory. Colours are fixed per operator so one operator reads the same in
every figure of a report.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

__all__ = ["op_colours", "layer_costs", "gate_evolution", "training_curves", "tradeoff", "saliency_images",
           "saliency_traces", "similarity", "roc_curves", "confusion_matrices", "signal_saliency"]

DPI = 90
_PALETTE = plt.get_cmap("tab10").colors


def op_colours(ops: Sequence[str]) -> dict[str, tuple]:
    """One colour per operator name, ``original`` always the first (blue)."""
    ordered = sorted(set(ops), key=lambda op: (op != "original", op))
    return {op: _PALETTE[i % len(_PALETTE)] for i, op in enumerate(ordered)}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def layer_costs(rows: Sequence[Mapping], colours: Mapping[str, tuple]) -> bytes:
    """Per-layer MACs and params before (grey outline) and after (filled, coloured by the chosen operator)."""
    names = [r["name"] for r in rows]
    y = range(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.28 * len(rows) + 1.4), sharey=True)
    for ax, key, label in ((axes[0], "macs", "MACs"), (axes[1], "params", "parameters")):
        ax.barh(y, [r[f"{key}_before"] for r in rows], color="none", edgecolor="0.45", label="original")
        ax.barh(y, [r[f"{key}_after"] for r in rows], color=[colours[r["chosen"]] for r in rows], height=0.6)
        ax.set_xlabel(f"{label} per layer")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(list(y), names, fontsize=8)
    axes[0].invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    fig.legend(handles + [plt.Rectangle((0, 0), 1, 1, fc="none", ec="0.45")], [*colours, "before (outline)"],
               loc="upper center", ncol=min(7, len(colours) + 1), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _png(fig)


def share_steps(rows: Sequence[Mapping], start: float, pruned: float, budget: float) -> bytes:
    """The share method's greedy steps: bits per weight each layer ends with (bars, in the order tried) and the
    held-out accuracy after each step against the budget line."""
    names = [r["layer"] for r in rows]
    x = range(len(rows))
    fig, (bits, acc) = plt.subplots(2, 1, figsize=(max(6.0, 0.45 * len(rows) + 2), 5.2), sharex=True)
    bits.bar(x, [r["bits_per_weight"] for r in rows],
             color=[_PALETTE[1] if r["codebook"] else "0.7" for r in rows])
    bits.axhline(32, color="0.45", lw=0.8, ls=":")
    bits.set_ylabel("bits per weight")
    bits.set_yscale("log", base=2)
    bits.grid(axis="y", alpha=0.3)
    acc.plot([-1, *x], [pruned, *[r["accuracy"] for r in rows]], marker="o", color=_PALETTE[0])
    acc.axhline(start, color="0.45", lw=0.8, label="start")
    acc.axhline(start - budget, color=_PALETTE[3], lw=0.8, ls="--", label=f"budget ({budget:g} points)")
    acc.set_ylabel("held-out accuracy (%)")
    acc.set_xticks([-1, *x], ["pruned", *names], rotation=60, ha="right", fontsize=8)
    acc.legend(fontsize=8, frameon=False)
    acc.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def gate_evolution(curves: Mapping[str, Mapping[str, Sequence[float]]], colours: Mapping[str, tuple],
                   chosen: Mapping[str, str], cols: int = 6) -> bytes:
    """Small multiples, one per layer: each candidate operator's gate probability against the search epoch
    (epoch 0 is the initial prior). The chosen operator is drawn thick."""
    names = list(curves)
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 1.7 * rows + 0.6), sharex=True, sharey=True,
                             squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        for op, probs in curves[name].items():
            ax.plot(range(len(probs)), probs, color=colours[op], lw=2.4 if op == chosen.get(name) else 1.0)
        ax.set_title(f"{name}\n-> {chosen.get(name, '?')}", fontsize=7.5)
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("search epoch", fontsize=7.5)
    handles = [plt.Line2D([], [], color=c, lw=2) for c in colours.values()]
    fig.legend(handles, list(colours), loc="upper center", ncol=min(8, len(colours)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (1.7 * rows + 0.6)))
    return _png(fig)


def training_curves(history: Mapping[str, Sequence[Mapping]], metric: str) -> bytes:
    """Validation metric through search then fine-tuning, and the chosen architecture's cost ratio per epoch."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3))
    start = 0
    for stage, colour in (("search", "C0"), ("finetune", "C2")):
        logs = history.get(stage) or []
        xs = [start + i + 1 for i in range(len(logs))]
        ax.plot(xs, [e["val"].get(metric, float("nan")) if e.get("val") else float("nan") for e in logs],
                "o-", color=colour, ms=3, label=f"{stage} (val)")
        ax.plot(xs, [e["train"].get(metric, float("nan")) for e in logs], "--", color=colour, lw=1,
                label=f"{stage} (train)")
        if stage == "search":
            for cost in sorted({k for e in logs for k in e.get("cost_ratios", {})}):
                ax2.plot(xs, [e["cost_ratios"].get(cost, float("nan")) for e in logs], "o-", ms=3, label=cost)
        start += len(logs)
    ax.set(xlabel="epoch (search, then fine-tuning)", ylabel=metric)
    ax2.set(xlabel="search epoch", ylabel="chosen / original", ylim=(0, 1.05))
    for a in (ax, ax2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    ax2.set_title("cost of the argmax architecture", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def tradeoff(points: Sequence[Mapping], metric: str) -> bytes:
    """``metric`` against params and against MACs: one marker per run (labelled with its lambda), its original
    model as a black star, the run this report is about ringed. Runs marked ``unchanged`` (every layer kept
    its original operator) are grey squares, off the line of compressed models."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "macs", "MACs (FLOPs)")):
        seen = set()
        for p in points:
            b = (p["before"][key], p["before"].get(metric))
            if b not in seen and b[1] is not None:
                seen.add(b)
                ax.plot(*b, "k*", ms=12, label="original" if len(seen) == 1 else None)
        ordered = sorted((p for p in points if p["after"].get(metric) is not None and not p.get("unchanged")),
                         key=lambda p: p["after"][key])
        if ordered:
            ax.plot([p["after"][key] for p in ordered], [p["after"][metric] for p in ordered], "o-", color="C1",
                    ms=6, lw=1, label="compressed")
        same = [p for p in points if p["after"].get(metric) is not None and p.get("unchanged")]
        if same:        # every layer kept its operator: fine-tuned, not compressed; off the compressed line
            ax.plot([p["after"][key] for p in same], [p["after"][metric] for p in same], "s", mfc="none",
                    mec="0.4", ms=7, mew=1.5, label="nothing compressed")
        for p in ordered + same:
            ax.annotate(f"λ={p['lambda']:g}", (p["after"][key], p["after"][metric]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
            if p.get("current"):
                ax.plot(p["after"][key], p["after"][metric], "o", mfc="none", mec="C3", ms=13, mew=2,
                        label="this run")
        ax.set(xlabel=label, ylabel=metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _normalised(t: torch.Tensor) -> torch.Tensor:
    lo, hi = t.min(), t.max()
    return (t - lo) / (hi - lo) if hi > lo else torch.zeros_like(t)


def saliency_images(images: torch.Tensor, maps: Mapping[str, Mapping[str, torch.Tensor]],
                    titles: Sequence[str]) -> bytes:
    """One row per sample: the input, then for each method the original's map and the compressed model's.

    ``images`` is (N, C, H, W) in display range order (any scale: each is min-max scaled); ``maps`` is
    method -> {"original", "compressed"} -> (N, H, W). Grad-CAM is drawn over the image, gradients alone.
    """
    n, methods = images.shape[0], list(maps)
    cols = 1 + 2 * len(methods)
    fig, axes = plt.subplots(n, cols, figsize=(1.45 * cols, 1.55 * n + 0.3), squeeze=False)
    for i in range(n):
        img = _normalised(images[i]).permute(1, 2, 0)
        img = img[..., 0] if img.shape[-1] == 1 else img[..., :3]
        axes[i, 0].imshow(img.numpy(), cmap="gray" if img.ndim == 2 else None)
        # the caption sits left of its own row (a title would sit in the gap above, over the previous row)
        axes[i, 0].set_ylabel(titles[i], fontsize=7, rotation=0, ha="right", va="center", labelpad=4)
        if i == 0:
            axes[i, 0].set_title("input", fontsize=7)
        for m, method in enumerate(methods):
            for k, which in enumerate(("original", "compressed")):
                ax = axes[i, 1 + 2 * m + k]
                sal = maps[method][which][i]
                if method == "Grad-CAM":
                    ax.imshow(img.mean(-1).numpy() if img.ndim == 3 else img.numpy(), cmap="gray")
                    ax.imshow(sal.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
                else:
                    ax.imshow(_normalised(sal).numpy(), cmap="inferno")
                if i == 0:
                    ax.set_title(f"{method}\n{which}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.3)
    return _png(fig)


def saliency_traces(signals: torch.Tensor, maps: Mapping[str, Mapping[str, torch.Tensor]],
                    titles: Sequence[str]) -> bytes:
    """1-D inputs: one row per sample, one column per method; the original's and the compressed model's
    saliency over time (each scaled to [0, 1]) over the signal (channel mean, grey)."""
    n, methods = signals.shape[0], list(maps)
    fig, axes = plt.subplots(n, len(methods), figsize=(3.4 * len(methods), 1.5 * n + 0.4), squeeze=False,
                             sharex=True)
    for i in range(n):
        t = range(signals.shape[-1])
        for m, method in enumerate(methods):
            ax = axes[i, m]
            ax.plot(t, _normalised(signals[i].mean(0)).numpy(), color="0.75", lw=0.8, label="signal")
            for which, colour in (("original", "C0"), ("compressed", "C1")):
                ax.plot(t, _normalised(maps[method][which][i]).numpy(), color=colour, lw=1.1, label=which)
            ax.set_yticks([])
            ax.set_title(f"{method}: {titles[i]}" if i == 0 else titles[i], fontsize=7.5)
    axes[0, -1].legend(fontsize=7, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("time step", fontsize=8)
    fig.tight_layout(pad=0.3)
    return _png(fig)


def similarity(layers: Sequence[str], matrix: torch.Tensor | None, probes: Mapping[str, Mapping[str, float]],
               metric_name: str = "probe accuracy") -> bytes:
    """Left: CKA of every original layer (rows) against every compressed layer (columns), same-named pairs on
    the diagonal. Right: linear-probe accuracy per layer for each model."""
    panels = (matrix is not None) + bool(probes)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.6), squeeze=False)
    axes = list(axes.flat)
    if matrix is not None:
        ax = axes.pop(0)
        im = ax.imshow(matrix.numpy(), vmin=0, vmax=1, cmap="magma")
        ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=7)
        ax.set_yticks(range(len(layers)), layers, fontsize=7)
        ax.set(xlabel="compressed model", ylabel="original model", title="linear CKA")
        fig.colorbar(im, ax=ax, fraction=0.046)
    if probes:
        ax = axes.pop(0)
        for which, colour in (("original", "C0"), ("compressed", "C1")):
            if which in probes:
                xs = [i for i, n in enumerate(layers) if n in probes[which]]
                ax.plot(xs, [100 * probes[which][layers[i]] for i in xs], "o-", color=colour, label=which)
        ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=7)
        ax.set(ylabel=f"{metric_name} (%)", title="linear probe on each layer's features")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def roc_curves(curves: Mapping[str, Mapping]) -> bytes:
    """ROC curves of several models (``{label: {fpr, tpr, auc, youden_fpr, youden_tpr}}``), Youden points marked."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=1, ls="--", label="chance")
    for i, (label, c) in enumerate(curves.items()):
        colour = _PALETTE[i % len(_PALETTE)]
        ax.step(c["fpr"], c["tpr"], where="post", color=colour, lw=1.6, label=f"{label} (AUC {c['auc']:.3f})")
        ax.plot([c["youden_fpr"]], [c["youden_tpr"]], "o", color=colour, ms=6, mec="black",
                label=f"{label}: Youden point")
    ax.set_xlabel("1 - specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1.01)
    ax.legend(fontsize=7.5, loc="lower right")
    return _png(fig)


def confusion_matrices(matrices: Mapping[str, Sequence[Sequence[int]]], class_names: Sequence[str]) -> bytes:
    """Side by side: counts written in each cell, shading by the row's share (recall per true class)."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.4 * len(matrices) + 0.6, 3.2), squeeze=False)
    for ax, (label, m) in zip(axes[0], matrices.items()):
        counts = torch.as_tensor(m, dtype=torch.float64)
        share = counts / counts.sum(1, keepdim=True).clamp_min(1)
        ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
        k = counts.shape[0]
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7 if k > 6 else 9,
                        color="white" if share[i, j] > 0.6 else "black")
        names = [str(n) for n in class_names] if len(class_names) == k else [str(i) for i in range(k)]
        ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 3 else 0, fontsize=7.5)
        ax.set_yticks(range(k), names, fontsize=7.5)
        ax.set_xlabel("predicted"), ax.set_ylabel("true")
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def signal_saliency(maps: Mapping[str, Mapping[str, torch.Tensor]], times: Sequence[float], channels: Sequence[str],
                    time_label: str) -> bytes:
    """Rows: models; columns: named (channels x time) maps, e.g. target, non-target and their difference."""
    rows, cols = len(maps), max(len(m) for m in maps.values())
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols + 0.5, 1.1 + 0.35 * len(channels) * rows + 0.6 * rows),
                             squeeze=False)
    extent = [float(times[0]), float(times[-1]), len(channels) - 0.5, -0.5]
    for r, (model, named) in enumerate(maps.items()):
        for c, (name, m) in enumerate(named.items()):
            ax = axes[r][c]
            m = torch.as_tensor(m, dtype=torch.float32)
            diff = name.startswith("difference")
            limit = float(m.abs().max()) or 1.0
            ax.imshow(m.numpy(), aspect="auto", extent=extent, cmap="RdBu_r" if diff else "magma",
                      vmin=-limit if diff else 0, vmax=limit, interpolation="nearest")
            ax.set_yticks(range(len(channels)), [str(ch) for ch in channels], fontsize=7)
            ax.set_title(f"{model}: {name}", fontsize=8.5)
            if r == rows - 1:
                ax.set_xlabel(time_label, fontsize=8)
    fig.tight_layout()
    return _png(fig)
