"""Binarised convolutions: weights and inputs of +-1, a real scale per output channel (issue 19).

``BinaryConv2d`` / ``BinaryConv1d`` are ``nn.Conv2d`` / ``nn.Conv1d`` whose forward computes

    y[o] = alpha[o] * sum over the window of sign(x[c] - t[c]) * sign(W[o, c]) + bias[o],   alpha[o] = mean |W[o]|

- ``sign(v)`` is +1 for v >= 0 and -1 for v < 0: **sign(0) = +1**, in training, in ONNX and in C alike, so a
  value is always one bit (``torch.sign`` would give 0). So an input binarises to +1 exactly when x >= t.
- **t**, one threshold per input channel (the shift of ReActNet's RSign, Liu et al. 2020). In a conv-BN-ReLU
  network a convolution's input is a ReLU output, all >= 0: sign(x) would be +1 everywhere and the layer would
  see a constant. t is set once, to the per-channel mean of the first training batch the layer sees (averaged
  over ranks under torchrun; the buffer ``threshold_ready`` records that it was set), and then stays: it is a
  buffer, not a parameter (the BatchNorm before it, whose shift trains, moves the input across it instead), so
  the layer's parameters are exactly a convolution's. Before any training batch t = 0.
- **Padding** pads the *binarised* input with **+1** (not 0, which is neither +1 nor -1): the module's forward
  pads ``sign(x - t)`` with +1 itself and convolves without padding, and the C kernels read a padded position
  as the bit of +1, so PyTorch, ONNX and C agree exactly at the borders.
- **alpha**, XNOR-Net's scale (Rastegari et al. 2016), is the mean absolute latent weight of each output
  channel, computed from the weights (no extra parameter; its gradient flows to the weights as in XNOR-Net). A
  BatchNorm after the layer stays real and folds into alpha and the bias at export.
- **Straight-through estimators**: the input's gradient passes where |x - t| <= 1 and is 0
  outside (Hubara et al. 2016, "clipped" STE); the latent weights' gradient passes unchanged (BinaryConnect), so
  latent weights keep learning; bound them with :func:`clip_latent_weights` after an optimiser step if wanted.
  Both are written as ``s + (c - c.detach())``: the value is exactly ``s`` (+-1), the gradient that of ``c``.

The layer is one operator, ``torch.ops.lwdc.binary_conv``, with a CompositeImplicitAutograd kernel: autograd
and the ONNX exporter see the plain ops above (so ONNX holds a float sign + conv equivalent), while
``torch.export`` keeps it as one node, which the C exporter lowers to bit-packed XNOR/popcount kernels
(``lwdc/export/c/ops/binary.py``).

**Counting.** Parameters: the latent weights (and bias): what trains. Binary operations BOPs =
output positions x out_channels x in_channels / groups x kernel: one XNOR-popcount bit per multiply-accumulate.
MACs count a binary layer as ``ceil(BOPs / 64)`` multiply-accumulates (the rule of Bi-Real Net and ReActNet: 64
binary operations per real one, a 64-bit word), in the operator registry and in ``lwdc.profiling.count_macs``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BinaryConv1d", "BinaryConv2d", "BiRealBlock", "BINARY_CONVS", "binarize", "binary_conv",
           "channel_scale", "binary_macs", "bops", "clip_latent_weights", "binary_macs_correction",
           "WORD_BITS", "packed_words"]

WORD_BITS = 32   # the C kernels pack bits into 32-bit words


def binarize(v: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """+1 where v >= 0, -1 elsewhere (sign(0) = +1), with a straight-through gradient: 1 where |v| <= 1 (``clip``)
    or everywhere (not ``clip``)."""
    s = (v >= 0).to(v.dtype) * 2 - 1
    if not (torch.is_grad_enabled() and v.requires_grad):
        return s
    c = v.clamp(-1, 1) if clip else v
    return s + (c - c.detach())          # value exactly s; gradient that of c


def channel_scale(weight: torch.Tensor) -> torch.Tensor:
    """XNOR-Net's per-output-channel scale: the mean absolute latent weight of each output channel."""
    return weight.abs().mean(dim=tuple(range(1, weight.dim())))


def _pad_amounts(padding: list[int]) -> tuple[int, ...]:
    """F.pad's (last dim first) pairs for symmetric per-dimension padding."""
    return tuple(p for amount in reversed(padding) for p in (amount, amount))


def _binary_conv(x: torch.Tensor, threshold: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 stride: list[int], padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
    dims = weight.dim() - 2
    xb = binarize(x - threshold.reshape(1, -1, *([1] * dims)), clip=True)
    if any(padding):
        xb = F.pad(xb, _pad_amounts(padding), value=1.0)    # padded positions are +1
    conv = F.conv2d if dims == 2 else F.conv1d
    y = conv(xb, binarize(weight, clip=False), None, stride, 0, dilation, groups)
    y = y * channel_scale(weight).reshape(1, -1, *([1] * dims))
    if bias is not None:
        y = y + bias.reshape(1, -1, *([1] * dims))
    return y


_LIB = torch.library.Library("lwdc", "FRAGMENT")
_LIB.define("binary_conv(Tensor x, Tensor threshold, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
            "int[] dilation, int groups) -> Tensor")
_LIB.impl("binary_conv", _binary_conv, "CompositeImplicitAutograd")

#: the operator a binary convolution is in an exported program (what the C exporter lowers)
binary_conv = torch.ops.lwdc.binary_conv.default


_ONNX_REGISTERED = False


def register_onnx_symbolic() -> None:
    """Teach torch's TorchScript ONNX exporter (``dynamo=False``) the same float equivalent the dynamo exporter
    derives from the decomposition: sign as ``x - t >= 0`` -> +-1, +1 padding, conv, times mean|W| per channel."""
    global _ONNX_REGISTERED
    if _ONNX_REGISTERED:
        return
    from torch.onnx import register_custom_op_symbolic
    from torch.onnx.symbolic_helper import _is_none, parse_args

    @parse_args("v", "v", "v", "v", "is", "is", "is", "i")
    def symbolic(g, x, threshold, weight, bias, stride, padding, dilation, groups):
        f32 = lambda v: g.op("Constant", value_t=torch.tensor(v, dtype=torch.float32))  # noqa: E731
        i64 = lambda v: g.op("Constant", value_t=torch.tensor(v, dtype=torch.int64))    # noqa: E731

        def sign(v):
            ge = g.op("Cast", g.op("Not", g.op("Less", v, f32(0.0))), to_i=1)     # 1 = FLOAT
            return g.op("Sub", g.op("Mul", ge, f32(2.0)), f32(1.0))

        dims = len(stride)
        shape = i64([-1] + [1] * dims)
        xb = sign(g.op("Sub", x, g.op("Reshape", threshold, shape)))
        if any(padding):
            pads = [0, 0, *padding, 0, 0, *padding]
            xb = g.op("Pad", xb, i64(pads), f32(1.0), mode_s="constant")
        y = g.op("Conv", xb, sign(weight), strides_i=stride, pads_i=[0] * (2 * dims), dilations_i=dilation,
                 group_i=groups)
        axes = list(range(1, dims + 2))
        absw = g.op("Abs", weight)
        mean = (g.op("ReduceMean", absw, i64(axes), keepdims_i=0) if g.opset >= 18
                else g.op("ReduceMean", absw, axes_i=axes, keepdims_i=0))
        y = g.op("Mul", y, g.op("Reshape", mean, shape))
        if not _is_none(bias):
            y = g.op("Add", y, g.op("Reshape", bias, shape))
        return y

    register_custom_op_symbolic("lwdc::binary_conv", symbolic, 11)      # Pad with a value input: opset 11 on
    _ONNX_REGISTERED = True


class _Binary:
    """The threshold, forward and checks shared by the 1-D and 2-D layers."""

    def _setup(self) -> None:
        if isinstance(self.padding, str):
            raise ValueError(f"{type(self).__name__}: padding must be numbers, not {self.padding!r}")
        if self.padding_mode != "zeros":
            raise ValueError(f"{type(self).__name__}: padding_mode {self.padding_mode!r}; binary layers pad the "
                             "binarised input with +1 (padding_mode='zeros' names that here)")
        self.register_buffer("threshold", torch.zeros(self.in_channels, device=self.weight.device,
                                                      dtype=self.weight.dtype))
        self.register_buffer("threshold_ready", torch.tensor(False, device=self.weight.device))

    @torch.no_grad()
    def _init_threshold(self, x: torch.Tensor) -> None:
        """The per-channel mean of this batch (of all ranks' batches under torchrun)."""
        mean = x.detach().transpose(0, 1).reshape(x.shape[1], -1).mean(dim=1).to(self.threshold.dtype)
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(mean)
            mean /= dist.get_world_size()
        self.threshold.copy_(mean)
        self.threshold_ready.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(self.threshold_ready):
            self._init_threshold(x)
        return binary_conv(x, self.threshold, self.weight, self.bias, list(self.stride), list(self.padding),
                           list(self.dilation), self.groups)


class BinaryConv2d(_Binary, nn.Conv2d):
    """A 2-D convolution of sign(x - t) by sign(W), times mean|W| per output channel (see the module docstring).
    Its parameters are those of ``nn.Conv2d``; the buffer ``threshold`` holds t, one per input channel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = False, padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self._setup()


class BinaryConv1d(_Binary, nn.Conv1d):
    """The 1-D form of :class:`BinaryConv2d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = False, padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self._setup()


BINARY_CONVS = (BinaryConv1d, BinaryConv2d)


class BiRealBlock(nn.Module):
    """A binary convolution with a real-valued identity shortcut around it (Bi-Real Net, Liu et al. 2018):
    ``conv(x) + x``, ``conv`` a :class:`BinaryConv2d` (``dims=2``) or :class:`BinaryConv1d` of ``channels`` to
    ``channels`` with stride 1, so that the shortcut carries the real input past the one-bit bottleneck."""

    def __init__(self, channels: int, kernel_size, padding=0, dilation=1, groups: int = 1, bias: bool = False,
                 dims: int = 2):
        super().__init__()
        cls = {1: BinaryConv1d, 2: BinaryConv2d}[dims]
        self.channels, self.dims = channels, dims
        self.conv = cls(channels, channels, kernel_size, 1, padding, dilation, groups, bias)
        # the constructor's arguments, read back when a model is described as data (lwdc.arch)
        self.kernel_size, self.padding, self.dilation, self.groups = (
            self.conv.kernel_size, self.conv.padding, self.conv.dilation, groups)

    @property
    def bias(self):
        return self.conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


def bops(out_positions: int, out_ch: int, in_ch_per_group: int, kernel_elems: int) -> int:
    """Binary operations of one sample: one XNOR-popcount bit per multiply-accumulate of the real layer."""
    return out_positions * out_ch * in_ch_per_group * kernel_elems


def binary_macs(n_bops: int) -> int:
    """The MAC-equivalent of ``n_bops`` binary operations: ceil(BOPs / 64)."""
    return -(-n_bops // 64)


def packed_words(in_ch_per_group: int) -> int:
    """32-bit words holding one kernel position's input channels of one group in the C kernels."""
    return -(-in_ch_per_group // WORD_BITS)


@torch.no_grad()
def clip_latent_weights(model: nn.Module | Iterable[nn.Module], limit: float = 1.0) -> None:
    """Clip every binary layer's latent weights to [-limit, limit] (BinaryConnect): call after optimiser steps.
    ``model``: a network, or its binary layers already found (a training loop's hot path)."""
    for m in model.modules() if isinstance(model, nn.Module) else model:
        if isinstance(m, BINARY_CONVS):
            m.weight.clamp_(-limit, limit)


@contextmanager
def binary_macs_correction(model: nn.Module):
    """While the block runs ``model``, collects in ``delta[0]`` what to add to a FLOP counter's MACs (which sees a
    binary layer as the real convolution it decomposes into) so binary layers count ``ceil(BOPs / 64)`` per
    sample, as the operator registry does."""
    delta = [0]
    hooks = []

    def hook(m, inp, out):
        n = out.shape[0]
        full = bops(math.prod(out.shape[2:]), m.out_channels, m.in_channels // m.groups, math.prod(m.kernel_size))
        delta[0] += n * (binary_macs(full) - full)

    for m in model.modules():
        if isinstance(m, BINARY_CONVS):
            hooks.append(m.register_forward_hook(hook))
    try:
        yield delta
    finally:
        for h in hooks:
            h.remove()
