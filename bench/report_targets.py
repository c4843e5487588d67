"""The targets-and-budgets section of docs/RESULTS.md, from ``bench/results/targets*.json`` (``bench.targets``).

One row per run: the target, where the search's argmax network ended before any repair, how many layers the
repair switched, what the derived network measures against the limit, and its accuracy; a budget refused before
training shows the refusal instead.
"""
from __future__ import annotations

import json
from pathlib import Path

MARKERS = ("<!-- bench:targets:start -->", "<!-- bench:targets:end -->")


def _law(r: dict) -> str:
    """What sized the target's pull (runs from before ``budget_signal`` ran the expected law), and any non-default
    gate optimiser or ramp."""
    extra = [r["gate_optimizer"]] if r.get("gate_optimizer", "adam") != "adam" else []
    extra += [f"ramp {r['budget_ramp']:g}"] if r.get("budget_ramp") else []
    return ", ".join([r.get("budget_signal", "expected")] + extra)


def _row(file: str, r: dict, baseline: dict) -> str:
    if "refused" in r:
        return (f"| {r['target']} | {_law(r)} | {r['seed']} | refused after {r['seconds']:.0f} s (before training) | | | "
                f"{r['refused'].split(';')[0]} | {file} |")
    alone = r["search_argmax_ratio"][-1] if r.get("search_argmax_ratio") else None
    ram = (f"; peak RAM {r['ram_bytes_before']:,} -> {r['ram_bytes_after']:,} B (plain plan "
           f"{r['ram_bytes_after_plain_plan']:,})" if "ram_bytes_after" in r else "")
    return (f"| {r['target']} | {_law(r)} | {r['seed']} | {r['achieved_ratio']:.3f}x of a {r['limit_ratio']:.3f}x limit "
            f"({'met' if r['met'] else 'MISSED'}) | {alone:.3f}x | {len(r['repaired_layers'])} / "
            f"{len(r.get('filled_layers') or [])}{' (fill limits)' if r.get('fill_limits') else ''} | "
            f"{r['accuracy']:.2f}% (baseline {baseline['accuracy']:.2f}%), MACs {r['macs_ratio']:.3f}x{ram} | {file} |")


#: uNAS's CIFAR-10 limits (Liberis, Dudziak and Lane 2021) and the error it reached inside them
UNAS_LIMITS = {"flash": 75000.0, "ram": 75000.0}
UNAS_ERROR = 0.18


def _unas_runs(results: Path) -> list[dict]:
    """Full-CIFAR-10 LWDC runs of ``bench.cifar`` held to uNAS's flash and RAM limits."""
    runs = []
    for f in sorted((results / "cifar").glob("*.json")):
        r = json.loads(f.read_text())
        limits = {b["cost"]: b["limit"] for b in r.get("budgets") or []}
        if r.get("method") == "lwdc" and limits == UNAS_LIMITS:
            runs.append(r)
    return runs


def _bytes(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def unas_lines(results: Path) -> list[str]:
    """LWDC at uNAS's limits beside uNAS's error, float and as the int8 C that the limits size."""
    runs = _unas_runs(results)
    if not runs:
        return []
    lines = ["### At uNAS's CIFAR-10 limits: 75,000 B flash and 75,000 B peak RAM, int8 (full CIFAR-10)", "",
             "`python -m bench.cifar --schedule cpu-converged --budget flash=75000 --budget ram=75000 ...`: from the "
             "converged baseline, the schedule's warm-up, search and fine-tuning epochs, no lambda. Flash and peak "
             "RAM are the int8 C export's (weights; the memory planner's arena and scratch); the int8 C is "
             f"calibrated on 512 training images and scored on the whole test set. uNAS reached error {UNAS_ERROR} "
             f"({100 * (1 - UNAS_ERROR):.0f}% accuracy) inside the same limits.", "",
             "| operators | variants | float acc. | int8 C acc. | error (int8 C) | flash (B) | peak RAM (B) | MACs | "
             "choices |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        c = r.get("int8_c") or {}
        variants = r.get("variants") or []     # recorded by the run (a result from before variants has none)
        counts: dict[str, int] = {}
        for op in (r.get("choices") or {}).values():
            counts[op] = counts.get(op, 0) + 1
        acc8 = c.get("int8_c_accuracy")
        lines.append(f"| {r['ops']} | {', '.join(variants) or '-'} | {r['accuracy']:.2f}% | "
                     f"{f'{acc8:.2f}%' if acc8 is not None else 'not measured'} | "
                     f"{f'{1 - acc8 / 100:.3f}' if acc8 is not None else '-'} | "
                     f"{_bytes(c.get('flash_bytes'))} | {_bytes(c.get('peak_ram_bytes'))} | {r['macs_ratio']:.3f}x | "
                     + ", ".join(f"{op} x{n}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1])) + " |")
    best = max((r.get("int8_c") or {}).get("int8_c_accuracy", 0.0) for r in runs)
    verdict = "meets" if 1 - best / 100 <= UNAS_ERROR else "misses"
    lines += ["", f"Best int8 C error {1 - best / 100:.3f}: it {verdict} uNAS's {UNAS_ERROR}.", ""]
    return lines


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
             "`targets_integral.json` holds the first control law's runs (multiplier only), kept for the record. "
             "'signal' is what sized the target's pull during the search (`budget_signal`, lwdc/budgets.py): "
             "`expected`, the cost averaged over the gates (every run before `targets_signal*.json`), or `argmax`, "
             "the network that would be derived (the default since).", "",
             "| target | signal | seed | achieved | search alone | layers repaired / filled | accuracy, MACs | file |",
             "|---|---|---|---|---|---|---|---|"]
    for f in files:
        data = json.loads(f.read_text())
        for r in data.get("runs", []):
            lines.append(_row(f.name, r, data["baseline"]))
    unas = unas_lines(results)
    return "\n".join(lines + ([""] + unas if unas else [])) + "\n"
