"""Weight sharing and pruning as parametrisations: the mechanism of the accuracy-driven second method (issue 20).

Inspired by Grimaldi, Tenace and Calimera, "Layer-Wise Compressive Training for Convolutional Neural Networks"
(Future Internet 11(1):7, 2019); a reconstruction from its outline, every choice below is ours.

* ``global_magnitude_masks``: one magnitude threshold over every prunable weight of the network, so each layer
  ends with its own sparsity (a layer of large weights keeps more of them).
* ``MaskedWeight``: ``w * mask`` as a ``torch.nn.utils.parametrize`` parametrisation. The gradient of a pruned
  weight is zero, so it stays exactly zero through any later training (weight decay included: the latent value
  may move, the weight the layer uses does not).
* ``SharedWeight``: the layer's weight becomes ``codebook[index]`` on unpruned positions and 0 elsewhere. The
  codebook is the only trainable tensor; autograd's backward of the gather is a scatter-add, so each centroid's
  gradient is the sum of the gradients of the weights assigned to it (tested).
* ``encode``: a shared layer in the stored form the C export writes (``lwdc.export.codebook``: codebook, packed
  codes, zeros as a bitmap or a code); ``decode`` rebuilds the layer's weight bit for bit.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..export.codebook import decode, encode_arrays, encode_values, layer_bits

__all__ = ["prunable_layers", "global_magnitude_masks", "MaskedWeight", "SharedWeight", "kmeans_codebook",
           "prune", "share_layer", "materialize", "encode", "encode_values", "encode_arrays", "decode",
           "layer_bits"]

_PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Convolutions and linear layers, by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, _PRUNABLE)}


def _weight(m: nn.Module) -> torch.Tensor:
    """The weight the layer computes with (through any parametrisation)."""
    return m.weight.detach()


def global_magnitude_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Keep-masks (True = kept) removing the ``sparsity`` share of all prunable weights with the smallest
    magnitude, one threshold for the whole network (ties at the threshold are pruned together)."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1); got {sparsity}")
    layers = prunable_layers(model)
    if not layers:
        raise ValueError("the model has no Conv1d, Conv2d or Linear layer to prune")
    magnitudes = torch.cat([_weight(m).abs().flatten() for m in layers.values()])
    k = int(sparsity * magnitudes.numel())
    threshold = torch.kthvalue(magnitudes, k).values if k > 0 else torch.tensor(-1.0)
    return {name: _weight(m).abs() > threshold for name, m in layers.items()}


class MaskedWeight(nn.Module):
    """Parametrisation ``w -> w * mask``: pruned positions compute as 0 and receive no gradient."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.detach().bool().clone())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


class SharedWeight(nn.Module):
    """Parametrisation ``w -> where(mask, codebook[index], 0)``: the codebook is the layer's only trainable
    tensor; the latent weight is ignored (and frozen)."""

    def __init__(self, codebook: torch.Tensor, index: torch.Tensor, mask: torch.Tensor):
        super().__init__()
        self.codebook = nn.Parameter(codebook.detach().float().clone())
        self.register_buffer("index", index.detach().long().clone())
        self.register_buffer("mask", mask.detach().bool().clone())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, self.codebook[self.index], torch.zeros((), dtype=w.dtype, device=w.device))


def kmeans_codebook(values: torch.Tensor, k: int, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """``(centroids, assignment)`` of 1-D ``values`` by Lloyd's algorithm from a linear initialisation over
    [min, max] (Han et al. 2016 found it the best start for weight sharing: it keeps the rare large weights);
    deterministic. An empty cluster keeps its previous centre."""
    if k < 1:
        raise ValueError(f"a codebook needs at least one value; got {k}")
    v = values.detach().double().flatten()
    if v.numel() == 0:
        return torch.zeros(k), torch.zeros(0, dtype=torch.long)
    centres = torch.linspace(float(v.min()), float(v.max()), k, dtype=torch.float64)
    for _ in range(iters):
        assign = (v[:, None] - centres[None]).abs().argmin(1)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, assign, v)
        counts = torch.bincount(assign, minlength=k).double()
        updated = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
        if torch.equal(updated, centres):
            break
        centres = updated
    assign = (v[:, None] - centres[None]).abs().argmin(1)
    return centres.float(), assign


def _clear(module: nn.Module) -> torch.Tensor:
    """Remove any parametrisation of ``weight``, keeping the weight it computed; return that weight."""
    if parametrize.is_parametrized(module, "weight"):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return module.weight.detach()


def prune(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Put a ``MaskedWeight`` on every masked layer (in place; weights at pruned positions become 0)."""
    layers = prunable_layers(model)
    for name, mask in masks.items():
        m = layers[name]
        w = _clear(m)
        if mask.shape != w.shape:
            raise ValueError(f"mask of {name} is {tuple(mask.shape)}, its weight {tuple(w.shape)}")
        with torch.no_grad():
            m.weight.mul_(mask)
        parametrize.register_parametrization(m, "weight", MaskedWeight(mask))


def share_layer(module: nn.Module, k: int, iters: int = 30) -> SharedWeight:
    """Replace the layer's (possibly masked) weight by a ``k``-value codebook over its unpruned weights."""
    mask = module.parametrizations.weight[0].mask if parametrize.is_parametrized(module, "weight") and \
        isinstance(module.parametrizations.weight[0], MaskedWeight) else torch.ones_like(module.weight, dtype=torch.bool)
    w = _clear(module)
    centres, assign = kmeans_codebook(w[mask], k, iters)
    index = torch.zeros(w.shape, dtype=torch.long)
    index[mask] = assign
    shared = SharedWeight(centres, index, mask)
    module.weight.requires_grad_(False)
    parametrize.register_parametrization(module, "weight", shared)
    return shared


def materialize(model: nn.Module) -> nn.Module:
    """Make every parametrised weight a plain parameter holding the value it computed (for export and ONNX)."""
    for m in prunable_layers(model).values():
        if parametrize.is_parametrized(m, "weight"):
            _clear(m)
            m.weight.requires_grad_(True)
    return model


def encode(shared: SharedWeight) -> dict:
    """The stored form of a shared layer: codebook, packed codes and the zero encoding chosen by ``layer_bits``."""
    return encode_arrays(shared.codebook.detach().float().numpy(), shared.index.numpy(), shared.mask.numpy())


