"""Candidate operators: one registry name -> a builder plus closed-form parameter and MAC counts.

Every operator replaces one convolution (or pooling) layer and must produce the same output shape. It inherits
the replaced layer's stride and uses "same" padding (``dilation * (k - 1) / 2``), as in Appendix A of the LWDC
paper. Names describe 2-D kernels (``conv3x3_g4``); on a ``Conv1d`` the same name means a kernel of 3.

Counts are per sample (batch 1). MACs count multiply-accumulates of convolutions only, the convention of
``torch.utils.flop_counter.FlopCounterMode`` (which reports FLOPs = 2 x MACs): pooling, BatchNorm, ReLU and
bias additions count zero. Parameters count every trainable tensor element, BatchNorm's affine ones included.
Binary operators (``bin3x3``, ``birealbin3x3``: ``lwdc.binary``) count ceil(BOPs / 64) MACs, BOPs being one
XNOR-popcount bit per multiply-accumulate of the real layer.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import binary

__all__ = [
    "LayerSpec", "OpSpec", "UnknownOperatorError", "get_op", "resolve_ops", "OP_SETS", "op_patterns",
    "ReadChannels", "WIDTH_BLOCKS", "width_keep", "keep_outputs", "keep_norm", "read_all_channels",
]


@dataclass(frozen=True)
class LayerSpec:
    """What a replaceable layer looks like from outside: enough to build and count any candidate for it."""

    kind: str                    # "conv" or "pool"
    dims: int                    # 1 (Conv1d / pooling 1d) or 2
    in_ch: int
    out_ch: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    bias: bool
    in_size: tuple[int, ...]     # spatial size of the input (H, W) or (L,)
    out_size: tuple[int, ...]    # spatial size of the output
    reads_input: bool = False    # it reads the model's input itself (the first layer)
    writes_output: bool = False  # its output is the model's output (a last layer)
    norm_after: bool = False     # a BatchNorm reads its output (in C it folds into a conv, not into a skip)

    @property
    def out_positions(self) -> int:
        return math.prod(self.out_size)


@dataclass(frozen=True)
class OpSpec:
    """A candidate operator: ``fits`` says why it cannot replace a layer (None if it can)."""

    name: str
    build: Callable[[LayerSpec, nn.Module], nn.Module]
    params: Callable[[LayerSpec], int]
    macs: Callable[[LayerSpec], int]
    fits: Callable[[LayerSpec], str | None]
    # True for a width operator (``width{p}``): it reads only some of its input channels, and expansion offers it
    # only where derivation can remove the others at their source (``lwdc.space.Chain``)
    thins_input: bool = False


class UnknownOperatorError(ValueError):
    pass


# ----------------------------------------------------------------------------------------------- helpers
def _conv_cls(dims: int) -> type[nn.Module]:
    return {1: nn.Conv1d, 2: nn.Conv2d}[dims]


def _same_out_size(spec: LayerSpec, k: int, dilation: int) -> tuple[int, ...]:
    """Output size of a k-kernel with "same" padding and the layer's stride."""
    pad = dilation * (k - 1) // 2
    return tuple((n + 2 * pad - dilation * (k - 1) - 1) // s + 1 for n, s in zip(spec.in_size, spec.stride))


def _shape_reason(spec: LayerSpec, k: int, dilation: int = 1) -> str | None:
    out = _same_out_size(spec, k, dilation)
    if out != spec.out_size:
        return f"output size {out} with 'same' padding differs from the layer's {spec.out_size}"
    return None


def _dense_conv_reason(s: LayerSpec, kind_reason: str, done: str) -> str | None:
    """Why an operator that restructures a dense convolution (lowrank, ghost) cannot take this layer, if it
    cannot: ``kind_reason`` for a pooling layer, ``done`` (what it does to a dense one) for a grouped one."""
    if s.kind != "conv":
        return kind_reason
    if s.groups != 1:
        return f"the layer is grouped ({s.groups} groups); only a dense convolution is {done}"
    return None


def _conv_params(cin: int, cout: int, k: int, groups: int, dims: int, bias: bool) -> int:
    return cout * (cin // groups) * k ** dims + (cout if bias else 0)


# ----------------------------------------------------------------------------------------------- operators
def _original() -> OpSpec:
    def params(s: LayerSpec) -> int:
        if s.kind == "pool":
            return 0
        return s.out_ch * (s.in_ch // s.groups) * math.prod(s.kernel) + (s.out_ch if s.bias else 0)

    def macs(s: LayerSpec) -> int:
        if s.kind == "pool":
            return 0
        return s.out_positions * s.out_ch * (s.in_ch // s.groups) * math.prod(s.kernel)

    return OpSpec("original", lambda s, orig: copy.deepcopy(orig), params, macs, lambda s: None)


def _grouped_conv(k: int, g: int) -> OpSpec:
    def fits(s: LayerSpec) -> str | None:
        if k % 2 == 0:
            return f"kernel {k} is even: 'same' padding is impossible"
        if s.in_ch % g or s.out_ch % g:
            return f"groups {g} does not divide channels {s.in_ch}->{s.out_ch}"
        return _shape_reason(s, k)

    def build(s: LayerSpec, orig: nn.Module) -> nn.Module:
        return _conv_cls(s.dims)(s.in_ch, s.out_ch, k, stride=s.stride, padding=(k - 1) // 2, groups=g, bias=s.bias)

    return OpSpec(
        f"conv{k}x{k}" + (f"_g{g}" if g > 1 else ""), build,
        lambda s: _conv_params(s.in_ch, s.out_ch, k, g, s.dims, s.bias),
        lambda s: s.out_positions * s.out_ch * (s.in_ch // g) * k ** s.dims,
        fits,
    )


def _separable(k: int, dilation: int) -> OpSpec:
    """Depthwise k x k (dilated if asked) -> BN -> ReLU -> pointwise 1 x 1, as in MobileNet."""

    def fits(s: LayerSpec) -> str | None:
        return f"kernel {k} is even: 'same' padding is impossible" if k % 2 == 0 else _shape_reason(s, k, dilation)

    def build(s: LayerSpec, orig: nn.Module) -> nn.Module:
        conv = _conv_cls(s.dims)
        bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[s.dims]
        return nn.Sequential(
            conv(s.in_ch, s.in_ch, k, stride=s.stride, padding=dilation * (k - 1) // 2, dilation=dilation,
                 groups=s.in_ch, bias=False),
            bn(s.in_ch), nn.ReLU(inplace=False),
            conv(s.in_ch, s.out_ch, 1, bias=s.bias),
        )

    def params(s: LayerSpec) -> int:
        return s.in_ch * k ** s.dims + 2 * s.in_ch + _conv_params(s.in_ch, s.out_ch, 1, 1, s.dims, s.bias)

    def macs(s: LayerSpec) -> int:
        return s.out_positions * (s.in_ch * k ** s.dims + s.in_ch * s.out_ch)

    prefix = "dilsep" if dilation > 1 else "sep"
    return OpSpec(f"{prefix}{k}x{k}", build, params, macs, fits)


def _lowrank(d: int) -> OpSpec:
    """The original convolution factored through ``r = ceil(out_ch / d)`` channels: its own kernel, stride and
    dilation from ``in_ch`` to ``r``, then a 1 x 1 from ``r`` to ``out_ch`` (Jaderberg et al. 2014, Zhang et al.
    2015). Built from a trained layer, it starts as that layer's best rank-``r`` approximation (truncated SVD of
    the weight as an ``out_ch x (in_ch k^2)`` matrix, the singular values split evenly between the two factors),
    so the search weighs a branch that already computes nearly what the original did, where a grouped or
    separable branch starts from random weights and only learns it in the warm-up. It has no non-linearity
    inside: the BatchNorm and activation after the layer stay where they were."""

    def rank(s: LayerSpec) -> int:
        return -(-s.out_ch // d)

    def fits(s: LayerSpec) -> str | None:
        if reason := _dense_conv_reason(s, "only a convolution can be factored", "factored"):
            return reason
        if d < 2:
            return "a rank divisor below 2 keeps every channel"
        if 2 * rank(s) * (s.in_ch * math.prod(s.kernel) + s.out_ch) > 2 * s.out_ch * s.in_ch * math.prod(s.kernel):
            return f"rank {rank(s)} of {s.out_ch} channels costs more than the layer itself"
        return None

    def build(s: LayerSpec, orig: nn.Module) -> nn.Module:
        conv = _conv_cls(s.dims)
        r = rank(s)
        first = conv(s.in_ch, r, s.kernel, stride=s.stride, padding=s.padding, dilation=s.dilation, bias=False)
        second = conv(r, s.out_ch, 1, bias=s.bias)
        weight = getattr(orig, "weight", None)
        if isinstance(weight, torch.Tensor) and tuple(weight.shape) == (s.out_ch, s.in_ch, *s.kernel):
            with torch.no_grad():
                u, sv, vh = torch.linalg.svd(weight.detach().float().reshape(s.out_ch, -1), full_matrices=False)
                root = sv[:r].sqrt()
                first.weight.copy_((root[:, None] * vh[:r]).reshape(first.weight.shape))
                second.weight.copy_((u[:, :r] * root[None, :]).reshape(second.weight.shape))
                if s.bias and getattr(orig, "bias", None) is not None:
                    second.bias.copy_(orig.bias)
        return nn.Sequential(first, second)

    def params(s: LayerSpec) -> int:
        return rank(s) * s.in_ch * math.prod(s.kernel) + _conv_params(rank(s), s.out_ch, 1, 1, s.dims, s.bias)

    def macs(s: LayerSpec) -> int:
        return s.out_positions * rank(s) * (s.in_ch * math.prod(s.kernel) + s.out_ch)

    return OpSpec(f"lowrank_d{d}", build, params, macs, fits)


class Ghost(nn.Module):
    """A primary convolution to ``out_ch / d`` channels and a cheap depthwise 3 x 3 that makes the other channels
    from them, concatenated (the Ghost module of GhostNet, Han et al. 2020, without the inner BatchNorm: the
    layer's own BatchNorm follows it, as it followed the convolution it replaces)."""

    def __init__(self, primary: nn.Module, cheap: nn.Module) -> None:
        super().__init__()
        self.primary, self.cheap = primary, cheap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], dim=1)


def _ghost(d: int) -> OpSpec:
    """``Ghost`` with ``m = out_ch / d`` primary channels: the original's kernel, stride and dilation from
    ``in_ch`` to ``m``, then a depthwise 3 x 3 (each primary channel makes ``d - 1`` more). Built from a trained
    layer, the primary convolution starts as the layer's first ``m`` filters, so those output channels are the
    original's exactly and only the cheap ones are learned in the warm-up. Han et al. offer the module as a
    drop-in replacement for the convolutions of existing networks, CIFAR ResNets among them; here the search
    decides per layer whether it is worth its cost."""

    def fits(s: LayerSpec) -> str | None:
        if reason := _dense_conv_reason(s, "only a convolution has a Ghost form", "replaced"):
            return reason
        if d < 2:
            return "a ratio below 2 keeps every channel primary"
        if s.out_ch % d:
            return f"ratio {d} does not divide the {s.out_ch} output channels"
        if macs(s) >= s.out_positions * s.out_ch * s.in_ch * math.prod(s.kernel):
            return f"ratio {d} costs as much as the layer itself"
        return None

    def build(s: LayerSpec, orig: nn.Module) -> nn.Module:
        conv = _conv_cls(s.dims)
        m = s.out_ch // d
        primary = conv(s.in_ch, m, s.kernel, stride=s.stride, padding=s.padding, dilation=s.dilation, bias=s.bias)
        cheap = conv(m, s.out_ch - m, 3, padding=1, groups=m, bias=s.bias)
        weight = getattr(orig, "weight", None)
        if isinstance(weight, torch.Tensor) and tuple(weight.shape) == (s.out_ch, s.in_ch, *s.kernel):
            with torch.no_grad():
                primary.weight.copy_(weight[:m])
                if s.bias and getattr(orig, "bias", None) is not None:
                    primary.bias.copy_(orig.bias[:m])
        return Ghost(primary, cheap)

    def params(s: LayerSpec) -> int:
        m = s.out_ch // d
        return (m * s.in_ch * math.prod(s.kernel) + (m if s.bias else 0)
                + _conv_params(m, s.out_ch - m, 3, m, s.dims, s.bias))

    def macs(s: LayerSpec) -> int:
        m = s.out_ch // d
        return s.out_positions * (m * s.in_ch * math.prod(s.kernel) + (s.out_ch - m) * 3 ** s.dims)

    return OpSpec(f"ghost_d{d}", build, params, macs, fits)


#: Width operators keep the same share of every block of this many consecutive input channels (when the count
#: divides), so the convolution that makes those channels can be cut to them even when it is grouped by 2 or 4.
WIDTH_BLOCKS = 4


class ReadChannels(nn.Module):
    """A convolution that reads only the input channels ``keep`` (ascending), the branch of a width operator.

    In the supernet the other channels are still made and simply not read; ``derive`` removes them where they
    are made (the producing convolution and the norm after it) and keeps only ``conv``, so the derived network
    is plain convolutions with fewer channels, as channel pruning leaves it."""

    def __init__(self, keep: torch.Tensor, conv: nn.Module, in_ch: int) -> None:
        super().__init__()
        self.register_buffer("keep", keep.detach().clone().long())
        self.conv = conv
        self.in_ch = in_ch          # channels of the input it picks from

    def extra_repr(self) -> str:
        return f"reads {len(self.keep)} of {self.in_ch} channels"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.index_select(1, self.keep))


def width_keep(weight: torch.Tensor | None, in_ch: int, kept: int) -> torch.Tensor:
    """The ``kept`` input channels a width operator reads, ascending: the same number in each of ``WIDTH_BLOCKS``
    equal blocks of consecutive channels (or 2, or 1, the most that divide both counts), those with the largest
    L1 norm of the layer's trained weights (its first channels if it has none)."""
    blocks = next(b for b in (WIDTH_BLOCKS, 2, 1) if in_ch % b == 0 and kept % b == 0)
    size, per = in_ch // blocks, kept // blocks
    if weight is None:
        score = -torch.arange(in_ch, dtype=torch.float32)
    else:
        score = weight.detach().float().abs().transpose(0, 1).reshape(in_ch, -1).sum(1)
    picks = [b * size + torch.topk(score[b * size:(b + 1) * size], per).indices for b in range(blocks)]
    return torch.sort(torch.cat(picks)).values


def _width(pct: int, align: int = 1) -> OpSpec:
    """The original convolution reading ``pct`` % of its input channels (``width_keep``), starting from the
    original's weights on them. Offered only on a convolution whose input is made by another convolution for it
    alone, through per-channel layers (a norm, an activation): the search then weighs a thinner pair of layers,
    which is what channel pruning makes of a residual block, against the other operators of both.

    ``align`` > 1 (``width25_a16``) offers it only where the channels kept are a multiple of ``align``: a runtime
    that computes convolutions in blocks of channels takes nearly as long for 4 channels as for 16 (onnxruntime on
    this AVX-512 host, blocks of 16: a 16-channel 32x32 block cut to 4 inner channels kept 0.69 of its time for
    0.25 of its MACs; a 32-channel 16x16 block cut to 16, 0.58 for 0.50; ``bench/results/width_align.json``)."""

    def kept(s: LayerSpec) -> int:
        return s.in_ch * pct // 100

    def fits(s: LayerSpec) -> str | None:
        if reason := _dense_conv_reason(s, "only a convolution reads channels", "thinned"):
            return reason
        if not 0 < pct < 100:
            return f"a width of {pct}% keeps {'no' if pct <= 0 else 'every'} channel"
        if s.in_ch * pct % 100 or kept(s) < 1:
            return f"{pct}% of {s.in_ch} input channels is not a whole number of channels"
        if kept(s) % align:
            return f"{pct}% of {s.in_ch} input channels keeps {kept(s)}, not a multiple of {align} channels"
        return None

    def build(s: LayerSpec, orig: nn.Module) -> nn.Module:
        weight = getattr(orig, "weight", None)
        trained = isinstance(weight, torch.Tensor) and tuple(weight.shape) == (s.out_ch, s.in_ch, *s.kernel)
        keep = width_keep(weight if trained else None, s.in_ch, kept(s))
        conv = _conv_cls(s.dims)(kept(s), s.out_ch, s.kernel, stride=s.stride, padding=s.padding,
                                 dilation=s.dilation, bias=s.bias)
        if trained:
            with torch.no_grad():
                conv.weight.copy_(weight.index_select(1, keep))
                if s.bias and getattr(orig, "bias", None) is not None:
                    conv.bias.copy_(orig.bias)
        return ReadChannels(keep, conv, s.in_ch)

    def params(s: LayerSpec) -> int:
        return s.out_ch * kept(s) * math.prod(s.kernel) + (s.out_ch if s.bias else 0)

    def macs(s: LayerSpec) -> int:
        return s.out_positions * s.out_ch * kept(s) * math.prod(s.kernel)

    return OpSpec(f"width{pct}" + (f"_a{align}" if align > 1 else ""), build, params, macs, fits, thins_input=True)


def _conv_out(conv: nn.Module, keep: torch.Tensor) -> nn.Module | None:
    """``conv`` making only the output channels ``keep`` (ascending), or None where its groups would split."""
    g, out = conv.groups, conv.out_channels
    if len(keep) % g or (g > 1 and any(int(((keep >= i * out // g) & (keep < (i + 1) * out // g)).sum())
                                       != len(keep) // g for i in range(g))):
        return None
    new = type(conv)(conv.in_channels, len(keep), conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     dilation=conv.dilation, groups=g, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(conv.weight.index_select(0, keep))
        if conv.bias is not None:
            new.bias.copy_(conv.bias.index_select(0, keep))
    return new.to(conv.weight.device).train(conv.training)


def keep_outputs(module: nn.Module, keep: torch.Tensor) -> nn.Module | None:
    """``module`` (a branch or a plain layer) cut to make only the output channels ``keep``, or None where it
    cannot be (an identity or pooling passes its input through; a Ghost or binary branch splits its channels)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return _conv_out(module, keep)
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], (nn.Conv1d, nn.Conv2d)):
        last = _conv_out(module[-1], keep)
        return None if last is None else nn.Sequential(*list(module)[:-1], last)
    return None


def keep_norm(norm: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A BatchNorm cut to the channels ``keep``; any other per-channel layer is returned as it is."""
    if not isinstance(norm, nn.modules.batchnorm._BatchNorm):
        return norm
    new = type(norm)(len(keep), eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                     track_running_stats=norm.track_running_stats)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            if getattr(norm, name, None) is not None:
                getattr(new, name).copy_(getattr(norm, name).index_select(0, keep))
        if norm.num_batches_tracked is not None:
            new.num_batches_tracked.copy_(norm.num_batches_tracked)
    return new.to(keep.device).train(norm.training)


def read_all_channels(branch: ReadChannels) -> nn.Module:
    """A width operator's convolution over every input channel, zero on the ones it does not read: the same
    output, for where the producing layer cannot be cut (its branch passes its input through)."""
    conv = branch.conv
    full = type(conv)(branch.in_ch, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                      dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():
        full.weight.zero_()
        full.weight.index_copy_(1, branch.keep, conv.weight)
        if conv.bias is not None:
            full.bias.copy_(conv.bias)
    return full.to(conv.weight.device).train(conv.training)


def _pool(kind: str, k: int) -> OpSpec:
    def fits(s: LayerSpec) -> str | None:
        if s.in_ch != s.out_ch:
            return f"pooling keeps channels, the layer maps {s.in_ch}->{s.out_ch}"
        return _shape_reason(s, k)

    def build(s: LayerSpec, orig: nn.Module) -> nn.Module:
        if kind == "max":
            return {1: nn.MaxPool1d, 2: nn.MaxPool2d}[s.dims](k, stride=s.stride, padding=(k - 1) // 2)
        cls = {1: nn.AvgPool1d, 2: nn.AvgPool2d}[s.dims]
        return cls(k, stride=s.stride, padding=(k - 1) // 2, count_include_pad=False)

    return OpSpec(f"{kind}pool{k}x{k}", build, lambda s: 0, lambda s: 0, fits)


def _skip() -> OpSpec:
    """Identity where shapes match; otherwise parameter-free "option A" of CIFAR ResNets: subsample by the
    stride (a 1-wide max-pool) and zero-pad the extra output channels. It cannot remove channels."""

    def fits(s: LayerSpec) -> str | None:
        if s.out_ch < s.in_ch:
            return f"skip cannot reduce channels ({s.in_ch}->{s.out_ch})"
        out = tuple((n - 1) // st + 1 for n, st in zip(s.in_size, s.stride))
        if out != s.out_size:
            return f"subsampling by the stride gives {out}, the layer gives {s.out_size}"
        return None

    def build(s: LayerSpec, orig: nn.Module) -> nn.Module:
        layers: list[nn.Module] = []
        if any(st > 1 for st in s.stride):
            layers.append({1: nn.MaxPool1d, 2: nn.MaxPool2d}[s.dims](1, stride=s.stride))
        if s.out_ch > s.in_ch:
            # On an (N, C, *spatial) tensor the pad module sees (C, *spatial) as one unbatched sample, so its
            # last pair of pad amounts lands on the channel axis.
            pad = (0, 0) * s.dims + (0, s.out_ch - s.in_ch)
            layers.append({1: nn.ConstantPad2d, 2: nn.ConstantPad3d}[s.dims](pad, 0.0))
        if not layers:
            return nn.Identity()
        return layers[0] if len(layers) == 1 else nn.Sequential(*layers)

    return OpSpec("skip", build, lambda s: 0, lambda s: 0, fits)


def _binary(k: int, g: int, shortcut: bool) -> OpSpec:
    """Sign-binarised weights and inputs, XNOR-Net scale per output channel (``lwdc.binary``); with ``shortcut``
    the Bi-Real form ``conv(x) + x``. The first and last layers stay real: binarising a network's raw input or its
    scores loses most of what they carry (Rastegari et al., Liu et al. keep them real); to binarise them anyway,
    put ``lwdc.binary.BinaryConv2d`` in the model yourself. Counts: parameters as a real k x k conv (the latent
    weights train; the input thresholds are buffers); MACs ceil(BOPs / 64) (``lwdc.binary``)."""

    def fits(s: LayerSpec) -> str | None:
        if k % 2 == 0:
            return f"kernel {k} is even: 'same' padding is impossible"
        if s.in_ch % g or s.out_ch % g:
            return f"groups {g} does not divide channels {s.in_ch}->{s.out_ch}"
        if s.reads_input:
            return "it reads the model's input: the first layer stays real"
        if s.writes_output:
            return "its output is the model's output: the last layer stays real"
        if shortcut and (s.in_ch != s.out_ch or any(st != 1 for st in s.stride)):
            return f"the Bi-Real shortcut needs equal shapes (channels {s.in_ch}->{s.out_ch}, stride {s.stride})"
        return _shape_reason(s, k)

    def build(s: LayerSpec, orig: nn.Module) -> nn.Module:
        if shortcut:
            block = binary.BiRealBlock(s.in_ch, k, padding=(k - 1) // 2, groups=g, bias=s.bias, dims=s.dims)
            conv = block.conv
        else:
            cls = {1: binary.BinaryConv1d, 2: binary.BinaryConv2d}[s.dims]
            block = conv = cls(s.in_ch, s.out_ch, k, stride=s.stride, padding=(k - 1) // 2, groups=g, bias=s.bias)
        weight = getattr(orig, "weight", None)
        if isinstance(orig, type(conv)) and orig.weight.shape == conv.weight.shape:
            conv.load_state_dict(orig.state_dict())     # a binary layer already: its thresholds too
        elif weight is not None and tuple(weight.shape) == tuple(conv.weight.shape):
            with torch.no_grad():       # start from the trained real weights' signs and magnitudes
                conv.weight.copy_(weight)
                if s.bias and getattr(orig, "bias", None) is not None:
                    conv.bias.copy_(orig.bias)
        return block

    def macs(s: LayerSpec) -> int:
        return binary.binary_macs(binary.bops(s.out_positions, s.out_ch, s.in_ch // g, k ** s.dims))

    name = ("birealbin" if shortcut else "bin") + f"{k}x{k}" + (f"_g{g}" if g > 1 else "")
    return OpSpec(name, build, lambda s: _conv_params(s.in_ch, s.out_ch, k, g, s.dims, s.bias), macs, fits)


# ----------------------------------------------------------------------------------------------- registry
_PATTERNS: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], OpSpec]]] = [
    ("original", re.compile(r"original"), lambda m: _original()),
    ("conv{k}x{k}", re.compile(r"conv(\d+)x\1"), lambda m: _grouped_conv(int(m[1]), 1)),
    ("conv{k}x{k}_g{g}", re.compile(r"conv(\d+)x\1_g(\d+)"), lambda m: _grouped_conv(int(m[1]), int(m[2]))),
    ("sep{k}x{k}", re.compile(r"sep(\d+)x\1"), lambda m: _separable(int(m[1]), 1)),
    ("dilsep{k}x{k}", re.compile(r"dilsep(\d+)x\1"), lambda m: _separable(int(m[1]), 2)),
    ("avgpool{k}x{k}", re.compile(r"avgpool(\d+)x\1"), lambda m: _pool("avg", int(m[1]))),
    ("maxpool{k}x{k}", re.compile(r"maxpool(\d+)x\1"), lambda m: _pool("max", int(m[1]))),
    ("lowrank_d{d}", re.compile(r"lowrank_d(\d+)"), lambda m: _lowrank(int(m[1]))),
    ("ghost_d{d}", re.compile(r"ghost_d(\d+)"), lambda m: _ghost(int(m[1]))),
    ("skip", re.compile(r"skip"), lambda m: _skip()),
    ("width{p}", re.compile(r"width(\d+)"), lambda m: _width(int(m[1]))),
    ("width{p}_a{n}", re.compile(r"width(\d+)_a(\d+)"), lambda m: _width(int(m[1]), int(m[2]))),
    ("bin{k}x{k}", re.compile(r"bin(\d+)x\1"), lambda m: _binary(int(m[1]), 1, False)),
    ("bin{k}x{k}_g{g}", re.compile(r"bin(\d+)x\1_g(\d+)"), lambda m: _binary(int(m[1]), int(m[2]), False)),
    ("birealbin{k}x{k}", re.compile(r"birealbin(\d+)x\1"), lambda m: _binary(int(m[1]), 1, True)),
]

#: Named operator sets. ``paper`` follows Appendix A of the LWDC paper. ``default`` drops the pooling
#: replacements (they rarely win inside residual blocks) and keeps the operators whose training step is not
#: slower than the original 3x3 convolution on a CPU (measured on a 32-channel 16x16 layer, batch 128: original
#: 13.8 ms forward+backward, sep3x3 15.2, grouped 10-11, conv1x1 8.9, but sep5x5 30.6 and dilsep3x3 29.9, as
#: depthwise backward kernels are slow in PyTorch's CPU build): a search step then costs about one plain step.
#: ``wide`` holds every family. ``minimal`` is the smallest set that still spans "keep", "cheap" and "remove".
OP_SETS: dict[str, tuple[str, ...]] = {
    "paper": ("original", "conv3x3_g2", "conv3x3_g4", "conv1x1", "conv1x1_g2", "sep3x3",
              "avgpool3x3", "maxpool3x3", "skip"),
    "default": ("original", "conv3x3_g2", "conv3x3_g4", "conv1x1", "sep3x3", "skip"),
    "wide": ("original", "conv3x3_g2", "conv3x3_g4", "conv3x3_g8", "conv1x1", "conv1x1_g2", "sep3x3", "sep5x5",
             "dilsep3x3", "avgpool3x3", "maxpool3x3", "skip"),
    "minimal": ("original", "sep3x3", "skip"),
    # 1-D signal networks open with long kernels (80 samples of raw audio, 49 of EEG) that hold most of the
    # MACs; 3-tap or 1-tap replacements are all the default set offers them, so add shorter long kernels. Their
    # depthwise-separable bodies (DS-CNN, keyword spotting's usual network) hold their MACs in pointwise layers,
    # which the default set can only keep or skip: grouped pointwise layers halve or quarter them
    "signal": ("original", "conv41x41", "conv21x21", "conv9x9", "conv3x3_g2", "conv3x3_g4", "conv1x1",
               "conv1x1_g2", "conv1x1_g4", "sep9x9", "sep3x3", "skip"),
    # the default set plus the original layer factored at half and a quarter of its output rank, starting from
    # its truncated SVD: a cheaper branch that keeps the layer's kernel and most of what it learnt
    "lowrank": ("original", "conv3x3_g2", "conv3x3_g4", "conv1x1", "sep3x3", "skip", "lowrank_d2", "lowrank_d4"),
    # GhostNet's cheap operator beside the default set's
    "ghost": ("original", "conv3x3_g2", "conv3x3_g4", "conv1x1", "sep3x3", "skip", "ghost_d2", "ghost_d4"),
    # the default set plus the original layer reading 3/4, 1/2 or 1/4 of its input channels where the layer
    # before it can be cut to them: channel pruning's thinner layers inside LWDC's search space
    "width": ("original", "conv3x3_g2", "conv3x3_g4", "conv1x1", "sep3x3", "skip", "width75", "width50", "width25"),
    # binary operators (lwdc.binary) beside the default set's real ones, so the search weighs one bit against
    # fewer channels or no layer at all
    "binary": ("original", "bin3x3", "birealbin3x3", "conv3x3_g4", "conv1x1", "sep3x3", "skip"),
}

# the `width` set keeping only multiples of 16 channels: where onnxruntime computes in blocks of 16 channels
# (AVX-512), the channels a width operator drops below a block boundary save MACs but little time
OP_SETS["width-a16"] = tuple(f"{n}_a16" if n.startswith("width") else n for n in OP_SETS["width"])


def op_patterns() -> list[str]:
    return [p for p, _, _ in _PATTERNS]


def get_op(name: str) -> OpSpec:
    """Look up an operator by name; a name with numbers (``conv5x5_g16``) is parsed, not listed."""
    for _, pattern, make in _PATTERNS:
        match = pattern.fullmatch(name)
        if match:
            if any(int(n) < 1 for n in match.groups()):
                break
            return make(match)
    raise UnknownOperatorError(
        f"unknown operator {name!r}; valid names follow the patterns {', '.join(op_patterns())} "
        f"(e.g. conv3x3_g4, sep5x5), or use a named set: {', '.join(OP_SETS)}"
    )


def resolve_ops(ops: str | list[str] | tuple[str, ...]) -> list[OpSpec]:
    """A named set (``"default"``), a comma-separated string, or a list of names -> operator specs."""
    if isinstance(ops, str):
        names = list(OP_SETS[ops]) if ops in OP_SETS else [n.strip() for n in ops.split(",") if n.strip()]
    else:
        names = list(ops)
    if not names:
        raise UnknownOperatorError(f"the operator list is empty; name a set ({', '.join(OP_SETS)}) or operators")
    if len(set(names)) != len(names):
        raise UnknownOperatorError(f"operator list has duplicates: {names}")
    return [get_op(n) for n in names]
