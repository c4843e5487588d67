"""Cost models behind one interface; a new one is one file here plus one entry in ``COST_MODELS``."""
from __future__ import annotations

from .analytic import MacsCost, ParamsCost
from .base import CostModel, CostTable, build_cost_table

__all__ = ["CostModel", "CostTable", "build_cost_table", "get_cost_model", "COST_MODELS"]

COST_MODELS = {"params": ParamsCost, "macs": MacsCost, "flops": MacsCost}


def get_cost_model(name: str) -> CostModel:
    """``params``, ``macs`` (``flops`` is an alias: FLOPs in the CIFAR literature's sense of MACs)."""
    try:
        return COST_MODELS[name]()
    except KeyError:
        raise ValueError(f"unknown cost model {name!r}; choose one of {', '.join(COST_MODELS)}") from None
