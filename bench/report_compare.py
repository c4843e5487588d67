"""LWDC points against the pruning runs matched to their MACs, for bench.report: the pairs, one verdict per pair,
and each point against the most accurate pruning run of any method.
"""
from __future__ import annotations

import statistics
from collections import defaultdict

from .configs import PRUNE_METHODS
from .report_format import distill_of, fmt, point, same_budget
from .report_seeds import cell, common_seed_diffs, diff_cell, per_seed_diffs, seeds_of

__all__ = ["matched_pairs", "matched_table", "nearest_pruning", "best_pruning", "best_matches", "macs_levels"]

#: two runs within this fraction of each other's MACs are at the same point: a matched pair, or one MACs level
MATCHED = 0.05


def matched_pairs(rs: list[dict]) -> tuple[dict[str, list[dict]], list[tuple[dict, dict, float]]]:
    """LWDC points by the name of their search (same budget first, then longer), and (LWDC run, pruning run, the
    pruning run's MACs relative to the LWDC run's) for every pruning run matched to a point by name, then the
    nearest ones for variants. An ablated search (``--ablate``) is no LWDC point: it is weakened on purpose, and
    the ablation table compares it."""
    by_point = defaultdict(list)
    points = (r for r in rs if r["method"] == "lwdc" and not r.get("ablations"))
    for r in sorted(points, key=lambda r: not same_budget(r)):
        by_point[r.get("search_of") or f"lwdc-{r['ops']}-lam{r['lambda']:g}"].append(r)
    pruned = [r for r in rs if r["method"] in PRUNE_METHODS]
    pairs = [(lw, r, r["macs"] / lw["macs"] - 1) for r in pruned for lw in by_point.get(r.get("matches") or "", [])]
    return by_point, pairs + nearest_pruning(by_point, pruned)


def seed_note(lw: dict, r: dict) -> str:
    """', per seed +a / +b' where both runs have the same several seeds."""
    each = per_seed_diffs(lw, r)
    return "" if each is None else (f"; mean of seeds {', '.join(map(str, seeds_of(lw)))}, per seed "
                                    + " / ".join(f"{d:+.2f}" for d in each))


def matched_table(rs: list[dict]) -> tuple[list[str], list[str]]:
    """LWDC points beside the pruning runs matched to them; and one plain verdict per comparison."""
    by_point, pairs = matched_pairs(rs)
    lines = ["| LWDC point | LWDC acc. | LWDC MACs ratio | pruning | pruning acc. | pruning MACs ratio | MACs off by | "
             "matched (≤5%) | LWDC − pruning (points) |", "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    behind = set()
    for lw, r, error in pairs:
        diff = lw["accuracy"] - r["accuracy"]
        within = abs(error) <= MATCHED
        method = r["method"] if lw in by_point.get(r.get("matches") or "", []) else f"{r['method']} {point(r)}"
        lines.append(f"| {point(lw)} | {cell(lw, 'accuracy')} | {cell(lw, 'macs_ratio', '.3f')} | {method} | "
                     f"{cell(r, 'accuracy')} | {cell(r, 'macs_ratio', '.3f')} | {error * 100:+.1f}% | "
                     f"{'yes' if within else 'no'} | {diff_cell(lw, r)} |")
        if within and not same_budget(lw):
            verdicts.append(f"At matched MACs, {point(lw)} (more training than the schedule: {lw['epochs']['finetune']} fine-tuning "
                            f"epochs after its search) vs {r['method']}: {diff:+.2f} points{seed_note(lw, r)}")
        elif within:
            verdict = (f"At matched MACs, {point(lw)} vs {method}: LWDC {'>=' if diff >= 0 else '<'} pruning "
                       f"({diff:+.2f} points{seed_note(lw, r)})")
            if diff < 0:
                search_val = lw["search_history"][-1]["val"].get("accuracy") if lw.get("search_history") else None
                verdict += (f"; LWDC's argmax network left its {lw['epochs']['search']}-epoch search at "
                            f"{fmt(search_val)}% and had {lw['epochs']['finetune']} fine-tuning epochs, the pruned "
                            f"model {r['epochs']['finetune']}")
                behind.add(r["method"])
            verdicts.append(verdict)
    if behind:
        verdicts.append("Where LWDC trails, the budgets are equal in passes over the data but not in kind: LWDC's "
                        "weights were trained through sampled paths while its gates still moved, and its derived "
                        "network then had the fine-tuning epochs left over; the pruned model kept the baseline's "
                        "structure and had all post-baseline epochs to recover"
                        + (" (prune-group-sparse: sparse training of the whole network first, then fine-tuning of "
                           "the pruned one)" if "prune-group-sparse" in behind else "")
                        + ". LWDC replaced whole layers where pruning thinned channels")
    return lines, verdicts


def best_pruning(rs: list[dict]) -> list[str]:
    """Each same-budget LWDC point against the most accurate pruning run matched to it within 5% MACs, whatever its
    method, with LWDC's onnxruntime speed ratio: the comparison the claim is about. Only where the strongest
    Torch-Pruning method (prune-group-sparse) ran, so that "best" means best of all three."""
    if not any(r["method"] == "prune-group-sparse" for r in rs):
        return []
    best = best_matches(rs)
    if not best:
        return []
    lines = ["Against the most accurate Torch-Pruning run matched within 5% MACs (of prune-l1, prune-l1-global and "
             "prune-group-sparse):", "",
             "| LWDC point | LWDC acc. | MACs ratio | best pruning | its acc. | LWDC − best (points) | LWDC ORT speed "
             "ratio |", "|---|---|---|---|---|---|---|"]
    ahead, both, multi, fast, pairs = [], [], 0, 0, []
    for lw, r, error in best:
        diff, each = lw["accuracy"] - r["accuracy"], per_seed_diffs(lw, r)
        pairs += [(distill_of(lw) > 0, d) for d in common_seed_diffs(lw, r)]
        ort = (lw.get("speed_ratio") or {}).get("ort_b1")
        if diff >= 0:
            ahead.append(lw)
        multi += each is not None
        if each is not None and all(d >= 0 for d in each):
            both.append(lw)
        fast += ort is not None and ort >= 0.8
        lines.append(f"| {point(lw)} | {cell(lw, 'accuracy')} | {cell(lw, 'macs_ratio', '.3f')} | {r['method']} "
                     f"({error * 100:+.1f}% MACs) | {cell(r, 'accuracy')} | {diff_cell(lw, r)} | {fmt(ort)} |")
    n = len(best)
    return lines + ["", f"LWDC >= the best pruning run at {len(ahead)} of {n} matched point(s) by the mean over seeds "
                        f"({levels(ahead)}), and in every seed at {len(both)} of the {multi} point(s) run under two or "
                        f"more seeds ({levels(both)}); onnxruntime speed ratio >= 0.8 at {fast} of {n}.", ""] \
        + pooled(pairs)


def pooled(pairs: list[tuple[bool, float]]) -> list[str]:
    """Every seed of every point above against the same seed of its pruning match, pooled: whether LWDC is ahead
    overall, which single points (two seeds each, whose seeds spread by up to 1.3 points) cannot say. ``pairs``: (LWDC
    fine-tuning distilled?, LWDC - pruning in points)."""
    def summary(diffs: list[float]) -> str:
        se = statistics.stdev(diffs) / len(diffs) ** 0.5
        return (f"{statistics.mean(diffs):+.2f} ± {se:.2f} points (mean ± standard error over {len(diffs)} seed "
                f"pairs; LWDC ahead or level in {sum(d >= 0 for d in diffs)})")
    if len(pairs) < 2:
        return []
    parts = [summary([d for _, d in pairs])]
    distilled = [d for kd, d in pairs if kd]
    if 2 <= len(distilled) < len(pairs):
        parts.append(f"with distilled fine-tuning only, {summary(distilled)}")
    return [f"Seed by seed, LWDC − best pruning: {'; '.join(parts)}. Pairs share pruning runs and the baseline, so "
            "they are not independent and the standard error is optimistic.", ""]


def levels(points: list[dict]) -> str:
    n = macs_levels(points)
    return f"{n} distinct MACs level{'' if n == 1 else 's'}"


def macs_levels(points: list[dict], within: float = MATCHED) -> int:
    """How many distinct operating points ``points`` cover: two searches (say two lambdas) that landed within 5% of
    each other's MACs are one point measured twice, not two points. Greedy from the smallest: a level holds every
    point within ``within`` above its first."""
    count, start = 0, None
    for ratio in sorted(p["macs_ratio"] for p in points):
        if start is None or ratio > start * (1 + within):
            count, start = count + 1, ratio
    return count


def best_matches(rs: list[dict]) -> list[tuple[dict, dict, float]]:
    """(same-budget LWDC point, the most accurate pruning run matched to it within 5% MACs, MACs error), by MACs."""
    best: dict[int, tuple[dict, dict, float]] = {}
    for lw, r, error in matched_pairs(rs)[1]:
        better = id(lw) not in best or r["accuracy"] > best[id(lw)][1]["accuracy"]
        if same_budget(lw) and abs(error) <= MATCHED and better:
            best[id(lw)] = (lw, r, error)
    return sorted(best.values(), key=lambda t: t[0]["macs_ratio"])


def nearest_pruning(by_point: dict[str, list[dict]], pruned: list[dict]) -> list[tuple[dict, dict, float]]:
    """For an LWDC point no pruning run was matched to by name (a variant such as -noiseX), the finished pruning
    run of each method nearest to its MACs, when within 5%: the comparison needs matched MACs, not a twin run; and
    the same fine-tuning recipe (a distilled LWDC run is compared only with distilled pruning runs)."""
    pairs = []
    for name, runs in by_point.items():
        if any(r.get("matches") == name for r in pruned):
            continue
        for method in sorted({r["method"] for r in pruned}):
            for lw in runs:
                same = [r for r in pruned if r["method"] == method and distill_of(r) == distill_of(lw)]
                if not same:
                    continue
                error, r = min(((r["macs"] / lw["macs"] - 1, r) for r in same), key=lambda e: abs(e[0]))
                if abs(error) <= MATCHED:
                    pairs.append((lw, r, error))
    return pairs
