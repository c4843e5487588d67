"""How LWDC and pruning reach the same MACs, layer by layer, for bench.report (from bench.layer_macs's file)."""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from .report_format import distill_of

__all__ = ["load_layers", "layer_lines"]


def load_layers(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _short(lw: dict) -> str:
    cost = lw.get("cost") or "macs"
    return f"{lw['ops']} λ={lw['lambda']:g}" + ("" if cost == "macs" else f", {cost.split(':')[0]} cost")


def _ratios(entry: dict, original: dict, names: list[str]) -> dict[str, float]:
    return {n: entry["layers"][n] / original["layers"][n] for n in names if original["layers"].get(n)}


def _stages(entry: dict, original: dict, names: list[str]) -> dict[str, float]:
    """MACs kept per stage (the first part of a layer's name: ``layer2`` of ``layer2.1.conv1``)."""
    kept, full = defaultdict(int), defaultdict(int)
    for n in names:
        kept[n.split(".")[0]] += entry["layers"][n]
        full[n.split(".")[0]] += original["layers"][n]
    return {s: kept[s] / full[s] for s in full if full[s]}


def _summary(lw: dict, pr: dict, ours: dict[str, float], theirs: dict[str, float], stages: tuple[dict, dict]) -> str:
    whole = sum(v >= 0.999 for v in ours.values())
    gone = [n for n, v in ours.items() if v == 0]
    cut = sorted(v for v in ours.values() if 0 < v < 0.999)
    p_whole = sum(v >= 0.999 for v in theirs.values())
    p_cut = sorted(v for v in theirs.values() if v < 0.999)
    text = (f"- {_short(lw)} ({lw['macs_ratio']:.3f}x MACs) against {pr['method']} ({pr['macs_ratio']:.3f}x): LWDC "
            f"kept {whole} of {len(ours)} layers whole, removed {len(gone)}"
            + (f" and cut {len(cut)} to {cut[0]:.2f}-{cut[-1]:.2f} of their MACs" if cut else "")
            + f"; pruning kept {p_whole} whole"
            + (f" and cut {len(p_cut)} to {p_cut[0]:.2f}-{p_cut[-1]:.2f} (median {statistics.median(p_cut):.2f})"
               if p_cut else ""))
    mine, other = stages
    return text + ". MACs kept by stage, LWDC / pruning: " + ", ".join(
        f"{s} {mine[s]:.2f} / {other[s]:.2f}" for s in mine if s in other) + "."


def layer_lines(pairs: list[tuple[dict, dict, float]], data: dict | None) -> list[str]:
    """For each LWDC point and the most accurate pruning run at its MACs (``best_matches``; plain fine-tuning only,
    as distilling changes no architecture), the share of each original layer's MACs that each kept (seed 0)."""
    if not data:
        return []
    models = data["models"]
    shown = [(lw, pr) for lw, pr, _ in pairs if not distill_of(lw) and lw.get("_file") in models
             and pr.get("_file") in models and models[lw["_file"]]["baseline"] in models]
    if not shown:
        return []
    original = models[models[shown[0][0]["_file"]]["baseline"]]
    names = [n for n in original["layers"] if n in (shown[0][0].get("choices") or {})]
    head = "| layer | original MACs (k) | " + " | ".join(f"{_short(lw)}: LWDC | {pr['method']}" for lw, pr in shown)
    lines = ["Where the MACs went (`python -m bench.layer_macs`: each final model counted layer by layer with torch's "
             "FlopCounterMode; seed 0): the share of each original layer's MACs that the LWDC point kept, with the "
             "operator it chose, beside the most accurate pruning run at its MACs.", "",
             head + " |", "|---|---|" + "---|---|" * len(shown)]
    ratios = [(_ratios(models[lw["_file"]], original, names), _ratios(models[pr["_file"]], original, names))
              for lw, pr in shown]
    for n in names:
        cells = [f"{(lw.get('choices') or {}).get(n, '-')} {ours[n]:.2f} | {theirs[n]:.2f}"
                 for (lw, _), (ours, theirs) in zip(shown, ratios)]
        lines.append(f"| {n} | {original['layers'][n] / 1e3:,.0f} | " + " | ".join(cells) + " |")
    lines.append("")
    for (lw, pr), (ours, theirs) in zip(shown, ratios):
        stages = (_stages(models[lw["_file"]], original, names), _stages(models[pr["_file"]], original, names))
        lines.append(_summary(lw, pr, ours, theirs, stages))
    return lines + [""]
