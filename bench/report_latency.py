"""Latency in bench.report: re-measured figures (bench.remeasure) in place of in-run ones, and the accuracy against
measured onnxruntime latency of the MACs-cost and latency-cost LWDC sweeps, with the Pareto front of each.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .measure import speed_ratio

__all__ = ["apply_remeasured", "remeasured_note", "latency_fronts", "front", "cost_of", "sweep_point"]

REMEASURED = ("eager_b1", "ort_b1")


def cost_of(r: dict) -> str:
    return r.get("cost") or "macs"


def apply_remeasured(rs: list[dict], path: Path) -> tuple[list[dict], dict | None]:
    """``rs`` with the batch-1 latencies of ``path`` (bench.remeasure's file) where both the run's model and its
    baseline's were re-measured; speed ratios recomputed from them. Records are copied, never changed."""
    if not path.exists():
        return rs, None
    data = json.loads(path.read_text())
    models = data.get("models", {})
    out = []
    for r in rs:
        mine = models.get(r.get("_file", ""))
        base = models.get((mine or {}).get("baseline", ""))
        if not mine or not base:
            out.append(r)
            continue
        r = {**r, "latency_ms": dict(r["latency_ms"]), "baseline_latency_ms": dict(r["baseline_latency_ms"]),
             "speed_ratio": dict(r.get("speed_ratio") or {}), "remeasured": True}
        base_macs = r["macs"] / r["macs_ratio"]
        for key in REMEASURED:
            if key in mine and key in base:
                r["latency_ms"][key], r["baseline_latency_ms"][key] = mine[key]["median"], base[key]["median"]
                r["speed_ratio"][key] = speed_ratio(base[key]["median"], mine[key]["median"], base_macs, r["macs"])
        out.append(r)
    return out, data


def remeasured_note(rs: list[dict], data: dict | None) -> list[str]:
    """One paragraph saying which latencies were re-measured, how, and how much they moved between rounds."""
    done = [r for r in rs if r.get("remeasured")]
    if not data or not done:
        return []
    spreads = sorted(m[k]["spread"] for m in data["models"].values() for k in REMEASURED if k in m)
    return [f"Batch-1 latencies (eager b1, ORT b1 and their speed ratios) of {len(done)} of {len(rs)} runs were "
            f"re-measured by `python -m bench.remeasure` ({data['measured_at']}, {data['rounds']} rounds, all "
            f"{len(data['models'])} models alternating in one process on one thread, load average "
            f"{data['load_average_1m_before']:.1f} at the start; median spread between rounds "
            f"{spreads[len(spreads) // 2] * 100:.1f}%, largest {spreads[-1] * 100:.1f}%); the other latencies are "
            "each run's own, measured right after its training.", ""]


def front(points: list[tuple[float, float, dict]]) -> list[tuple[float, float, dict]]:
    """The Pareto front of (latency, accuracy, record) points: none faster is as accurate."""
    out = []
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or p[1] > out[-1][1]:
            out.append(p)
    return out


def _dominated(p: tuple, others: list[tuple]) -> bool:
    return any(q[0] <= p[0] and q[1] >= p[1] and (q[0], q[1]) != (p[0], p[1]) for q in others)


def sweep_point(r: dict) -> bool:
    """A point of a lambda sweep: an LWDC run driven by lambda alone. Runs under budgets (lambda 0, their size set
    by flash or RAM limits), ablations and longer or distilled fine-tunes answer other questions and would bend the
    fronts."""
    return (r["method"] == "lwdc" and not r.get("finetune_override") and not r.get("budgets")
            and not r.get("ablations") and not r.get("distill"))


def latency_fronts(rs: list[dict], path: Path, title: str, label) -> list[str]:
    """Plot accuracy against onnxruntime batch-1 latency for each LWDC sweep (operator set x search cost) that has
    a cost other than MACs beside it; return the plot's Markdown and one verdict per operator set. ``label``
    names a point (bench.report.point). Nothing when no latency-cost run has finished."""
    sweeps = defaultdict(list)
    for r in rs:
        if sweep_point(r) and "ort_b1" in r["latency_ms"]:
            sweeps[(r["ops"], r.get("noise_end", 1), cost_of(r))].append((r["latency_ms"]["ort_b1"], r["accuracy"], r))
    others = {(ops, noise) for ops, noise, cost in sweeps if cost != "macs"}
    sweeps = {k: v for k, v in sweeps.items() if k[:2] in others}
    if not sweeps:
        return []
    _plot(sweeps, [r for r in rs if r["method"] == "baseline" and "ort_b1" in r["latency_ms"]], path, title)
    lines = [f"![accuracy vs onnxruntime latency]({path.name})", ""]
    for ops, noise in sorted(others, key=str):
        macs = sweeps.get((ops, noise, "macs"), [])
        for (o, n, cost), pts in sorted(sweeps.items(), key=str):
            if (o, n) != (ops, noise) or cost == "macs":
                continue
            ahead = [p for p in pts if not _dominated(p, macs)]
            behind = [p for p in macs if not _dominated(p, pts)]
            lines.append(f"- Operator set `{ops}`: {len(ahead)} of {len(pts)} `{cost}`-cost points lie on or beyond "
                         f"the MACs-cost front (no MACs-cost point is as fast and as accurate), and {len(behind)} of "
                         f"{len(macs)} MACs-cost points beyond the `{cost}`-cost front. Fronts (ORT ms, accuracy): "
                         f"MACs {_front_text(macs, label)}; {cost} {_front_text(pts, label)}.")
    return lines + [""]


def _front_text(points: list[tuple], label) -> str:
    return ", ".join(f"{label(r)} ({lat:.3f} ms, {acc:.2f}%)" for lat, acc, r in front(points)) or "none"


def _plot(sweeps: dict, baselines: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 4.4))
    for (ops, noise, cost), pts in sorted(sweeps.items(), key=str):
        name = f"lwdc-{ops}, cost {cost}"
        marker = "o" if cost == "macs" else "^"
        line = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, linestyle="none", markersize=8,
                       label=name)[0]
        edge = front(pts)
        ax.step([p[0] for p in edge], [p[1] for p in edge], where="post", color=line.get_color(), alpha=0.6,
                label=f"{name}: front")
    for r in baselines:
        ax.plot([r["latency_ms"]["ort_b1"]], [r["accuracy"]], marker="s", color="black", linestyle="none",
                label="baseline")
    ax.set_xlabel("onnxruntime batch-1 latency (ms, one thread)")
    ax.set_ylabel("CIFAR-10 test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
