"""Is the search better than chance? (issue 26) The CIFAR rows of docs/RESULTS.md that answer it.

From one schedule's results (``bench.cifar``): each LWDC point against its random draws (``--method random``,
matched on MACs or on onnxruntime latency within 3%, started from the point's trained supernet, fine-tuned with its
budget), as mean, spread and best of the draws' accuracy and onnxruntime batch-1 latency with a verdict; and the
ablations of the search's own parts (``--ablate``) beside the full search, seed by seed.
"""
from __future__ import annotations

import statistics
from collections import defaultdict

from .report_latency import sweep_point

__all__ = ["random_lines", "ablation_lines", "front_at", "verdict"]


def _ort(r: dict) -> float | None:
    """onnxruntime batch-1 time over the original's, timed alternating in the same process (bench.measure): runs
    finished at different times under different loads compare by this ratio, not by their milliseconds."""
    mine, base = (r.get("latency_ms") or {}).get("ort_b1"), (r.get("baseline_latency_ms") or {}).get("ort_b1")
    return mine / base if mine and base else None


def _point_key(r: dict) -> tuple:
    return (r.get("lambda"), r.get("ops"), r.get("cost") or "macs", r.get("noise_end"), r["seed"])


def _plain_points(rs: list[dict]) -> dict[tuple, dict]:
    """LWDC runs driven by lambda alone (``sweep_point``), by what an ablation of them keeps."""
    return {_point_key(r): r for r in rs if sweep_point(r)}


def verdict(point: float, draws: list[float], digits: int = 2) -> str:
    """Where the searched architecture's score lies among the random draws' (``digits``: the score's decimals)."""
    mean, sd = statistics.mean(draws), statistics.stdev(draws) if len(draws) > 1 else 0.0
    f = (lambda x: f"{x:.{digits}f}")  # noqa: E731
    if point > max(draws):
        return f"search ahead of every draw (+{f(point - max(draws))} over the best, +{f(point - mean)} over the mean)"
    if point > mean + sd:
        return (f"search ahead of the draws' mean by more than their spread (+{f(point - mean)}), but the best draw "
                f"is +{f(max(draws) - point)}")
    if point >= mean:
        return f"random matches the search: within the draws' spread (+{f(point - mean)} over the mean, sd {f(sd)})"
    return f"random beats the search: the draws' mean is {f(mean - point)} higher"


def random_lines(rs: list[dict]) -> list[str]:
    """One row per (LWDC point, seed, matched cost): the point against its draws."""
    points = {(r["run"], r["seed"]): r for r in rs if r["method"] == "lwdc"}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rs:
        d = r.get("random_draw")
        if r["method"] == "random" and d:
            groups[(d["point"], r["seed"], d["match"], d.get("start", "supernet"))].append(r)
    if not groups:
        return []
    lines = ["Random architectures against the search (issue 26): operators drawn uniformly per layer until the "
             "matched cost is within 3% of the LWDC point's derived network, started from the point's trained "
             "supernet (or, `warmup`, from the original model after the same branch warm-up and no search: draw k "
             "picks the same operators from either start) and fine-tuned with its budget. Accuracy on the whole test "
             "set; onnxruntime batch-1 time as a fraction of the original's, timed beside it in the same process.",
             "", "| LWDC point | seed | matched on | started from | LWDC acc. | draws | random acc. mean ± sd | min-max "
             "| best | LWDC ORT time | random ORT time mean (min-max) | verdict |", "|" + "---|" * 12]
    for (point, seed, match, start), draws in sorted(groups.items(), key=str):
        lw = points.get((point, seed))
        acc = [r["accuracy"] for r in draws]
        ort = [v for v in map(_ort, draws) if v is not None]
        sd = f" ± {statistics.stdev(acc):.2f}" if len(acc) > 1 else ""
        lines.append("| " + " | ".join([
            point, str(seed), match, start, f"{lw['accuracy']:.2f}" if lw else "not finished", str(len(draws)),
            f"{statistics.mean(acc):.2f}{sd}", f"{min(acc):.2f}-{max(acc):.2f}", f"{max(acc):.2f}",
            f"{_ort(lw):.3f}x" if lw and _ort(lw) is not None else "-",
            f"{statistics.mean(ort):.3f}x ({min(ort):.3f}-{max(ort):.3f})" if ort else "-",
            verdict(lw["accuracy"], acc) if lw and len(acc) >= 2 else "-"]) + " |")
    return lines + [""] + _start_lines(groups)


def _start_lines(groups: dict[tuple, list[dict]]) -> list[str]:
    """Draw k from the warmed-up original against draw k from the supernet (the same operators): what the search's
    training of the shared weights is worth to a random architecture, pair by pair."""
    lines = []
    for (point, seed, match, start), draws in sorted(groups.items(), key=str):
        if start == "supernet":
            continue
        twins = {r["random_draw"].get("draw"): r for r in groups.get((point, seed, match, "supernet"), [])}
        pairs = [(r["random_draw"].get("draw"), r["accuracy"], twins[r["random_draw"].get("draw")]["accuracy"])
                 for r in draws if r["random_draw"].get("draw") in twins]
        if not pairs:
            continue
        gaps = [mine - theirs for _, mine, theirs in sorted(pairs, key=lambda p: p[0])]
        lines.append(f"- {point}, seed {seed}, matched on {match}: the same {len(pairs)} draw(s) from the `{start}` "
                     f"start against the supernet: " + ", ".join(f"draw {k} {mine:.2f} vs {theirs:.2f}"
                                                                for k, mine, theirs in sorted(pairs))
                     + f"; mean difference {statistics.mean(gaps):+.2f} points.")
    return lines + [""] if lines else []


def front_at(points: list[dict], macs_ratio: float) -> float | None:
    """The full search's accuracy at ``macs_ratio``, read off its lambda sweep (same operators, cost, noise and
    seed) by linear interpolation between the two neighbouring points; None outside the swept range. An ablation at
    the same lambda lands at another cost, so it is judged against the front, not only against its own point."""
    front = sorted((r["macs_ratio"], r["accuracy"]) for r in points)
    for (m0, a0), (m1, a1) in zip(front, front[1:]):
        if m0 <= macs_ratio <= m1:
            return a0 if m1 == m0 else a0 + (a1 - a0) * (macs_ratio - m0) / (m1 - m0)
    return None


def ablation_lines(rs: list[dict]) -> list[str]:
    """The full search and each ablation of it at the same point, one column per seed, each ablation also against
    the full search's front at the MACs it reached."""
    plain = _plain_points(rs)
    rows: dict[tuple, dict[str, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in rs:
        if r["method"] == "lwdc" and r.get("ablations") and not r.get("budgets"):
            key = _point_key(r)[:-1]
            rows[key]["+".join(r["ablations"])][r["seed"]] = r
    for key in list(rows):
        for (lam, ops, cost, noise, seed), r in plain.items():
            if (lam, ops, cost, noise) == key:
                rows[key]["full search"][seed] = r
    if not rows:
        return []
    lines = ["Ablations of the search's parts at one point (issue 26): `no-warmup` skips the branch warm-up, "
             "`constant-noise` keeps the Gumbel noise at scale 1, `uniform-gates` starts every gate uniform instead "
             "of P(original) = 0.9. Accuracy (MACs ratio) per seed. At the same lambda an ablation ends at another "
             "cost, so the last column compares it with the full search's lambda sweep (same seed) interpolated to "
             "the MACs the ablation reached ('-': outside the swept range).", ""]
    for (lam, ops, cost, noise), by_name in sorted(rows.items(), key=str):
        seeds = sorted({s for runs in by_name.values() for s in runs})
        lines += [f"Point `{ops}` λ={lam:g}, cost {cost}, noise→{noise:g}:", "",
                  "| search | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | vs full search (same lambda) | "
                  "vs full-search front at its MACs |", "|" + "---|" * (len(seeds) + 4)]
        full = by_name.get("full search", {})
        full_mean = statistics.mean(r["accuracy"] for r in full.values()) if full else None
        for name in ["full search"] + sorted(n for n in by_name if n != "full search"):
            runs = by_name.get(name, {})
            cells = [f"{runs[s]['accuracy']:.2f} ({runs[s]['macs_ratio']:.3f}x)" if s in runs else "-" for s in seeds]
            mean = statistics.mean(r["accuracy"] for r in runs.values()) if runs else None
            delta = (f"{mean - full_mean:+.2f}" if mean is not None and full_mean is not None and name != "full search"
                     else "-")
            gaps = []
            for s, r in runs.items():
                sweep = [p for (_, o, c, n, seed), p in plain.items() if (o, c, n, seed) == (ops, cost, noise, s)]
                at = front_at(sweep, r["macs_ratio"])
                if at is not None:
                    gaps.append(r["accuracy"] - at)
            vs_front = (f"{statistics.mean(gaps):+.2f} ({len(gaps)} of {len(runs)} seeds)"
                        if gaps and name != "full search" else "-")
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {f'{mean:.2f}' if mean is not None else '-'} | "
                         f"{delta} | {vs_front} |")
        lines.append("")
    return lines
