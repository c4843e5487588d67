"""The cost-model interface and the table the search objective is built from.

A cost model prices one candidate branch of one layer, and a whole plain network. ``CostTable`` turns those
prices into the objective's cost term: the expected cost of the network under the gates' distribution,
normalised by the original network's cost, so lambda means the same across models and cost units.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from ..ops import LayerSpec
from ..space import Supernet

__all__ = ["CostModel", "CostTable", "build_cost_table"]


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

    def expected_ratio(self, supernet: Supernet) -> torch.Tensor:
        """Differentiable: (fixed + sum over layers of E[branch cost]) / original cost."""
        total = torch.tensor(self.fixed)
        for name, layer in supernet.choice_layers().items():
            total = total + (layer.probabilities() * self.layer_costs[name].to(layer.alpha.device)).sum().cpu()
        return total / self.reference

    def ratio_of(self, picks: dict[str, int]) -> float:
        """The ratio of the network that takes branch ``picks[name]`` at every layer."""
        return (self.fixed + sum(float(self.layer_costs[n][i]) for n, i in picks.items())) / self.reference

    def chosen_ratio(self, supernet: Supernet) -> float:
        """The ratio of the network that would be derived now (argmax choices)."""
        return self.ratio_of({name: layer.chosen for name, layer in supernet.choice_layers().items()})

    def ratio_if(self, supernet: Supernet, name: str, index: int) -> float:
        """The derivable network's ratio if layer ``name`` took branch ``index`` (the rest as chosen now)."""
        return self.ratio_of({**{n: layer.chosen for n, layer in supernet.choice_layers().items()}, name: index})

    def floor_ratio(self) -> float:
        """The smallest ratio any choice of operators reaches."""
        return (self.fixed + sum(float(c.min()) for c in self.layer_costs.values())) / self.reference


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
    return CostTable(cost_model.name, cost_model.unit, layer_costs, fixed, reference)
