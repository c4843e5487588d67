"""Analysis of plain models, compressed by lwdc or not: representation similarity, saliency, linear probes.

Takes ``nn.Module`` s only; it never imports the search machinery (space, gate, train) or the CLI.
"""
from .probe import linear_probe, pool_features, probe_layers
from .saliency import grad_cam, smoothgrad, vanilla_gradient
from .similarity import (
    cka_between,
    cka_by_name,
    default_layers,
    layer_features,
    linear_cka,
)

__all__ = ["cka_between", "cka_by_name", "default_layers", "grad_cam", "layer_features", "linear_cka",
           "linear_probe", "pool_features", "probe_layers", "smoothgrad", "vanilla_gradient"]
