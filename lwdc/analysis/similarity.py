"""How alike two layers' representations are: linear CKA (Kornblith et al., ICML 2019) over hooked features.

CKA compares what layers represent without matching their units one to one, so it can say where a compressed
model still computes what the original did even where widths and operators differ. Everything here takes plain
``nn.Module`` s, compressed by lwdc or not.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from ..modes import eval_mode

__all__ = ["cka_between", "cka_by_name", "default_layers", "layer_features", "linear_cka"]

Inputs = torch.Tensor | Iterable   # a tensor (N, ...), or batches: tensors or (x, y, ...) tuples
Reduce = Callable[[torch.Tensor], torch.Tensor]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm,
          nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def _centred(f: torch.Tensor) -> torch.Tensor:
    f = f.reshape(f.shape[0], -1).to(torch.float64)
    return f - f.mean(0, keepdim=True)


def _centred_gram(f: torch.Tensor) -> torch.Tensor:
    """Gram matrix of the centred features: n x n, whatever the width, so layers of any size compare cheaply."""
    c = _centred(f)
    return c @ c.T


def _cka_from_grams(k: torch.Tensor, l: torch.Tensor) -> float:
    den = torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l)
    if den == 0:
        return float("nan")
    return float(((k * l).sum() / den).clamp(0.0, 1.0))


def linear_cka(x: torch.Tensor, y: torch.Tensor, gram: bool | None = None) -> float:
    """Linear CKA of two representations of the same ``n`` samples: x (n, ...), y (n, ...), flattened per sample.

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` in float64; ``gram`` picks the equal n x n Gram form
    (default: when a width exceeds n, where it is the cheaper one). NaN where a representation is constant.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same samples, got {x.shape[0]} and {y.shape[0]} rows")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"CKA needs at least 2 samples, got {n}")
    xc, yc = _centred(x), _centred(y)
    if gram is None:
        gram = max(xc.shape[1], yc.shape[1]) > n
    if gram:
        return _cka_from_grams(xc @ xc.T, yc @ yc.T)
    den = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    if den == 0:
        return float("nan")
    return float((torch.linalg.matrix_norm(yc.T @ xc) ** 2 / den).clamp(0.0, 1.0))


def default_layers(model: nn.Module) -> list[str]:
    """Block-level layers: descend through ``nn.Sequential`` containers, keep modules that own parameters.

    For ResNets that is the stem conv, every residual block and the classifier; for VGG / TinyCNN1d every conv.
    Normalisation layers are left out (their output is a per-channel affine map of the layer before).
    """
    names: list[str] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            qualified = prefix + name
            if isinstance(child, nn.Sequential):
                visit(qualified + ".", child)
            elif not isinstance(child, _NORMS) and any(True for _ in child.parameters()):
                names.append(qualified)

    visit("", model)
    return names


def _iter_batches(inputs: Inputs, batch_size: int) -> Iterator[torch.Tensor]:
    """Input tensors from a tensor (split into ``batch_size`` chunks) or from batches (first element of tuples)."""
    if isinstance(inputs, torch.Tensor):
        yield from inputs.split(batch_size)
        return
    for batch in inputs:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def _model_device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def layer_features(model: nn.Module, inputs: Inputs, layers: Sequence[str] | None = None, batch_size: int = 256,
                   reduce: Reduce | None = None) -> dict[str, torch.Tensor]:
    """Outputs of the named modules over ``inputs``, in eval mode, concatenated on the CPU: name -> (N, ...).

    ``layers`` defaults to ``default_layers(model)``. ``reduce`` maps each batch's output before it is kept
    (e.g. pooling), which bounds memory on large inputs. Outputs are copied, so later in-place ops (ReLU) do not
    change them. A layer that runs other than once per forward pass is an error: its output would be ambiguous.
    """
    names = list(layers) if layers is not None else default_layers(model)
    if not names:
        raise ValueError("no layers to collect: pass layer names")
    modules = {name: model.get_submodule(name) for name in names}
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in names}

    def hook_for(name: str) -> Callable:
        def hook(_module: nn.Module, _args: tuple, out: object) -> None:
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"layer {name!r} returned {type(out).__name__}, not a tensor")
            out = out.detach()
            kept[name].append((reduce(out) if reduce is not None else out).to("cpu", copy=True))
        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in modules.items()]
    device = _model_device(model)
    try:
        with eval_mode(model):
            for b, x in enumerate(_iter_batches(inputs, batch_size)):
                model(x.to(device))
                for name, outs in kept.items():
                    if len(outs) != b + 1:
                        raise RuntimeError(f"layer {name!r} ran {len(outs) - b} times in one forward pass; "
                                           "features need a layer that runs exactly once")
    finally:
        for h in handles:
            h.remove()
    if not kept[names[0]]:
        raise ValueError("inputs held no batches")
    return {name: torch.cat(outs) for name, outs in kept.items()}


def _as_tensor(inputs: Inputs) -> torch.Tensor:
    """One tensor, so that two models see the same samples in the same order (a shuffling loader would not)."""
    return inputs if isinstance(inputs, torch.Tensor) else torch.cat(list(_iter_batches(inputs, 1)))


def cka_between(model_a: nn.Module, model_b: nn.Module, inputs: Inputs, layers_a: Sequence[str] | None = None,
                layers_b: Sequence[str] | None = None, batch_size: int = 256,
                reduce: Reduce | None = None) -> torch.Tensor:
    """CKA of every layer of ``model_a`` against every layer of ``model_b``: (len(layers_a), len(layers_b)).

    Layers default to ``default_layers`` of each model. Centred Gram matrices are formed once per layer, so the
    cost is one forward pass per model plus O(N^2) per pair: meant for a few thousand samples at most.
    """
    x = _as_tensor(inputs)
    grams_a = [_centred_gram(f) for f in layer_features(model_a, x, layers_a, batch_size, reduce).values()]
    grams_b = [_centred_gram(f) for f in layer_features(model_b, x, layers_b, batch_size, reduce).values()]
    out = torch.empty(len(grams_a), len(grams_b), dtype=torch.float64)
    for i, k in enumerate(grams_a):
        for j, l in enumerate(grams_b):
            out[i, j] = _cka_from_grams(k, l)
    return out


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def cka_by_name(model_a: nn.Module, model_b: nn.Module, inputs: Inputs, layers: Sequence[str] | None = None,
                batch_size: int = 256, reduce: Reduce | None = None) -> dict[str, float]:
    """CKA between same-named layers, e.g. an original model and its compressed copy (derive keeps names).

    ``layers`` defaults to those of ``default_layers(model_a)`` that ``model_b`` also has; named layers must
    exist in both.
    """
    if layers is None:
        layers = [name for name in default_layers(model_a) if _has_module(model_b, name)]
    layers = list(layers)
    x = _as_tensor(inputs)
    fa = layer_features(model_a, x, layers, batch_size, reduce)
    fb = layer_features(model_b, x, layers, batch_size, reduce)
    return {name: linear_cka(fa[name], fb[name]) for name in layers}
