"""Results over seeds for bench.report: one record per run name, with the mean and every seed's value.

A run that finished under one seed only is passed through untouched, so single-seed sections read as they always
did; a run with several seeds becomes one record whose figures are means and whose ``seed_runs`` keeps the
records it came from (memory and wall-clock split of the first seed, which the search-cost table quotes).
"""
from __future__ import annotations

import statistics
from collections import defaultdict

__all__ = ["merge_seeds", "cell", "seeds_of", "diff_cell", "per_seed_diffs", "common_seed_diffs"]

MEAN_FIELDS = ("accuracy", "macs_ratio", "params_ratio", "train_seconds", "wall_time_total_s", "macs_error",
               "search_epoch_seconds", "epoch_seconds")
INT_FIELDS = ("macs", "params", "flops")
DICT_FIELDS = ("latency_ms", "baseline_latency_ms", "speed_ratio")


def _mean(values: list):
    return None if any(v is None for v in values) else statistics.mean(values)


def merge_seeds(rs: list[dict]) -> list[dict]:
    """One record per run name (first-seen order); runs with several seeds averaged."""
    by_run: dict[object, list[dict]] = defaultdict(list)
    for n, r in enumerate(rs):
        by_run[r.get("run") or ("unnamed", n)].append(r)
    out = []
    for runs in by_run.values():
        if len(runs) == 1:
            out.append(runs[0])
            continue
        runs = sorted(runs, key=lambda r: r["seed"])
        merged = dict(runs[0])
        for key in MEAN_FIELDS + INT_FIELDS:
            if all(key in r for r in runs):
                value = _mean([r[key] for r in runs])
                merged[key] = round(value) if key in INT_FIELDS and value is not None else value
        for key in DICT_FIELDS:
            if all(key in r for r in runs):
                common = set.intersection(*(set(r[key]) for r in runs))
                merged[key] = {k: _mean([r[key][k] for r in runs]) for k in runs[0][key] if k in common}
        merged["seed_runs"] = runs
        out.append(merged)
    return out


def seeds_of(r: dict) -> list[int]:
    return [x["seed"] for x in r.get("seed_runs", [r])]


def cell(r: dict, key: str, spec: str = ".2f") -> str:
    """``r[key]``; for a record over seeds, the mean and each seed's value: ``80.10 (80.00 / 80.20)``."""
    if "seed_runs" not in r:
        return format(r[key], spec)
    return f"{format(r[key], spec)} ({' / '.join(format(x[key], spec) for x in r['seed_runs'])})"


def per_seed_diffs(a: dict, b: dict, key: str = "accuracy") -> list[float] | None:
    """``a[key] - b[key]`` seed by seed, when both ran the same seeds (more than one); else None."""
    if "seed_runs" not in a or seeds_of(a) != seeds_of(b):
        return None
    return common_seed_diffs(a, b, key)


def common_seed_diffs(a: dict, b: dict, key: str = "accuracy") -> list[float]:
    """``a[key] - b[key]`` for every seed both ran, single-seed records included (a two-seed run against a
    four-seed match gives two pairs): the pairs a pooled comparison over many points is built from."""
    theirs = {x["seed"]: x for x in b.get("seed_runs", [b])}
    return [x[key] - theirs[x["seed"]][key] for x in a.get("seed_runs", [a]) if x["seed"] in theirs]


def diff_cell(a: dict, b: dict, key: str = "accuracy") -> str:
    """The difference of the means, and seed by seed where both ran the same seeds."""
    each = per_seed_diffs(a, b, key)
    mean = f"{a[key] - b[key]:+.2f}"
    return mean if each is None else f"{mean} ({' / '.join(f'{d:+.2f}' for d in each)})"
