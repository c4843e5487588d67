"""Layouts other than the IR's channels-first (C, H, W), tracked rather than computed: a permute or transpose
only records a permutation (``Lowering.perm``), and the ops that read a permuted value lower to channels-first
nodes: ConvNeXt's channels-last LayerNorm (a ``layernorm`` node over the channels at each position), Linear (a
1x1 conv), layer scale ``x * gamma`` (folded into the conv before it) and elementwise ops, until a permute back
makes it plain again. A view that splits the channels into groups, (N, g, C/g, H, W), is tracked the same way,
so ShuffleNet's view-transpose-view becomes one ``channel_shuffle`` node. The lowering's dispatch refuses every
other op on such a value.

LayerNorm written out as primitive ops over dim 1 (``x.mean(1, keepdim=True)``, ...) is not recognised: write it
as ``F.layer_norm(x.permute(0, 2, 3, 1), (C,), w, b, eps).permute(0, 3, 1, 2)`` (timm's LayerNorm2d does)."""
from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..fixed import QNode, centred, fixed_point, round_shift
from ..graph import permuted, val
from ..registry import Op, lowering_for, lowers, register_op
from .conv import Conv

A = torch.ops.aten
_VIEWS = (A.view.default, A.reshape.default, A._unsafe_view.default, A.clone.default, A.contiguous.default,
          A.alias.default, A.detach.default, A.dropout.default, operator.getitem)


def _relabel(lw, node, x, perm: tuple[int, ...]) -> None:
    """``node`` holds ``x``'s data seen through ``perm``: no code. The identity on a rank <= 4 value is the
    plain layout again."""
    if perm == tuple(range(len(perm))) and len(perm) < 5:
        lw.perm.pop(node.name, None)
    else:
        lw.perm[node.name] = perm
    lw.alias(node, lw.tensor_of(x, node))


def _channels_last(lw, node, x, what: str) -> int:
    """The channel count of ``x`` when its last dim holds the channels (as after ConvNeXt's permute(0, 2, 3, 1));
    fails otherwise, as ``what`` over the last dim would then mix other values."""
    perm = lw.perm.get(x.name)
    if perm is None or len(perm) > 4 or perm[-1] != 1:
        raise lw.fail(node, f"{what} over the last dim of a tensor that is not channels-last (only channels-last "
                            "tensors, x.permute(0, 2, 3, 1), as ConvNeXt)")
    return lw.graph.tensors[lw.tensor_of(x, node)].shape[0]


@register_op
class Permute(Op):
    """Never a node: what only changes or reads through the recorded layout."""
    name = "permute"
    supports = ("permute/transpose to channels-last and back (ConvNeXt)",
                "Linear and x * gamma or x + beta (per-channel constants) on channels-last tensors")

    @lowers(A.permute.default, A.transpose.int, permuted(A.permute.default), permuted(A.transpose.int))
    def lower_permute(self, lw, node, a):
        x = a["self"]
        rank = len(val(x).shape)
        if node.target is A.permute.default:
            order = [d % rank for d in a["dims"]]
        else:
            order = list(range(rank))
            i, j = a["dim0"] % rank, a["dim1"] % rank
            order[i], order[j] = order[j], order[i]
        if order[0] != 0:
            raise lw.fail(node, "a permute that moves the batch dimension")
        base = lw.perm.get(x.name, tuple(range(rank)))
        _relabel(lw, node, x, tuple(base[d] for d in order))

    @lowers(*(permuted(t) for t in _VIEWS))
    def lower_view(self, lw, node, a):
        """Views of a tracked value: same-shape copies keep its layout; a rank-4 tensor's channels split into
        (g, C/g) start one; merging them back is plain again, or a channel shuffle when they were transposed."""
        x, shape = next(iter(a.values())), tuple(val(node).shape)
        perm, rank = lw.perm.get(x.name), len(val(x).shape)
        if node.target is operator.getitem and a[1] != 0:
            raise lw.fail(node, "only the first result of a multi-output op is supported")
        if node.target is operator.getitem or shape == tuple(val(x).shape):
            if perm is not None:  # then the plain relabel, with its own checks (dropout in training mode)
                lw.perm[node.name] = perm
            lowering_for(node.target)(lw, node, a)
            return
        c, h, w = lw.graph.tensors[lw.tensor_of(x, node)].shape
        if perm is None and rank == 4 and len(shape) == 5 and shape[3:] == (h, w) and shape[1] * shape[2] == c:
            _relabel(lw, node, x, tuple(range(5)))
        elif perm in ((0, 1, 2, 3, 4), (0, 2, 1, 3, 4)) and shape[1:] == (c, h, w):
            if perm == (0, 1, 2, 3, 4):
                _relabel(lw, node, x, tuple(range(4)))
            else:
                ChannelShuffle.append(lw, node, x, int(val(x).shape[2]))
        else:
            raise lw.fail(node, f"a view to {list(shape)} of a permuted or channel-split tensor (only a channel "
                                "split (N, g, C/g, H, W), transposed and merged back as ShuffleNet's channel "
                                "shuffle)")

    @lowers(permuted(A.linear.default))
    def lower_linear(self, lw, node, a):
        x = a["input"]
        _channels_last(lw, node, x, "Linear")
        lw.perm[node.name] = lw.perm[x.name]
        Conv.pointwise(lw, node, lw.tensor_of(x, node), lw.const(a["weight"], node), lw.const(a["bias"], node))

    @lowers(permuted(A.mul.Tensor), permuted(A.add.Tensor))
    def lower_channel_constant(self, lw, node, a):
        """x * gamma (layer scale) or x + beta with a constant along the channels: a per-channel affine map."""
        if lw.is_activation(a["self"]) and lw.is_activation(a["other"]):
            raise lw.fail(node, "combining tensors in different layouts (permute them alike first)")
        first = lw.is_activation(a["self"])
        x, k = (a["self"], a["other"]) if first else (a["other"], a["self"])
        channels = _channels_last(lw, node, x, str(node.target))
        values = np.asarray(lw.const(k, node) if isinstance(k, torch.fx.Node) else k, np.float64)
        along_channels = values.ndim <= len(val(x).shape) and all(d == 1 for d in values.shape[:-1])
        if not along_channels or values.size not in (1, channels):
            raise lw.fail(node, f"a constant of shape {list(values.shape)} with a channels-last tensor (only (C,) or "
                                "a scalar: a per-channel scale or shift)")
        k = np.broadcast_to(values.reshape(-1), (channels,))
        if node.target is A.mul.Tensor:
            scale, shift = k, np.zeros(channels)
        else:  # self + alpha * other
            scale, shift = (np.ones(channels), a["alpha"] * k) if first else (np.full(channels, a["alpha"]), k)
        lw.perm[node.name] = lw.perm[x.name]
        Conv.affine(lw, node, lw.tensor_of(x, node), scale, shift)


_SHUFFLE_C = """/* Output channel i * G + j is input channel j * (C / G) + i; planes of `plane` bytes. */
static void lw_channel_shuffle(const void *x, void *y, int C, int G, size_t plane)
{
    const int per = C / G;
    int i, j;
    for (i = 0; i < per; ++i)
        for (j = 0; j < G; ++j)
            memcpy((char *)y + (size_t)(i * G + j) * plane, (const char *)x + (size_t)(j * per + i) * plane, plane);
}
"""


def _shuffle(x, groups: int):
    """ShuffleNet's channel shuffle of an (N, C, H, W) torch tensor or numpy array."""
    n, c = x.shape[:2]
    return x.reshape(n, groups, c // groups, *x.shape[2:]).swapaxes(1, 2).reshape(x.shape)


@register_op
class ChannelShuffle(Op):
    """Output channel i * g + j is input channel j * (C / g) + i: whole planes move (int8 keeps quantisation)."""
    name = "channel_shuffle"
    supports = ("channel shuffle (nn.ChannelShuffle, or view-transpose-view as ShuffleNet)",)
    aten = (A.channel_shuffle.default, A.native_channel_shuffle.default)
    keeps_quant = True
    kernels = {"channel_shuffle": _SHUFFLE_C}

    def lower(self, lw, node, a):
        self.append(lw, node, a["self"], int(a["groups"]))

    @classmethod
    def append(cls, lw, node, x, groups: int) -> None:
        src = lw.tensor_of(x, node)
        if groups < 1 or lw.graph.tensors[src].shape[0] % groups:
            raise lw.fail(node, f"a channel shuffle in {groups} groups of {lw.graph.tensors[src].shape[0]} channels")
        lw.emit(node, cls.name, [src], attrs=dict(groups=groups))

    def run(self, node, xs):
        return _shuffle(xs[0], node.attrs["groups"])

    def run_int8(self, node, q, xs, qin, qout):
        return _shuffle(xs[0], node.attrs["groups"]).astype(np.int64)

    def emit(self, e, node):
        src = node.inputs[0]
        c, h, w = e.shape(src)
        e.use("channel_shuffle")
        e.call("channel_shuffle", e.at(src), e.at(node.output), c, node.attrs["groups"], f"{h * w} * sizeof(*A)")


# fractional bits (the 16 and 8 in lw_layernorm_q8) of z = (x - mean) / sqrt(var + eps) / sqrt(C) and of the
# int8 output before its final rounding
_FRAC, _BIAS_FRAC = 16, 8


_LAYERNORM_F32 = """static void lw_layernorm_f32(const float *x, int C, int HW, float *y, const float *w,
                             const float *b, float eps)
{
    int p, c;
    for (p = 0; p < HW; ++p) {
        float mean = 0.0f, var = 0.0f, r;
        for (c = 0; c < C; ++c) mean += x[c * HW + p];
        mean /= (float)C;
        for (c = 0; c < C; ++c) var += (x[c * HW + p] - mean) * (x[c * HW + p] - mean);
        r = 1.0f / sqrtf(var / (float)C + eps);
        for (c = 0; c < C; ++c) y[c * HW + p] = (x[c * HW + p] - mean) * r * w[c] + b[c];
    }
}
"""

_LAYERNORM_Q8 = """/* LayerNorm over the C channels at each of HW positions, in integers (lwdc's LayerNorm op). */
static void lw_layernorm_q8(const int8_t *x, int C, int HW, int8_t *y, int zx, int zy, int64_t eps,
                            const int32_t *mult, const int8_t *shift, const int32_t *bias)
{
    int p, c, e;
    for (p = 0; p < HW; ++p) {
        int64_t s = 0, t = 0, root = 0, bit = (int64_t)1 << 60;
        for (c = 0; c < C; ++c) s += x[c * HW + p] - zx;
        for (c = 0; c < C; ++c) {
            const int64_t d = (int64_t)C * (x[c * HW + p] - zx) - s;
            t += d * d;
        }
        t += eps;
        if (t < 1) t = 1;
        for (e = 0; t < ((int64_t)1 << 60); ++e) t *= 4;
        for (; bit > 0; bit >>= 2) {
            if (t >= root + bit) {
                t -= root + bit;
                root = (root >> 1) + bit;
            } else {
                root >>= 1;
            }
        }
        for (c = 0; c < C; ++c) {
            const int64_t d = (int64_t)C * (x[c * HW + p] - zx) - s;
            const int64_t z = lw_floor_div(2 * d * ((int64_t)1 << (e + 16)) + root, 2 * root);
            const int64_t v = lw_round_shift(z * mult[c], shift[c] - 8) + bias[c];
            y[c * HW + p] = lw_sat(lw_round_shift(v, 8) + zy, -128, 127);
        }
    }
}
"""


@dataclass
class QLayerNorm(QNode):
    eps: int = 0  # eps in the units of T below: round(eps * C^3 / s_in^2)


def _isqrt(t: np.ndarray) -> np.ndarray:
    """floor(sqrt(t)) for int64 0 <= t < 2^62, bit by bit as lw_layernorm_q8 does it."""
    t, root, bit = t.copy(), np.zeros_like(t), np.int64(1) << 60
    while bit:
        take = t >= root + bit
        t = np.where(take, t - root - bit, t)
        root = np.where(take, (root >> 1) + bit, root >> 1)
        bit >>= 2
    return root


@register_op
class LayerNorm(Op):
    """LayerNorm over the channels at every position (weight and bias per channel).

    int8, per position, all in integers: d_c = x_c - z_in, S = sum d_c, D_c = C * d_c - S (C times the centred
    value), T = max(sum D_c^2 + E, 1) with E = round(eps * C^3 / s_in^2), so that (x_c - mean) / sqrt(var + eps)
    = D_c * sqrt(C) / sqrt(T). T is scaled by 4^e into [2^60, 2^62) and R = isqrt(T * 4^e) (bit by bit, in
    [2^30, 2^31)); z_c = floor((2 * D_c * 2^(e+16) + R) / (2 R)) is D_c / sqrt(T) in Q16 (|z_c| <= 2^16, as
    |D_c| <= sqrt(T)). The weight folds into one fixed-point multiplier per channel, m_c / 2^n_c ~= sqrt(C) w_c
    / (s_out 2^16), the bias into b_c = round(beta_c 2^8 / s_out), and y_c = round_shift(round_shift(z_c m_c,
    n_c - 8) + b_c, 8) + z_out. The C kernel and ``run_int8`` do exactly this (C <= 16384)."""
    name = "layernorm"
    supports = ("LayerNorm over channels (channels-last as ConvNeXt, or (N, F) features)",)
    kernels = {"layernorm_f32": _LAYERNORM_F32, "layernorm_q8": _LAYERNORM_Q8}

    @lowers(A.layer_norm.default, A.native_layer_norm.default, permuted(A.layer_norm.default),
            permuted(A.native_layer_norm.default))
    def lower(self, lw, node, a):
        x = a["input"]
        src = lw.tensor_of(x, node)
        if x.name in lw.perm:
            channels = _channels_last(lw, node, x, "LayerNorm")
            lw.perm[node.name] = lw.perm[x.name]
        elif len(val(x).shape) == 2:
            channels = lw.graph.tensors[src].shape[0]
        else:
            raise lw.fail(node, "LayerNorm over the last dims of an (N, C, H, W) or (N, C, L) tensor (only over the "
                                "channels: of (N, F) features, or channels-last as ConvNeXt: x.permute(0, 2, 3, 1))")
        if list(a["normalized_shape"]) != [channels]:
            raise lw.fail(node, f"LayerNorm over shape {list(a['normalized_shape'])} (only over the {channels} "
                                "channels)")
        weight, bias = lw.const(a["weight"], node), lw.const(a["bias"], node)
        lw.emit(node, self.name, [src], weight=np.ones(channels, np.float32) if weight is None else weight,
                bias=np.zeros(channels, np.float32) if bias is None else bias, attrs=dict(eps=float(a["eps"])))

    def run(self, node, xs):
        x = xs[0].movedim(1, -1)
        y = F.layer_norm(x, x.shape[-1:], torch.from_numpy(node.weight), torch.from_numpy(node.bias),
                         node.attrs["eps"])
        return y.movedim(-1, 1)

    def params(self, node):
        return node.weight.size + node.bias.size

    def quantize(self, node, qin, qout):
        channels, sx, sy = len(node.weight), qin[0].scale, qout.scale
        if channels > 16384:
            raise ValueError(f"int8 LayerNorm over {channels} channels: at most 16384 fit its 64-bit arithmetic")
        pairs = [fixed_point(abs(v)) if v else (0, 62)
                 for v in np.sqrt(channels) * node.weight.astype(np.float64) / (sy * 2.0 ** _FRAC)]
        mult = np.array([m for m, _ in pairs], np.int64) * np.sign(node.weight).astype(np.int64)
        shift = np.array([n for _, n in pairs], np.int64)
        bias = np.rint(node.bias.astype(np.float64) * 2.0 ** _BIAS_FRAC / sy)
        if shift.min() <= _BIAS_FRAC or np.abs(bias).max() >= 2 ** 31:
            raise ValueError(f"int8 LayerNorm at {node.where}: weights or biases too large for the output scale "
                             f"{sy:.3g}")
        eps = min(round(node.attrs["eps"] * channels ** 3 / sx ** 2), 2 ** 61)
        return QLayerNorm(mult=mult, shift=shift, bias=bias.astype(np.int32), eps=int(eps))

    def run_int8(self, node, q, xs, qin, qout):
        d = centred(xs, qin)[0]
        dev = d.shape[1] * d - d.sum(axis=1, keepdims=True)
        t = np.maximum((dev * dev).sum(axis=1, keepdims=True) + q.eps, 1)
        e = np.zeros_like(t)
        while (small := t < (np.int64(1) << 60)).any():
            t, e = np.where(small, t * 4, t), e + small
        root = _isqrt(t)
        z = (2 * dev * (np.int64(1) << (e + _FRAC)) + root) // (2 * root)
        per_channel = (1, -1, 1, 1)
        v = round_shift(z * q.mult.reshape(per_channel), q.shift.reshape(per_channel) - _BIAS_FRAC)
        return round_shift(v + q.bias.astype(np.int64).reshape(per_channel), _BIAS_FRAC) + qout.zero_point

    def emit(self, e, node):
        src, dst = node.inputs[0], node.output
        c, h, w = e.shape(src)
        tensors = [e.at(src), c, h * w, e.at(dst)]
        if not e.int8:
            e.use("layernorm_f32")
            e.call("layernorm_f32", *tensors, e.array("w", "float", node.weight), e.array("b", "float", node.bias),
                   f"{float(np.float32(node.attrs['eps']))!r}f")
            return
        q = e.qnode
        e.use("fixed", "floor_div", "layernorm_q8")
        e.call("layernorm_q8", *tensors, e.zp(src), e.zp(dst), f"{q.eps}LL", e.array("m", "int32_t", q.mult),
               e.array("s", "int8_t", q.shift), e.array("b", "int32_t", q.bias))
