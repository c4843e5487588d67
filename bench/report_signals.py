"""The signals section of docs/RESULTS.md, from ``bench/results/signals/<set>/*.json`` (``bench.signals``).

One row per (data set, model, method): the headline metric as mean +- sd over the splits with every split's
value (FSDD: accuracy over seeds on the official split; P300: AUC over folds by recording), the detection figures
for P300, and what the model costs: MACs against its baseline, parameters, int8 flash and peak RAM of the C export,
the int8 C's own metric on the whole test split, latency (onnxruntime and int8 C, batch 1, one thread) and the
search's seconds.
"""
from __future__ import annotations

import json
import functools
import statistics
from collections import defaultdict
from pathlib import Path

from .report_latency import fastest_round
from .report_random import verdict

MARKERS = ("<!-- bench:signals:start -->", "<!-- bench:signals:end -->")
HEADLINE = {"fsdd": ("accuracy", "accuracy (%)", 2), "p300": ("auc", "AUC", 3)}


def _stats(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    sd = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{sd} ({', '.join(f'{v:.{digits}f}' for v in values)})"


def _mean(values: list[float], fmt: str) -> str:
    return format(statistics.mean(values), fmt) if values else "-"


def load(results: Path) -> dict[str, list[dict]]:
    rows = defaultdict(list)
    for f in sorted((results / "signals").glob("*/*.json")):
        r = json.loads(f.read_text())
        if not r.get("quick"):
            rows[r["set"]].append(r)
    return rows


def _table(name: str, rows: list[dict]) -> list[str]:
    key, label, digits = HEADLINE[name]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if "random_draw" not in r and "rerun_of" not in r:
            groups[(r["model"], r["method"])].append(r)
    base_macs = {(r["model"], r["split"]): r["macs"] for r in rows if r["method"] == "baseline"}
    clinical = name == "p300"
    head = ["model", "method", "splits", label]
    if clinical:
        head += ["balanced acc. (%)", "sensitivity", "specificity"]
    head += ["MACs", "params", "int8 flash (B)", "int8 peak RAM (B)", f"int8 C {label} (min/max; MSE)", "ORT ms",
             "C int8 ms", "search s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = sorted(groups, key=lambda g: (g[0], g[1] != "lda", g[1] != "baseline", g[1]))
    for model, method in order:
        g = sorted(groups[(model, method)], key=lambda r: r["split"])
        m = [r["metrics"] for r in g]
        cells = [model if method != "lda" else "shrinkage LDA", method, str(len(g)), _stats([x[key] for x in m], digits)]
        if clinical:
            cells += [_mean([x["balanced_accuracy"] for x in m], ".1f"), _mean([x["sensitivity"] for x in m], ".3f"),
                      _mean([x["specificity"] for x in m], ".3f")]
        if method == "lda":
            cells += ["-"] * 8
        else:
            ratios = [r["macs"] / base_macs[(r["model"], r["split"])] for r in g if (r["model"], r["split"]) in base_macs]
            c8 = [r["c"]["int8"] for r in g]
            cells += [f"{g[0]['macs']:,} ({_mean(ratios, '.3f')}x)" if ratios else f"{g[0]['macs']:,}",
                      f"{g[0]['params']:,}", f"{c8[0]['flash_bytes']:,}", f"{c8[0]['peak_ram_bytes']:,}",
                      _stats([c["metrics"][key] for c in c8], digits)
                      + (f"; {_stats([r['c']['int8_mse']['metrics'][key] for r in g], digits)}"
                         if all("int8_mse" in r["c"] for r in g) else ""),
                      _mean([r["latency_ms_onnxruntime"] for r in g], ".3f"), _mean([c["latency_ms_c"] for c in c8], ".3f"),
                      _mean([r["search_seconds"] for r in g if r.get("search_seconds") is not None], ".0f")
                      if method.startswith("lwdc") else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _retimed(results: Path, name: str) -> dict | None:
    """``bench.remeasure --signals NAME``'s file: the rows' models timed together in one process, if it exists."""
    path = results / "signals" / f"latency_{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _ort_time(r: dict, timed: dict) -> tuple[float, float | None, bool]:
    """A row's onnxruntime ms, as a fraction of its baseline's or None, and whether it was re-timed with it."""
    from .signals import row_stem

    e = timed.get(row_stem(r["model"], r["settings"]["split_kind"], r["split"], r["method"], r.get("quick", False)))
    base = timed.get(e["baseline"]) if e else None
    if e and base and "ort_b1" in e and "ort_b1" in base:
        mine, original = fastest_round(e, "ort_b1"), fastest_round(base, "ort_b1")
        return mine, mine / original, True
    return r["latency_ms_onnxruntime"], None, False


def _ort_cell(values: list[tuple]) -> str:
    """Mean ms of ``_ort_time`` values, the mean fraction where every one has it, and * where any is a row's own."""
    ms = statistics.mean(v[0] for v in values)
    frac = [v[1] for v in values if v[1] is not None]
    return f"{ms:.3f}" + (f" ({statistics.mean(frac):.3f}x)" if len(frac) == len(values) else "") + \
        ("" if all(v[2] for v in values) else " *")


def _random(name: str, rows: list[dict], retimed: dict | None = None) -> list[str]:
    """Issue 26 on a 1-D task: each LWDC point against its random draws (same split, matched cost within 3%).
    onnxruntime times come from ``retimed`` (all models in one process) where the row and its baseline are in it,
    as ms and as a fraction of that baseline; else each row's own, timed in its own process under its own load."""
    key, label, digits = HEADLINE[name]
    draws: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if "random_draw" in r:
            draws[(r["model"], r["split"], r["method"].rsplit("-random-", 1)[0],
                   r["random_draw"].get("match", "macs"))].append(r)
    if not draws:
        return []
    points = {(r["model"], r["split"], r["method"]): r for r in rows if "rerun_of" not in r}
    points.update({(r["model"], r["split"], r["rerun_of"]): r for r in rows if "rerun_of" in r})  # the draws' own
    timed = (retimed or {}).get("models", {})
    ort = functools.partial(_ort_time, timed=timed)
    lines = [f"Random architectures at the LWDC point's cost (issue 26's protocol: operators drawn uniformly per "
             f"layer until the matched cost, MACs or onnxruntime latency, is within 3% of the point's, started from "
             f"the point's trained supernet, fine-tuned with its settings); PyTorch {label} on the test split, "
             f"onnxruntime batch-1 ms (and as a fraction of the baseline's):", "",
             "| model | split | point | matched on | LWDC | draws | random mean | random min-max | best draw | "
             "LWDC ORT ms | random ORT ms (mean) | verdict |", "|" + "---|" * 12]
    for (model, split, point, match), g in sorted(draws.items()):
        lw = points.get((model, split, point))
        vals = [r["metrics"][key] for r in g]
        lines.append("| " + " | ".join([
            model, str(split), point, match, format(lw["metrics"][key], f".{digits}f") if lw else "-", str(len(g)),
            format(statistics.mean(vals), f".{digits}f"), f"{min(vals):.{digits}f}-{max(vals):.{digits}f}",
            format(max(vals), f".{digits}f"), _ort_cell([ort(lw)]) if lw else "-", _ort_cell([ort(r) for r in g]),
            verdict(lw["metrics"][key], vals, digits) if lw else "-"]) + " |")
    if retimed:
        lines += ["", f"ORT times re-timed together by `python -m bench.remeasure --signals {name}` "
                      f"({retimed['measured_at']}, the fastest of {retimed['rounds']} rounds, one process, one thread, load average "
                      f"{retimed['load_average_1m_before']:.1f} at the start); * marks a row's own time, taken in its "
                      f"own process."]
    else:
        lines += ["", "ORT times are each row's own, taken in its own process under that moment's load; "
                      f"`python -m bench.remeasure --signals {name}` times them together."]
    return lines + [""]


def section(results: Path) -> str:
    rows = load(results)
    if not rows:
        return ""
    out = ["## Signals: spoken digits and P300 EEG (issue 16, measured here)", "",
           "`python -m bench.signals --set fsdd|p300` (see its docstring). FSDD: official split (2,700 train / 300 "
           "test), one second at 8 kHz, splits are training seeds. P300: subject 1, 4 folds by recording (never by "
           "epoch), epochs with |x| >= 100 uV rejected; AUC, and balanced accuracy, sensitivity and specificity at "
           "the Youden threshold chosen on the training folds' scores. LWDC points are MACs targets (lambda 0); "
           "MACs by the independent counter against the same split's baseline. Mean ± sd (each split's value). "
           "Latency: median ms of one sample, one thread; the int8 C figure is the generated C compiled with -O3.",
           ""]
    for name in ("fsdd", "p300"):
        if rows.get(name):
            out += ([f"### {name.upper()}", ""] + _table(name, rows[name]) + [""]
                    + _random(name, rows[name], _retimed(results, name)))
    return "\n".join(out)
