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

__all__ = ["derive", "max_output_difference"]


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
    for name, chain in supernet.chains.items():
        branch = net.get_submodule(name)
        if isinstance(branch, ReadChannels):
            _cut_chain(net, name, chain, branch)
    net.train(supernet.training)
    return net


@torch.no_grad()
def max_output_difference(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    """Largest absolute difference between two models' eval-mode outputs on ``x`` (modes are restored)."""
    with eval_mode(a), eval_mode(b):
        return float((a(x) - b(x)).abs().max())


def _cut_chain(net: nn.Module, name: str, chain, branch: ReadChannels) -> None:
    """Make only the channels ``branch`` reads, where they are made; else read them all, zero on the rest."""
    cut = keep_outputs(net.get_submodule(chain.producer), branch.keep)
    if cut is None:
        set_submodule(net, name, read_all_channels(branch))
        return
    set_submodule(net, chain.producer, cut)
    for norm in chain.norms:
        set_submodule(net, norm, keep_norm(net.get_submodule(norm), branch.keep))
    set_submodule(net, name, branch.conv)

