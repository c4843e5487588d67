"""Flash: the bytes a model's weights take in the generated C library, at its export precision.

It counts what ``lwdc.export.c`` writes per convolution or linear layer (BatchNorm is folded into them):
int8 (default): one byte per weight plus, per output channel, an int32 bias, an int32 fixed-point multiplier and
an int8 shift (9 bytes); float32: four bytes per weight and a float bias per output channel. Pooling, skips and
activations cost nothing. ``tests/test_budgets.py`` checks it against the exporter's own ``flash_bytes``.

A binary convolution (``lwdc.binary``) stores one bit per weight, packed as the C kernels read them: per output
channel and kernel position, the input channels of its group in 32-bit words (``ceil(C_in / groups / 32)``
words, so exactly 1/8 byte per weight when that is a multiple of 32), a 4-byte input threshold per input channel
(float32, or int32 in quantised units), plus per output channel int8: the same 9 bytes as a real conv; float32: a
float scale and a float bias (8 bytes). A Bi-Real block's BatchNorm cannot
fold into its binary conv (the shortcut's add sits between them): it costs a per-channel affine, as the C export
writes it (int8: an int8 weight and the 9 bytes; float32: two floats). ``tests/test_binary_export.py`` checks
these against the exporter.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..binary import BINARY_CONVS, BiRealBlock, packed_words
from ..ops import LayerSpec

__all__ = ["FlashCost", "flash_bytes", "binary_flash_bytes"]

_PRECISIONS = {"int8": (1, 9), "float32": (4, 4)}      # bytes per weight, bytes per output channel
_BINARY_PER_CHANNEL = {"int8": 9, "float32": 8}        # a binary conv's per-channel constants


def binary_flash_bytes(conv: nn.Module, precision: str = "int8") -> int:
    """Bytes of one binary convolution in the C library: packed 32-bit weight words and per-channel constants."""
    words = conv.out_channels * math.prod(conv.kernel_size) * packed_words(conv.in_channels // conv.groups)
    return 4 * words + 4 * conv.in_channels + conv.out_channels * _BINARY_PER_CHANNEL[precision]


def flash_bytes(model: nn.Module, precision: str = "int8") -> int:
    per_weight, per_channel = _PRECISIONS[precision]
    total = 0
    for m in model.modules():
        if isinstance(m, BINARY_CONVS):
            total += binary_flash_bytes(m, precision)
        elif isinstance(m, BiRealBlock):     # the BatchNorm after it: a depthwise 1x1 conv in C
            channels = m.conv.out_channels
            total += channels * (per_weight + per_channel)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
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
