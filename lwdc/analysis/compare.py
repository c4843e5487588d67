"""The model-level analyses of a report, on any two plain models taking the same inputs: saliency of the same
inputs, linear CKA layer by layer, and linear probes on each block's features.

Layers are matched by name, which ``derive`` keeps, so an original and its compressed copy line up block by
block; ``torch.export`` programs work once unflattened (``load_program``), since hooks need the layers
to be called as modules.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .probe import probe_layers
from .saliency import grad_cam, smoothgrad, vanilla_gradient
from .similarity import cka_between

__all__ = ["Comparison", "comparable_layers", "compare_models", "load_program"]


def _block_layers(model: nn.Module) -> list[str]:
    """Block-level modules: descend through containers whose children are numbered (``nn.Sequential``, and its
    unflattened ``torch.export`` form), keep modules owning a weight of 2 dims or more (norms are left out)."""
    names: list[str] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            kids = [k for k, _ in child.named_children()]
            if kids and all(k.isdigit() for k in kids):
                visit(f"{prefix}{name}.", child)
            elif any(p.ndim >= 2 for p in child.parameters()):
                names.append(prefix + name)

    visit("", model)
    return names


def comparable_layers(model_a: nn.Module, model_b: nn.Module, x: torch.Tensor) -> list[str]:
    """Block-level layers of ``model_a`` that ``model_b`` also has and that run exactly once per forward pass in
    both (a layer replaced by a skip may be gone or never called), in ``model_a``'s order."""
    names = _block_layers(model_a)
    counts = {}
    for model in (model_a, model_b):
        calls = dict.fromkeys(names, 0)
        handles = []
        for name in names:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                continue
            handles.append(module.register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1)))
        try:
            with torch.no_grad():
                model(x[:2])
        finally:
            for h in handles:
                h.remove()
        counts[id(model)] = calls
    return [n for n in names if all(c[n] == 1 for c in counts.values())]


@dataclass
class Comparison:
    """What ``compare_models`` measured; maps are (N, *spatial) tensors, everything else plain numbers."""
    layers: list[str]
    cka: torch.Tensor | None = None                    # (layers, layers): original rows, compressed columns
    probes: dict[str, dict[str, float]] = field(default_factory=dict)   # model -> layer -> test accuracy
    saliency: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # method -> model -> maps
    agreement: dict[str, float] = field(default_factory=dict)   # method -> mean per-sample Pearson r
    predictions: dict[str, list[int]] = field(default_factory=dict)
    cam_layer: str | None = None

    def cka_by_layer(self) -> dict[str, float]:
        return {} if self.cka is None else {n: float(self.cka[i, i]) for i, n in enumerate(self.layers)}

    def as_dict(self) -> dict:
        return {"layers": self.layers, "cka_same_layer": self.cka_by_layer(),
                "cka_matrix": None if self.cka is None else self.cka.tolist(), "probe_accuracy": self.probes,
                "saliency_agreement_pearson": self.agreement, "predictions": self.predictions,
                "grad_cam_layer": self.cam_layer}


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return float(r.mean())


def compare_models(original: nn.Module, compressed: nn.Module, *, saliency_x: torch.Tensor | None = None,
                   saliency_y: torch.Tensor | None = None, cka_x: torch.Tensor | None = None,
                   probe_data: tuple[torch.Tensor, ...] | None = None, layers: Sequence[str] | None = None,
                   smoothgrad_samples: int = 25, seed: int = 0, log: Callable[[str], None] = lambda s: None,
                   ) -> Comparison:
    """Saliency (gradient, SmoothGrad, Grad-CAM) on ``saliency_x``, per-layer linear CKA on ``cka_x`` and
    linear probes on ``probe_data = (train_x, train_y, test_x, test_y)``, for any two models taking the same
    inputs; each part runs only when its inputs are given. Saliency explains ``saliency_y`` (the true class)
    when given, so both models are asked about the same class; else each model's own prediction."""
    probe_x = probe_data[0] if probe_data is not None else None
    anyx = next((t for t in (saliency_x, cka_x, probe_x) if t is not None), None)
    if anyx is None:
        raise ValueError("give saliency_x, cka_x or probe_data: there is nothing to compare on")
    names = list(layers) if layers is not None else comparable_layers(original, compressed, anyx)
    out = Comparison(layers=names)
    models = {"original": original, "compressed": compressed}
    if saliency_x is not None:
        log(f"saliency on {len(saliency_x)} samples")
        with torch.no_grad():
            out.predictions = {k: m(saliency_x).argmax(1).tolist() for k, m in models.items()}
        spatial = [n for n in names if _output_ndim(original, n, saliency_x) == saliency_x.ndim]
        out.cam_layer = spatial[-1] if spatial else None
        methods: dict[str, Callable] = {
            "gradient": lambda m: vanilla_gradient(m, saliency_x, saliency_y),
            "SmoothGrad": lambda m: smoothgrad(m, saliency_x, saliency_y, samples=smoothgrad_samples, seed=seed)}
        if out.cam_layer is not None:
            methods["Grad-CAM"] = lambda m: grad_cam(m, saliency_x, out.cam_layer, saliency_y)
        for method, fn in methods.items():
            out.saliency[method] = {k: fn(m).detach() for k, m in models.items()}
            out.agreement[method] = _pearson(out.saliency[method]["original"], out.saliency[method]["compressed"])
    if cka_x is not None and names:
        log(f"linear CKA over {len(names)} layers on {len(cka_x)} samples")
        out.cka = cka_between(original, compressed, cka_x, names, names)
    if probe_data is not None and names:
        log(f"linear probes on {len(names)} layers ({len(probe_data[0])} train / {len(probe_data[2])} test)")
        out.probes = {k: probe_layers(m, names, *probe_data) for k, m in models.items()}
    return out


def _output_ndim(model: nn.Module, name: str, x: torch.Tensor) -> int:
    seen: list[int] = []
    handle = model.get_submodule(name).register_forward_hook(lambda _m, _a, o: seen.append(o.ndim))
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        handle.remove()
    return seen[0] if seen else -1


def load_program(path: Path, trusted: bool = False) -> nn.Module:
    """A ``torch.export`` file as a module whose submodules are called (so hooks see each layer's output).
    Loading a ``.pt2`` can run code it holds: refused unless ``trusted`` (see ``lwdc.runs.load_pt2``)."""
    from ..runs import load_pt2

    program = load_pt2(path, trusted=trusted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.export.unflatten(program)
