"""The targets-and-budgets section of docs/RESULTS.md, from ``bench/results/targets*.json`` (``bench.targets``).

One row per run: the target, where the search's argmax network ended before any repair, how many layers the
repair switched, what the derived network measures against the limit, and its accuracy; a budget refused before
training shows the refusal instead.
"""
from __future__ import annotations

import json
from pathlib import Path

MARKERS = ("<!-- bench:targets:start -->", "<!-- bench:targets:end -->")


def _row(file: str, r: dict, baseline: dict) -> str:
    if "refused" in r:
        return (f"| {r['target']} | {r['seed']} | refused after {r['seconds']:.0f} s (before training) | | | "
                f"{r['refused'].split(';')[0]} | {file} |")
    alone = r["search_argmax_ratio"][-1] if r.get("search_argmax_ratio") else None
    ram = (f"; peak RAM {r['ram_bytes_before']:,} -> {r['ram_bytes_after']:,} B (plain plan "
           f"{r['ram_bytes_after_plain_plan']:,})" if "ram_bytes_after" in r else "")
    return (f"| {r['target']} | {r['seed']} | {r['achieved_ratio']:.3f}x of a {r['limit_ratio']:.3f}x limit "
            f"({'met' if r['met'] else 'MISSED'}) | {alone:.3f}x | {len(r['repaired_layers'])} / "
            f"{len(r.get('filled_layers') or [])}{' (fill limits)' if r.get('fill_limits') else ''} | "
            f"{r['accuracy']:.2f}% (baseline {baseline['accuracy']:.2f}%), MACs {r['macs_ratio']:.3f}x{ram} | {file} |")


def section(results: Path) -> str:
    files = sorted(results.glob("targets*.json"))
    if not files:
        return ""
    lines = ["## Targets and budgets on ResNet-20, CIFAR-10 subset (issue 24, measured here)", "",
             "`python -m bench.targets` (see its docstring): one baseline (30 epochs on the shipped subset), then an "
             "LWDC run per target with no lambda (8 search + 8 fine-tuning epochs). 'search alone' is the argmax "
             "network at the end of the search, before the greedy repair (and the fill toward a target, or toward an "
             "absolute limit with `fill_limits`); 'achieved' is the derived network "
             "(MACs by the independent counter, flash as the C exporter counts it, peak RAM by the memory planner). "
             "`targets_integral.json` holds the first control law's runs (multiplier only), kept for the record.", "",
             "| target | seed | achieved | search alone | layers repaired / filled | accuracy, MACs | file |",
             "|---|---|---|---|---|---|---|"]
    for f in files:
        data = json.loads(f.read_text())
        for r in data.get("runs", []):
            lines.append(_row(f.name, r, data["baseline"]))
    return "\n".join(lines) + "\n"
