"""Latency in bench.report: re-measured figures (bench.remeasure) in place of in-run ones, and the accuracy against
measured onnxruntime latency of the MACs-cost and latency-cost LWDC sweeps and of the pruning runs, with the
Pareto front of each and a verdict on which front lies ahead.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .measure import speed_ratio

__all__ = ["apply_remeasured", "fastest_round", "original_time", "remeasured_note", "latency_fronts", "front", "front_verdict", "cost_of", "sweep_point"]

REMEASURED = ("eager_b1", "ort_b1")


def cost_of(r: dict) -> str:
    return r.get("cost") or "macs"


def fastest_round(entry: dict, key: str) -> float:
    """A re-measured model's time (ms): its fastest round. Load on this shared CPU comes in bursts that slow every
    model timed during them (slow rounds cluster in runs of the rotation order), so a reading can only be too slow.
    Over six re-timings of the same 67 models (2026-12-05/06), a model's onnxruntime time as a fraction of the
    original's moved by 0.2% (median coefficient of variation) read from the fastest round, 1.6% from the median
    of rounds: one width point's speed ratio read 0.89 and 0.77 in two re-timings by the median."""
    return min(entry[key].get("rounds") or [entry[key]["median"]])


def apply_remeasured(rs: list[dict], path: Path) -> tuple[list[dict], dict | None]:
    """``rs`` with the batch-1 latencies of ``path`` (bench.remeasure's file) where both the run's model and its
    baseline's were re-measured; speed ratios recomputed from them. Records are copied, never changed."""
    if not path.exists():
        return rs, None
    data = json.loads(path.read_text())
    models = data.get("models", {})
    out, references = [], {}
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
                ref_key = (mine["baseline"], key)
                if ref_key not in references:
                    references[ref_key] = original_time(models, *ref_key)
                reference = references[ref_key]
                r["latency_ms"][key], r["baseline_latency_ms"][key] = fastest_round(mine, key), reference
                r["speed_ratio"][key] = speed_ratio(reference, r["latency_ms"][key], base_macs, r["macs"])
        out.append(r)
    return out, data


def original_time(models: dict, baseline: str, key: str) -> float:
    """The original network's time: the fastest round of the baseline and of each ``baseline-extended`` model
    trained from it (the same architecture, timed again in every round). Every speed ratio hangs on this one
    figure; from the baseline's five rounds alone, by their median, a run of three slow rounds (0.723, 0.725, 0.774,
    0.769, 0.760 ms, while its identical ``baseline-extended`` read 0.72-0.74) raised every LWDC ratio by
    0.03-0.13."""
    same = [m for name, m in models.items()
            if key in m and (name == baseline or (m.get("method") == "baseline-extended" and m.get("baseline") == baseline))]
    return min(fastest_round(m, key) for m in same)


def remeasured_note(rs: list[dict], data: dict | None) -> list[str]:
    """One paragraph saying which latencies were re-measured, how, and how much they moved between rounds."""
    done = [r for r in rs if r.get("remeasured")]
    if not data or not done:
        return []
    spreads = sorted(m[k]["spread"] for m in data["models"].values() for k in REMEASURED if k in m)
    return [f"Batch-1 latencies (eager b1, ORT b1 and their speed ratios) of {len(done)} of {len(rs)} runs were "
            f"re-measured by `python -m bench.remeasure` ({data['measured_at']}, the fastest of {data['rounds']} rounds, all "
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


def _interpolate(xs: list[float], ys: list[float], x: float) -> float | None:
    """``ys`` at ``x`` by linear interpolation between the neighbouring measured ``xs`` (sorted); None outside."""
    if len(xs) == 1:
        return ys[0] if xs[0] == x else None
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def front_verdict(first: tuple[str, list[tuple]], second: tuple[str, list[tuple]]) -> str:
    """Which of two named sets of (ms, accuracy, record) points has the Pareto front that lies ahead.

    Each front point is compared with the other front read off between its two neighbouring points (linear
    interpolation, as the ablation table does on MACs): accuracy at the same latency, and the latency the other
    front needs for the same accuracy. A front is ahead when none of its points is behind the other front and at
    least one is ahead; otherwise the fronts cross. Fronts that do not overlap in latency get no verdict, only the
    points of one that a point of the other beats outright (as fast or faster, and as accurate or more)."""
    fronts = dict([(first[0], front(first[1])), (second[0], front(second[1]))])
    ahead: dict[str, list[str]] = {name: [] for name in fronts}
    behind: dict[str, list[str]] = {name: [] for name in fronts}
    for name, mine in fronts.items():
        theirs = next(f for n, f in fronts.items() if n != name)
        ms, accs = [p[0] for p in theirs], [p[1] for p in theirs]
        for lat, acc, _ in mine:
            at_lat = _interpolate(ms, accs, lat)
            if at_lat is None:
                continue
            gap = acc - at_lat
            same_acc = _interpolate(accs, ms, acc)     # a front rises with latency, so its accuracies are sorted
            time = f", {(lat / same_acc - 1) * 100:+.0f}% time for the same accuracy" if same_acc else ""
            text = f"{lat:.3f} ms, {acc:.2f}%: {gap:+.2f} points at the same latency{time}"
            if gap:
                (ahead if gap > 0 else behind)[name].append(text)
    if not any(ahead.values()) and not any(behind.values()):
        spans = "; ".join(f"{n} {f[0][0]:.3f}-{f[-1][0]:.3f} ms" for n, f in fronts.items() if f)
        beaten = []                     # each point beaten outright, by the fastest point that beats it
        for n, mine in fronts.items():
            for o, theirs in fronts.items():
                for p in theirs if o != n else []:
                    q = next((q for q in mine if q[0] <= p[0] and q[1] >= p[1]), None)
                    if q is not None:
                        beaten.append(f"{n} point at {q[0]:.3f} ms, {q[1]:.2f}% beats the {o} point at {p[0]:.3f} ms, "
                                      f"{p[1]:.2f}%")
        return (f"no verdict: the fronts do not overlap in latency ({spans})"
                + (f"; outright: {'; '.join(beaten)}" if beaten else ""))
    detail = "; ".join(f"{n} point at {t}" for n in fronts for t in ahead[n] + behind[n])
    for name, other in ((first[0], second[0]), (second[0], first[0])):
        if ahead[name] and not behind[name] and not ahead[other]:
            return f"the {name} front is ahead where they overlap ({detail})"
    return f"the fronts cross: neither is ahead everywhere they overlap ({detail})"


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
    pruning = defaultdict(list)         # each Torch-Pruning method's plain runs, whatever point they matched
    distilled = defaultdict(list)       # (method, weight): distilled runs, LWDC's whatever their search
    for r in rs:
        if "ort_b1" not in r["latency_ms"]:
            continue
        p = (r["latency_ms"]["ort_b1"], r["accuracy"], r)
        if r["method"].startswith("prune-"):
            (distilled[(r["method"], r["distill"])] if r.get("distill") else pruning[r["method"]]).append(p)
        elif r.get("distill") and sweep_point({**r, "distill": 0.0}):    # a sweep point but for its fine-tune
            distilled[("lwdc", r["distill"])].append(p)
    _plot(sweeps, pruning, [r for r in rs if r["method"] == "baseline" and "ort_b1" in r["latency_ms"]], path, title)
    lines = [f"![accuracy vs onnxruntime latency]({path.name})", ""]
    for ops, noise in sorted(others, key=str):
        macs = sweeps.get((ops, noise, "macs"), [])
        for (o, n, cost), pts in sorted(sweeps.items(), key=str):
            if (o, n) != (ops, noise) or cost == "macs":
                continue
            lines.append(f"- Operator set `{ops}`, fronts (ORT ms, accuracy): MACs {_front_text(macs, label)}; "
                         f"{cost} {_front_text(pts, label)}. Verdict: "
                         f"{front_verdict(('MACs-cost', macs), (f'`{cost}`-cost', pts))}.")
        lwdc = [p for (o, n, _), pts in sweeps.items() if (o, n) == (ops, noise) for p in pts]
        for method, pts in sorted(pruning.items()):
            lines.append(f"- LWDC `{ops}` (the lambda sweeps of every cost together) against `{method}` on measured "
                         f"onnxruntime time: {front_verdict((f'LWDC `{ops}`', lwdc), (f'`{method}`', pts))}.")
    for (method, weight), pts in sorted(distilled.items()):
        mine = distilled.get(("lwdc", weight))
        if method != "lwdc" and mine:
            lines.append(f"- Distilled fine-tuning (weight {weight:g}) on both sides, every distilled LWDC run against "
                         f"`{method}`: {front_verdict(('LWDC', mine), (f'`{method}`', pts))}.")
    return lines + [""]


def _front_text(points: list[tuple], label) -> str:
    return ", ".join(f"{label(r)} ({lat:.3f} ms, {acc:.2f}%)" for lat, acc, r in front(points)) or "none"


def _plot(sweeps: dict, pruning: dict, baselines: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 5.0))
    for (ops, noise, cost), pts in sorted(sweeps.items(), key=str):
        name = f"lwdc-{ops}, cost {cost}"
        marker = "o" if cost == "macs" else "^"
        line = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, linestyle="none", markersize=8,
                       label=name)[0]
        edge = front(pts)
        ax.plot([p[0] for p in edge], [p[1] for p in edge], linestyle="--", color=line.get_color(), alpha=0.6,
                label=f"{name}: front (as the verdict reads it)")
    for method, pts in sorted(pruning.items()):
        line = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="D", linestyle="none", markersize=7,
                       label=method)[0]
        edge = front(pts)
        ax.plot([p[0] for p in edge], [p[1] for p in edge], linestyle=":", color=line.get_color(), alpha=0.6)
    for r in baselines:
        ax.plot([r["latency_ms"]["ort_b1"]], [r["accuracy"]], marker="s", color="black", linestyle="none",
                label="baseline")
    ax.set_xlabel("onnxruntime batch-1 latency (ms, one thread)")
    ax.set_ylabel("CIFAR-10 test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # outside: never hides a point
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")       # widened to hold the legend and the title
    plt.close(fig)
