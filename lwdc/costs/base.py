"""The cost-model interface and the table the search objective is built from.

A cost model prices one candidate branch of one layer, and a whole plain network. ``CostTable`` turns those
prices into the objective's cost term: the expected cost of the network under the gates' distribution,
normalised by the original network's cost, so lambda means the same across models and cost units.

A width operator on one layer makes the layer before it cheaper too (derivation cuts that layer to the channels
read): a coupling holds, per pair of their branches, what the earlier layer's branch saves, priced by the same
cost model on the cut branch. The gates are sampled independently, so the expected saving is bilinear in the two
layers' probabilities and the objective stays exact and differentiable.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from ..ops import LayerSpec, ReadChannels, keep_norm, keep_outputs, read_all_channels
from ..space import Supernet

__all__ = ["CostModel", "CostTable", "build_cost_table", "couplings"]


class CostModel(Protocol):
    name: str
    unit: str

    def branch_cost(self, spec: LayerSpec, op_name: str, branch: nn.Module) -> float: ...

    def network_cost(self, model: nn.Module, example_input: torch.Tensor) -> float: ...


@dataclass
class CostTable:
    name: str
    unit: str
    layer_costs: dict[str, torch.Tensor]   # choice layer name -> cost of each branch, in branch order
    fixed: float                           # everything that was not expanded
    reference: float                       # the original network
    # (producer layer, width-operator layer, saving[producer branch, consumer branch]), see the module docstring
    couplings: list[tuple[str, str, torch.Tensor]] = field(default_factory=list)

    def expected_ratio(self, supernet: Supernet, temperature: float = 1.0) -> torch.Tensor:
        """Differentiable: (fixed + sum over layers of E[branch cost] - E[savings of cut layers]) / original cost,
        under softmax(alpha / temperature)."""
        total = torch.tensor(self.fixed)
        layers = supernet.choice_layers()
        for name, layer in layers.items():
            p = layer.probabilities(temperature)
            total = total + (p * self.layer_costs[name].to(layer.alpha.device)).sum().cpu()
        for producer, consumer, saving in self.couplings:
            p, c = layers[producer].probabilities(temperature), layers[consumer].probabilities(temperature)
            total = total - (p @ saving.to(p.device) @ c).cpu()
        return total / self.reference

    def ratio_of(self, picks: dict[str, int]) -> float:
        """The ratio of the network that takes branch ``picks[name]`` at every layer."""
        saved = sum(float(saving[picks[p], picks[c]]) for p, c, saving in self.couplings if p in picks and c in picks)
        return (self.fixed + sum(float(self.layer_costs[n][i]) for n, i in picks.items()) - saved) / self.reference

    def chosen_ratio(self, supernet: Supernet) -> float:
        """The ratio of the network that would be derived now (argmax choices)."""
        return self.ratio_of({name: layer.chosen for name, layer in supernet.choice_layers().items()})

    def ratio_if(self, supernet: Supernet, name: str, index: int) -> float:
        """The derivable network's ratio if layer ``name`` took branch ``index`` (the rest as chosen now)."""
        return self.ratio_of({**{n: layer.chosen for n, layer in supernet.choice_layers().items()}, name: index})

    def floor_ratio(self) -> float:
        """The smallest ratio any choice of operators reaches. Coupled layers form chains (a layer makes the input
        of at most one width-operator layer, and reads from at most one producer): each is minimised from its end."""
        after = {p: (c, saving.double()) for p, c, saving in self.couplings}
        coupled = {c for _, c, _ in self.couplings}
        total = self.fixed
        for start in (n for n in self.layer_costs if n not in coupled):
            path = [start]
            while path[-1] in after:
                path.append(after[path[-1]][0])
            best = self.layer_costs[path[-1]].double()
            for name in reversed(path[:-1]):
                best = self.layer_costs[name].double() + (best[None, :] - after[name][1]).min(dim=1).values
            total += float(best.min())
        return total / self.reference


def build_cost_table(cost_model: CostModel, supernet: Supernet, original: nn.Module,
                     example_input: torch.Tensor) -> CostTable:
    """Price every branch of ``supernet``; the original model gives the reference and the un-expanded rest.
    A cost that is not a sum over layers (peak RAM) builds its own table."""
    if hasattr(cost_model, "build_table"):
        return cost_model.build_table(supernet, original, example_input)
    layer_costs, originals = {}, 0.0
    for name, layer in supernet.choice_layers().items():
        layer_costs[name] = torch.tensor(
            [cost_model.branch_cost(layer.spec, op, branch) for op, branch in zip(layer.op_names, layer.branches)],
            dtype=torch.float64).float()
        originals += cost_model.branch_cost(layer.spec, "original", original.get_submodule(name))
    reference = float(cost_model.network_cost(original, example_input))
    if reference <= 0:
        raise ValueError(f"the original model's {cost_model.name} cost is {reference}; it cannot normalise the objective")
    fixed = reference - originals
    if fixed < 0:
        # Measured costs can price the expanded layers, timed one by one, above the whole network (per-call
        # overhead, kernels fused across layers). A negative rest would let the ratio go below zero; instead the
        # rest costs nothing and the original's layers are the reference, so the original network is still 1.
        fixed, reference = 0.0, originals
    return CostTable(cost_model.name, cost_model.unit, layer_costs, fixed, reference,
                     couplings(cost_model, supernet, layer_costs))


def couplings(cost_model: CostModel, supernet: Supernet,
              layer_costs: dict[str, torch.Tensor]) -> list[tuple[str, str, torch.Tensor]]:
    """Per width-operator layer whose producer is a choice layer too: what each producer branch saves when cut to
    the channels each of its branches reads, norms between included. Where a producer branch cannot be cut (a
    skip), derivation makes the width operator read every channel: the "saving" is then minus what that costs
    over the width operator's own price."""
    layers, out = supernet.choice_layers(), []
    for consumer, chain in supernet.chains.items():
        if chain.producer not in layers or consumer not in layers:
            continue
        prod, cons = layers[chain.producer], layers[consumer]
        saving = torch.zeros(len(prod.op_names), len(cons.op_names))
        for j, reader in enumerate(cons.branches):
            if not isinstance(reader, ReadChannels):
                continue
            spec = dataclasses.replace(prod.spec, out_ch=len(reader.keep))
            unread = cost_model.branch_cost(cons.spec, "original", read_all_channels(reader)) - \
                float(layer_costs[consumer][j])
            norms = 0.0 if getattr(cost_model, "norm_in_branch", False) else \
                sum(_norm_saving(cost_model, supernet.net.get_submodule(n), reader.keep, prod.spec) for n in chain.norms)
            for i, (op, branch) in enumerate(zip(prod.op_names, prod.branches)):
                cut = keep_outputs(branch, reader.keep)
                saving[i, j] = -unread if cut is None else \
                    float(layer_costs[chain.producer][i]) - cost_model.branch_cost(spec, op, cut) + norms
        out.append((chain.producer, consumer, saving))
    return out


def _norm_saving(cost_model: CostModel, norm: nn.Module, keep: torch.Tensor, spec: LayerSpec) -> float:
    """What cutting a norm to ``keep`` saves, priced as a network of its own (its parameters; no MACs). A cost
    model that cannot price a lone norm (an emulated board needs a whole program) counts it as nothing."""
    try:
        full = cost_model.network_cost(norm, torch.zeros(1, spec.out_ch, *spec.out_size))
        cut = cost_model.network_cost(keep_norm(norm, keep), torch.zeros(1, len(keep), *spec.out_size))
    except (ValueError, RuntimeError, TypeError):
        return 0.0
    return float(full) - float(cut)
