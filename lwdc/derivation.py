"""Derivation: the supernet with its chosen gates -> a plain model built of ``torch.nn`` layers only.

Each choice layer is replaced by (a copy of) its chosen branch, trained weights included, so the derived model
computes exactly what the supernet computes in eval mode. The result holds nothing of lwdc: it can be trained,
exported and analysed like any PyTorch model.

A width operator (``width{p}``) reads some of its input channels; the layer that makes them (``Chain``) and the
norms between are then cut to those channels and the operator keeps only its convolution: the channels nobody
reads are never made, as in a pruned network. Where that layer's chosen branch cannot be cut (a skip passes its
input through) the operator becomes a convolution over every channel with zeros on the unread ones.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .modes import eval_mode
from .ops import ReadChannels, keep_norm, keep_outputs, read_all_channels
from .space import ChoiceLayer, Supernet, set_submodule

__all__ = ["chain_cuts", "derive", "max_output_difference"]


def derive(supernet: Supernet, choices: dict[str, str] | None = None) -> nn.Module:
    """Materialise the current choices (argmax of each gate, or ``choices`` where given) into a plain model."""
    layers = supernet.choice_layers()
    picks = {name: layer.chosen_op for name, layer in layers.items()}
    if choices:
        unknown = set(choices) - set(layers)
        if unknown:
            raise KeyError(f"no choice layer named {sorted(unknown)}")
        picks.update(choices)
    net = copy.deepcopy(supernet.net)
    for name, op in picks.items():
        layer = net.get_submodule(name)
        assert isinstance(layer, ChoiceLayer)
        if op not in layer.op_names:
            raise ValueError(f"layer {name!r} has no operator {op!r}; it has {layer.op_names}")
        set_submodule(net, name, layer.branches[layer.op_names.index(op)])
    leftovers = [n for n, m in net.named_modules() if isinstance(m, ChoiceLayer)]
    assert not leftovers, f"derive left choice layers behind: {leftovers}"
    for name, keep in chain_cuts(supernet, picks).items():
        _cut_chain(net, name, supernet.chains[name], keep)
    net.train(supernet.training)
    return net


def chain_cuts(supernet: Supernet, choices: dict[str, str]) -> dict[str, torch.Tensor | None]:
    """Per layer whose chosen operator reads part of its input channels: the channels derivation cuts the layer
    making them to (its chosen branch ends in a convolution), or None where the operator reads every channel
    instead (that branch passes its input through). The one rule for ``derive`` and the report's rows."""
    layers = supernet.choice_layers()

    def chosen(name: str) -> nn.Module:
        layer = layers[name]
        return layer.branches[layer.op_names.index(choices.get(name, layer.chosen_op))]

    cuts = {}
    for name, chain in supernet.chains.items():
        reader = chosen(name)
        if isinstance(reader, ReadChannels):
            cuts[name] = reader.keep if keep_outputs(chosen(chain.producer), reader.keep) is not None else None
    return cuts


@torch.no_grad()
def max_output_difference(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    """Largest absolute difference between two models' eval-mode outputs on ``x`` (modes are restored)."""
    with eval_mode(a), eval_mode(b):
        return float((a(x) - b(x)).abs().max())


def _cut_chain(net: nn.Module, name: str, chain, keep: torch.Tensor | None) -> None:
    """Make only the channels ``keep`` the width operator at ``name`` reads, where they are made; with None, read
    them all, zero on the rest."""
    branch = net.get_submodule(name)
    if keep is None:
        set_submodule(net, name, read_all_channels(branch))
        return
    set_submodule(net, chain.producer, keep_outputs(net.get_submodule(chain.producer), keep))
    for norm in chain.norms:
        set_submodule(net, norm, keep_norm(net.get_submodule(norm), keep))
    set_submodule(net, name, branch.conv)
