"""Per-layer costs of any plain model: params, MACs, measured latency and systolic cycles side by side.

Layers are the Conv1d / Conv2d / Linear modules one forward pass calls; each is priced on the input it received
there. Latency per layer is measured in isolation (as the search's table is); the total row measures the whole
network, so the layers need not add up to it (BatchNorm, activations, pooling and additions are in the total only).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..profiling import count_macs, count_params
from . import get_cost_model
from .latency import LatencyCost
from .systolic import SystolicCost, conv_shapes, estimate

__all__ = ["layer_report", "format_layer_report"]


def layer_report(model: nn.Module, example_input: torch.Tensor, costs: Sequence[str] = ("latency", "systolic"),
                 **options) -> dict:
    """``{"rows": [...], "total": {...}, "costs": [...]}``; ``costs`` are spec strings (see ``lwdc.costs``).

    Params and MACs are always there; each ``latency*`` spec adds ``ms[spec]``, each ``systolic*`` spec adds
    ``cycles[spec]`` and ``util[spec]`` (MACs / (cycles x PEs)). ``options`` go to the latency models.
    """
    models = {}
    for spec in costs:
        model_ = get_cost_model(spec, **(options if spec.startswith("latency") else {}))   # validates every spec
        if isinstance(model_, (LatencyCost, SystolicCost)):
            models[spec] = model_
    calls = conv_shapes(model, example_input)
    rows = []
    for call in calls:
        s = call.shape
        row = {"name": call.name, "op": s.kind, "channels": f"{s.in_ch}->{s.out_ch}",
               "out_size": "x".join(map(str, s.out_size)), "params": count_params(call.module), "macs": s.macs}
        for spec, m in models.items():
            if isinstance(m, LatencyCost):
                row[f"ms[{spec}]"] = m.measure(call.module, call.in_shape, s.kind)
            elif isinstance(m, SystolicCost):
                e = estimate(s, m.array)
                row[f"cycles[{spec}]"], row[f"util[{spec}]"] = e.cycles, e.utilisation
        rows.append(row)
    total = {"name": "total", "op": "", "channels": "", "out_size": "", "params": count_params(model),
             "macs": count_macs(model, example_input[:1])}
    for spec, m in models.items():
        if isinstance(m, LatencyCost):
            total[f"ms[{spec}]"] = m.network_cost(model, example_input)
        elif isinstance(m, SystolicCost):
            cycles = sum(r[f"cycles[{spec}]"] for r in rows)
            total[f"cycles[{spec}]"] = cycles
            total[f"util[{spec}]"] = sum(c.shape.macs for c in calls) / (cycles * m.array.rows * m.array.cols) if cycles else 0.0
    return {"rows": rows, "total": total, "costs": list(models)}


def _fmt(key: str, value) -> str:
    if isinstance(value, str):
        return value
    if key.startswith("ms["):
        return f"{value:.4f}"
    if key.startswith("util["):
        return f"{100 * value:.1f}%"
    return f"{value:,}"


def format_layer_report(report: dict) -> str:
    """A Markdown table, one row per layer and a total row."""
    rows = report["rows"] + [report["total"]]
    keys = ["name", "op", "channels", "out_size", "params", "macs"] + [k for k in report["total"] if "[" in k]
    cells = [[_fmt(k, r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = lambda values: "| " + " | ".join(v.rjust(w) if i > 3 else v.ljust(w)   # noqa: E731
                                            for i, (v, w) in enumerate(zip(values, widths))) + " |"
    out = [line(keys), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(c) for c in cells]
    return "\n".join(out)
