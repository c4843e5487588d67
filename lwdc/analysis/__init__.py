"""Analysis of plain models, compressed by lwdc or not: representation similarity, saliency, linear probes, and
the HTML report of a run folder.

Takes ``nn.Module`` s only; it never imports the search machinery (space, gate, train) or the CLI. The report
(``build_report``) loads matplotlib, so it is imported on first use rather than with this package.
"""
from .compare import Comparison, comparable_layers, compare_models, load_program
from .probe import linear_probe, pool_features, probe_layers
from .saliency import grad_cam, smoothgrad, vanilla_gradient
from .similarity import (
    cka_between,
    cka_by_name,
    default_layers,
    layer_features,
    linear_cka,
)

__all__ = ["Comparison", "ReportError", "build_report", "cka_between", "cka_by_name", "comparable_layers",
           "compare_models", "default_layers", "find_runs", "grad_cam", "layer_features", "linear_cka",
           "linear_probe", "load_program", "pool_features", "probe_layers", "smoothgrad", "vanilla_gradient"]


def __getattr__(name: str):
    if name in ("ReportError", "build_report", "find_runs"):
        from . import report
        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
