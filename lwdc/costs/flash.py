"""Flash: the bytes a model's weights take in the generated C library, at its export precision.

It counts what ``lwdc.export.c`` writes per convolution or linear layer (BatchNorm is folded into them):
int8 (default): one byte per weight plus, per output channel, an int32 bias, an int32 fixed-point multiplier and
an int8 shift (9 bytes); float32: four bytes per weight and a float bias per output channel. Pooling, skips and
activations cost nothing. ``tests/test_budgets.py`` checks it against the exporter's own ``flash_bytes``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops import LayerSpec

__all__ = ["FlashCost", "flash_bytes"]

_PRECISIONS = {"int8": (1, 9), "float32": (4, 4)}      # bytes per weight, bytes per output channel


def flash_bytes(model: nn.Module, precision: str = "int8") -> int:
    per_weight, per_channel = _PRECISIONS[precision]
    total = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            channels = m.out_channels if isinstance(m, (nn.Conv1d, nn.Conv2d)) else m.out_features
            total += m.weight.numel() * per_weight + channels * per_channel
    return total


class FlashCost:
    name, unit = "flash", "bytes of weights"

    def __init__(self, precision: str = "int8"):
        if precision not in _PRECISIONS:
            raise ValueError(f"flash precision {precision!r}: choose {' or '.join(_PRECISIONS)}")
        self.precision = precision

    @classmethod
    def from_spec(cls, args: list[str], **_options) -> "FlashCost":
        if len(args) > 1:
            raise ValueError(f"flash takes one option (int8 or float32), got {':'.join(args)}")
        return cls(*args)

    def branch_cost(self, spec: LayerSpec, op_name: str, branch: nn.Module) -> float:
        return float(flash_bytes(branch, self.precision))

    def network_cost(self, model: nn.Module, example_input: torch.Tensor) -> float:
        return float(flash_bytes(model, self.precision))
