"""Closed-form costs: parameters and multiply-accumulates (the CIFAR literature's "FLOPs")."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import LayerSpec, get_op
from ..profiling import count_macs, count_params

__all__ = ["ParamsCost", "MacsCost"]


class ParamsCost:
    name, unit = "params", "parameters"

    def branch_cost(self, spec: LayerSpec, op_name: str, branch: nn.Module) -> float:
        return float(get_op(op_name).params(spec))

    def network_cost(self, model: nn.Module, example_input: torch.Tensor) -> float:
        return float(count_params(model))


class MacsCost:
    name, unit = "macs", "multiply-accumulates per sample"

    def branch_cost(self, spec: LayerSpec, op_name: str, branch: nn.Module) -> float:
        return float(get_op(op_name).macs(spec))

    def network_cost(self, model: nn.Module, example_input: torch.Tensor) -> float:
        return float(count_macs(model, example_input[:1]))
