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


_CONV_ENDED = (nn.Conv1d, nn.Conv2d, nn.Linear)     # a BatchNorm reading their output folds into them in C
_PASS_THROUGH = (nn.Identity, nn.Dropout)


def unfolded_norms(model: nn.Module, example_input: torch.Tensor) -> list[nn.Module]:
    """The BatchNorm layers the C export cannot fold into a convolution: those whose input is not a conv's (or a
    Linear's) output, possibly through other foldable BatchNorms or identities (a BatchNorm after a skipped conv,
    a pooling operator or a Bi-Real add). The C writes each as a per-channel affine (a depthwise 1x1 conv)."""
    from ..modes import eval_mode
    conv_ended: dict[int, bool] = {}
    keep: list[torch.Tensor] = []           # every output stays referenced, so no id() is reused mid-trace
    unfolded: list[nn.Module] = []
    hooks = []

    def post(module, inp, out):
        if not isinstance(out, torch.Tensor):
            return
        source = inp[0] if inp and isinstance(inp[0], torch.Tensor) else None
        folds = source is not None and conv_ended.get(id(source), False)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not folds:
            unfolded.append(module)
        conv_ended[id(out)] = isinstance(module, _CONV_ENDED) or (
            isinstance(module, (nn.modules.batchnorm._BatchNorm, *_PASS_THROUGH)) and folds)
        keep.append(out)

    for m in model.modules():
        if not list(m.children()):          # leaves only: a container's output is its last leaf's
            hooks.append(m.register_forward_hook(post))
    try:
        with eval_mode(model), torch.no_grad():
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
    return unfolded


def flash_bytes(model: nn.Module, precision: str = "int8", example_input: torch.Tensor | None = None) -> int:
    """Bytes of ``model``'s weights in the C library. With ``example_input``, a BatchNorm the export cannot fold
    (after a skip, a pooling operator, an add) is traced and priced as the per-channel affine C writes; without
    it, only the BatchNorm after a Bi-Real block is (as a structural rule), so pass the input when the model may
    hold skipped layers (measured: an all-skip body was priced 11,386 B against the export's 12,986 B)."""
    per_weight, per_channel = _PRECISIONS[precision]
    total = 0
    for m in model.modules():
        if isinstance(m, BINARY_CONVS):
            total += binary_flash_bytes(m, precision)
        elif isinstance(m, BiRealBlock) and example_input is None:   # the BatchNorm after it (traced otherwise)
            total += m.conv.out_channels * (per_weight + per_channel)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            channels = m.out_channels if isinstance(m, (nn.Conv1d, nn.Conv2d)) else m.out_features
            total += m.weight.numel() * per_weight + channels * per_channel
    if example_input is not None:
        total += sum(bn.num_features * (per_weight + per_channel) for bn in unfolded_norms(model, example_input))
    return total


class FlashCost:
    name, unit = "flash", "bytes of weights"
    norm_in_branch = True    # branch_cost prices the BatchNorm after a layer (see branch_cost)

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
        """The branch's weights, plus the BatchNorm after the layer when the branch does not end in a conv it
        folds into (skip, pooling, a Bi-Real add): the branch is traced with that BatchNorm behind it."""
        if spec.norm_after:
            norm = nn.BatchNorm1d(spec.out_ch) if spec.dims == 1 else nn.BatchNorm2d(spec.out_ch)
            branch = nn.Sequential(branch, norm)
        return float(flash_bytes(branch, self.precision, example_input=torch.zeros(1, spec.in_ch, *spec.in_size)))

    def network_cost(self, model: nn.Module, example_input: torch.Tensor) -> float:
        return float(flash_bytes(model, self.precision, example_input=example_input))

