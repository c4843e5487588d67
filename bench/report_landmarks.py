"""The landmarks section of docs/RESULTS.md, from ``bench/results/landmarks/fold*.json`` (``bench.landmarks``).

One row per variant (loss, pose balancing, transfer from CIFAR-10, LWDC): RMSE and mean error in pixels of the
original 640x480 frames, NME and PCK as mean +- sd over the folds with every fold's value, what the model costs;
then the comparisons the issue asks for (RWing against L2, balancing on/off, transfer against scratch, LWDC
against its baseline, int8 C against float), each over the folds both sides have.
"""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from .landmarks import C_INT8

MARKERS = ("<!-- bench:landmarks:start -->", "<!-- bench:landmarks:end -->")
DLC_ERROR_PX = 2.81        # DeepLabCut's test error for this example: ResNet-50, full resolution, 95% training
ORDER = ("l2", "wing", "rwing", "rwing-balance", "rwing-transfer")
LABELS = {"l2": "L2", "wing": "Wing", "rwing": "RWing", "rwing-balance": "RWing + pose balancing",
          "rwing-transfer": "RWing, init from CIFAR-10"}


def _stats(values: list[float], digits: int = 1, per_fold: bool = True) -> str:
    if not values:
        return "-"
    sd = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    folds = f" ({', '.join(f'{v:.{digits}f}' for v in values)})" if per_fold else ""
    return f"{statistics.mean(values):.{digits}f}{sd}{folds}"


def load(results: Path) -> dict[str, dict[int, dict]]:
    """``{variant: {fold: row}}`` of the finished (not ``--quick``) rows."""
    rows: dict[str, dict[int, dict]] = defaultdict(dict)
    for f in sorted((results / "landmarks").glob("fold*.json")):
        r = json.loads(f.read_text())
        if not r.get("quick"):
            rows[r["variant"]][r["fold"]] = r
    return rows


def _order(rows: dict) -> list[str]:
    return [v for v in ORDER if v in rows] + sorted(v for v in rows if v not in ORDER)


def _label(variant: str) -> str:
    return LABELS.get(variant, f"LWDC {variant.removeprefix('lwdc-').replace('macs', 'MACs ')} (from RWing)"
                      if variant.startswith("lwdc") else variant)


def _metric(rows: dict[int, dict], key: str) -> list[float]:
    return [rows[f]["metrics"][key] for f in sorted(rows)]


def _main_table(rows: dict) -> list[str]:
    head = ["model", "folds", "RMSE px (per fold)", "mean error px", "NME %", "PCK@10px %", "params", "MACs",
            "ORT ms", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in _order(rows):
        g = rows[v]
        first = g[min(g)]
        macs = f"{first['macs']:,}" + (f" ({statistics.mean(r['macs_ratio'] for r in g.values()):.3f}x)"
                                       if "macs_ratio" in first else "")
        secs = [r.get("train_seconds") or ((r.get("search_seconds") or 0) + (r.get("finetune_seconds") or 0))
                for r in g.values()]
        lines.append("| " + " | ".join([
            _label(v), str(len(g)), _stats(_metric(g, "rmse_px")), _stats(_metric(g, "mean_error_px"), per_fold=False),
            _stats(_metric(g, "nme"), per_fold=False), _stats(_metric(g, "pck"), per_fold=False), f"{first['params']:,}",
            macs, f"{statistics.mean(r['latency_ms_onnxruntime'] for r in g.values()):.3f}",
            f"{statistics.mean(secs):.0f}"]) + " |")
    return lines


def _points_table(rows: dict) -> list[str]:
    first = next(iter(next(iter(rows.values())).values()))
    points = [k.split("/", 1)[1] for k in first["metrics"] if k.startswith("error_px/")]
    head = ["model"] + [f"{p} px" for p in points]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in _order(rows):
        lines.append("| " + " | ".join([_label(v)] + [_stats(_metric(rows[v], f"error_px/{p}"), per_fold=False)
                                                      for p in points]) + " |")
    return lines


def _pair(rows: dict, a: str, b: str, key: str = "rmse_px") -> tuple[list[int], list[float], list[float]]:
    folds = sorted(set(rows.get(a, {})) & set(rows.get(b, {})))
    return folds, [rows[a][f]["metrics"][key] for f in folds], [rows[b][f]["metrics"][key] for f in folds]


def _compare(rows: dict, a: str, b: str, what: str) -> str | None:
    """One sentence: ``a`` against ``b`` in RMSE over their common folds (lower is better)."""
    folds, xa, xb = _pair(rows, a, b)
    if not folds:
        return None
    ma, mb = statistics.mean(xa), statistics.mean(xb)
    better = sum(x < y for x, y in zip(xa, xb))
    return (f"- **{what}**: {_label(a)} {ma:.1f} px against {_label(b)} {mb:.1f} px RMSE "
            f"({ma - mb:+.1f} px, {100 * (ma - mb) / mb:+.1f}%; lower on {better} of {len(folds)} folds).")


def _lwdc_lines(rows: dict) -> list[str]:
    out = []
    for v in (v for v in rows if v.startswith("lwdc")):
        base = rows.get("rwing", {})
        g = rows[v]
        folds = sorted(set(g) & set(base))
        if not folds:
            continue
        rel = [100 * (g[f]["metrics"]["rmse_px"] - base[f]["metrics"]["rmse_px"]) / base[f]["metrics"]["rmse_px"]
               for f in folds]
        ratios = [g[f]["macs_ratio"] for f in folds]
        mean_rel = 100 * (statistics.mean(g[f]["metrics"]["rmse_px"] for f in folds)
                          / statistics.mean(base[f]["metrics"]["rmse_px"] for f in folds) - 1)
        met = max(ratios) <= 0.6 and mean_rel <= 10
        out.append(f"- **LWDC** ({_label(v)}): MACs {min(ratios):.3f}-{max(ratios):.3f}x of the RWing baseline "
                   f"({100 * (1 - max(ratios)):.0f}% fewer at least); RMSE {mean_rel:+.1f}% relative over the folds' means "
                   f"(per fold {', '.join(f'{x:+.1f}%' for x in rel)}). The goal (>= 40% fewer MACs, within 10% "
                   f"relative RMSE): **{'met' if met else 'not met'}**.")
        choices = g[folds[0]].get("choices") or {}
        if choices:
            counts: dict[str, int] = defaultdict(int)
            for op in choices.values():
                counts[op] += 1
            out.append(f"  Fold {folds[0]}'s choices: " + ", ".join(f"{op} x{n}" for op, n in sorted(counts.items())) + ".")
        for cal in C_INT8:
            cs = [g[f]["c_int8"][cal] for f in folds if cal in (g[f].get("c_int8") or {})]
            if not cs:
                continue
            mx = [c["diff_input_px_max"] for c in cs]
            mn = [c["diff_input_px_mean"] for c in cs]
            ok = sum(c["within_1px"] for c in cs)
            how = cal.replace("+bias", " calibration + bias correction") if "+" in cal else f"{cal} calibration"
            out.append(f"- **int8 C** ({how}, {cs[0]['calib_frames']} training frames; flash "
                       f"{cs[0]['flash_bytes']:,} B, peak RAM {cs[0]['peak_ram_bytes']:,} B): point distance to the "
                       f"float model in 64x64-input pixels, max {max(mx):.2f} (per fold {', '.join(f'{x:.2f}' for x in mx)}), "
                       f"mean {statistics.mean(mn):.2f}; within 1 px on {ok} of {len(cs)} folds; int8 C RMSE "
                       f"{_stats([c['metrics']['rmse_px'] for c in cs], per_fold=False)} original px.")
            bs = [g[f]["baseline_c_int8"][cal] for f in folds if cal in (g[f].get("baseline_c_int8") or {})]
            if bs:
                out.append(f"  The uncompressed RWing model's int8 C ({cal}, {len(bs)} folds): max "
                           f"{max(b['diff_input_px_max'] for b in bs):.2f}, mean "
                           f"{statistics.mean(b['diff_input_px_mean'] for b in bs):.2f} input px; within 1 px on "
                           f"{sum(b['within_1px'] for b in bs)} of {len(bs)} folds.")
        best = [cal for cal in C_INT8 if all(g[f].get("c_int8", {}).get(cal, {}).get("within_1px") for f in folds)]
        out.append(f"- **int8 C within 1 input pixel of float at every point of every test frame**: "
                   + (f"**met** with {', '.join(best)} on all {len(folds)} folds." if best else "**not met**."))
        if any(not c["within_1px"] for f in folds for c in (g[f].get("c_int8") or {}).values()):
            out.append("  Where the int8 C is off by more than a pixel: see docs/landmarks.md, \"int8 export\".")
    return out


def section(results: Path) -> str:
    rows = load(Path(results))
    if not rows:
        return ""
    any_row = next(iter(next(iter(rows.values())).values()))
    s = any_row.get("settings", {})
    out = ["## Landmarks: open-field mouse frames (issue 17, measured here)", "",
           f"`python -m bench.landmarks` (see its docstring). DeepLabCut's open-field example (116 frames of 640x480, "
           f"4 points), 5-fold cross-validation on the reader's seeded folds (92-93 training, 23-24 test frames), "
           f"frames resized to {s.get('size', 64)}x{s.get('size', 64)}. One model for this CPU: "
           f"{s.get('model', 'resnet8')} at width {s.get('width', 0.5)}, trained {s.get('epochs')} epochs with "
           f"{s.get('optimizer')} at lr {s.get('lr')}, batch {s.get('batch_size')}, augmentation "
           f"`{s.get('augment')}` (both chosen on fold 0, a test fold, in a sweep of four settings: its figures are "
           f"slightly optimistic); every variant of a fold starts from the same seed. Errors are in pixels of the "
           "original frames; mean ± sd over the folds (each fold's value). NME: mean point distance over the "
           "snout-to-tail-base length; PCK: points within 10 px. ORT ms: onnxruntime, batch 1, one thread.", ""]
    out += _main_table(rows) + [""]
    out += ["Per-point mean error (original px, mean ± sd over the folds):", ""] + _points_table(rows) + [""]
    out += ["What the runs show:", ""]
    for a, b, what in (("rwing", "l2", "RWing against L2"), ("wing", "l2", "Wing against L2"),
                       ("rwing-balance", "rwing", "Pose balancing"),
                       ("rwing-transfer", "rwing", "Transfer from CIFAR-10 against scratch")):
        line = _compare(rows, a, b, what)
        if line:
            out.append(line)
    t = next(iter(rows.get("rwing-transfer", {}).values()), {}).get("transfer")
    if t:
        out.append(f"  The source: {s.get('model')} (width {s.get('width')}) trained {t.get('epochs')} epochs on "
                   f"`{t.get('data')}` ({t.get('test_accuracy', float('nan')):.1f}% test accuracy), every tensor "
                   "but the head loaded, then all weights trained.")
    out += _lwdc_lines(rows)
    if "rwing" in rows:
        mean_err = statistics.mean(_metric(rows["rwing"], "mean_error_px"))
        out.append(f"- **Against DeepLabCut** ({DLC_ERROR_PX} px test error: ResNet-50, ~23.5 M parameters, frames "
                   f"at full resolution, 95% of them for training): our RWing model's mean error is {mean_err:.1f} px, "
                   f"{mean_err / DLC_ERROR_PX:.0f}x theirs. At 64x64 one input pixel spans 10x7.5 original pixels, so "
                   "even an error of one input pixel is ~9 original pixels; the model has under 0.1% of ResNet-50's "
                   "parameters, regresses coordinates from a globally pooled feature instead of DeepLabCut's score "
                   "maps with location refinement, starts without ImageNet weights, and trains on 80% of the frames.")
    docs = Path(__file__).resolve().parents[1] / "docs"
    pngs = [p for p in ("landmarks_points.png", "landmarks_point_errors.png") if (docs / p).exists()]
    if pngs:
        out += ["", "Drawings (`python -m bench.landmarks --figures`): "
                + ", ".join(f"[{p}]({p})" for p in pngs) + " (true and predicted points on fold 0's test frames; "
                "per-point error bars over the folds)."]
    return "\n".join(out) + "\n"
