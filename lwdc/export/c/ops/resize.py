"""Upsampling (nn.Upsample / F.interpolate), 2-D and 1-D, by a scale factor or to a size.

The source positions are computed here once, in float32 exactly as PyTorch's CPU kernels do, and written into
the C as tables, so no float index arithmetic happens on the device. Nearest is a ``gather`` (it only moves
values: int8 keeps the input's quantisation). Bilinear (1-D: linear) blends two source rows and columns with
weights l0 = 1 - l1 and l1. int8 keeps the input's quantisation too (a blend stays inside its inputs' range):
each axis' l1 becomes Q11 fixed point ``w1 = floor(l1 * 2048 + 1/2)``, ``w0 = 2048 - w1``; the four centred
neighbours times w0/w1 of both axes sum exactly in int32, and the result rounds half up:
``y = floor((acc + 2^21) / 2^22) + z``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..fixed import centred, round_shift
from ..graph import val
from ..registry import Op, register_op
from .movement import Gather, identity_index

A = torch.ops.aten
Q = 11  # fractional bits of the int8 bilinear weights
f32 = np.float32


def _spatial(lw, node, a) -> tuple[list[tuple[int, int, float | None]], int]:
    """(input size, output size, scale factor or None) of each spatial axis (H, W of the (C, H, W) view) and
    the number of spatial dims of the PyTorch op."""
    dims = len(val(a["input"]).shape) - 2
    if dims not in (1, 2):
        raise lw.fail(node, f"{dims}-D upsampling (only 1-D and 2-D)")
    ins, outs = val(a["input"]).shape[2:], val(node).shape[2:]
    scales = list(a.get("scale_factors") or [None] * dims)
    axes = [(int(i), int(o), s) for i, o, s in zip(ins, outs, scales)]
    return ([(1, 1, None)] if dims == 1 else []) + axes, dims


def nearest_index(n_in: int, n_out: int, scale: float | None) -> np.ndarray:
    """PyTorch's ``nearest_idx``: the source of every output position along one axis."""
    o = np.arange(n_out)
    if n_out == n_in:
        return o
    if n_out == 2 * n_in:
        return o >> 1
    ratio = f32(1.0 / scale) if scale else f32(n_in) / f32(n_out)
    return np.minimum(np.floor(o.astype(f32) * ratio).astype(np.int64), n_in - 1)


def linear_taps(n_in: int, n_out: int, align_corners: bool, scale: float | None):
    """PyTorch's ``compute_source_index_and_lambda``: the two sources (i0, i1) of every output position along
    one axis and the weight l1 of i1, in float32."""
    o = np.arange(n_out)
    if n_out == n_in:
        return o, o, np.zeros(n_out, f32)
    if align_corners:
        ratio = f32(n_in - 1) / f32(n_out - 1) if n_out > 1 else f32(0)
        real = ratio * o.astype(f32)
    else:
        ratio = f32(1.0 / scale) if scale else f32(n_in) / f32(n_out)
        real = np.maximum(ratio * (o.astype(f32) + f32(0.5)) - f32(0.5), f32(0))
    i0 = np.minimum(np.floor(real).astype(np.int64), n_in - 1)
    l1 = np.clip(real - i0.astype(f32), f32(0), f32(1)).astype(f32)
    return i0, i0 + (i0 < n_in - 1), l1


_BILINEAR_F32 = """/* Bilinear (1-D: linear) upsampling: hi/wi hold the two source rows/columns of each output
 * row/column (first all i0, then all i1), hl/wl the weight l1 of the second (l0 = 1 - l1). */
static void lw_bilinear_f32(const float *x, int C, int H, int W, float *y, int OH, int OW,
                            const int32_t *hi, const float *hl, const int32_t *wi, const float *wl)
{
    int c, oh, ow;
    for (c = 0; c < C; ++c, x += H * W)
        for (oh = 0; oh < OH; ++oh) {
            const float *r0 = x + hi[oh] * W, *r1 = x + hi[OH + oh] * W;
            const float h1 = hl[oh], h0 = 1.0f - h1;
            for (ow = 0; ow < OW; ++ow) {
                const int a = wi[ow], b = wi[OW + ow];
                const float w1 = wl[ow], w0 = 1.0f - w1;
                *y++ = (r0[a] * w0 + r0[b] * w1) * h0 + (r1[a] * w0 + r1[b] * w1) * h1;
            }
        }
}
"""

_BILINEAR_Q8 = """/* int8 bilinear, keeping the input's quantisation: weights in Q(q) fixed point (w0 = 2^q - w1),
 * the blend of the four centred neighbours exact in integers, rounded half up once:
 * y = floor((acc + 2^(2q-1)) / 2^(2q)) + z. */
static void lw_bilinear_q8(const int8_t *x, int C, int H, int W, int8_t *y, int OH, int OW,
                           const int32_t *hi, const int32_t *hl, const int32_t *wi, const int32_t *wl, int q, int z)
{
    const int32_t one = (int32_t)1 << q;
    int c, oh, ow;
    for (c = 0; c < C; ++c, x += H * W)
        for (oh = 0; oh < OH; ++oh) {
            const int8_t *r0 = x + hi[oh] * W, *r1 = x + hi[OH + oh] * W;
            const int32_t h1 = hl[oh], h0 = one - h1;
            for (ow = 0; ow < OW; ++ow) {
                const int a = wi[ow], b = wi[OW + ow];
                const int32_t w1 = wl[ow], w0 = one - w1;
                const int32_t top = (r0[a] - z) * w0 + (r0[b] - z) * w1;
                const int32_t bottom = (r1[a] - z) * w0 + (r1[b] - z) * w1;
                *y++ = lw_sat(lw_round_shift((int64_t)top * h0 + (int64_t)bottom * h1, 2 * q) + z, -128, 127);
            }
        }
}
"""


@register_op
class UpsampleNearest(Gather):
    name = "upsample_nearest"
    supports = ("Upsample/interpolate nearest (1-D, 2-D)",)
    aten = (A.upsample_nearest2d.vec, A.upsample_nearest1d.vec)

    def lower(self, lw, node, a):
        src = lw.tensor_of(a["input"], node)
        index = identity_index(lw.graph.tensors[src].shape)
        axes, _ = _spatial(lw, node, a)
        index[1:] = [nearest_index(*axis) for axis in axes]
        self.append(lw, node, src, index)


@register_op
class Bilinear(Op):
    name = "bilinear"
    supports = ("Upsample/interpolate bilinear and 1-D linear (align_corners either way)",)
    aten = (A.upsample_bilinear2d.vec, A.upsample_linear1d.vec)
    keeps_quant = True

    def lower(self, lw, node, a):
        axes, dims = _spatial(lw, node, a)
        taps = [linear_taps(n_in, n_out, bool(a["align_corners"]), s) for n_in, n_out, s in axes]
        lw.emit(node, self.name, [lw.tensor_of(a["input"], node)],
                attrs=dict(taps=taps, dims=dims, align_corners=bool(a["align_corners"]),
                           output_size=a["output_size"], scale_factors=a["scale_factors"]))

    def run(self, node, xs):  # PyTorch itself, with the call's own arguments
        a = node.attrs
        if a["dims"] == 1:
            return A.upsample_linear1d.vec(xs[0][:, :, 0], a["output_size"], a["align_corners"], a["scale_factors"])
        return A.upsample_bilinear2d.vec(xs[0], a["output_size"], a["align_corners"], a["scale_factors"])

    @staticmethod
    def int8_weights(l1: np.ndarray) -> np.ndarray:
        return np.floor(l1.astype(np.float64) * 2 ** Q + 0.5).astype(np.int64)

    def run_int8(self, node, q, xs, qin, qout):
        (hi0, hi1, hl), (wi0, wi1, wl) = node.attrs["taps"]
        h1, w1 = self.int8_weights(hl)[:, None], self.int8_weights(wl)
        x = centred(xs, qin)[0]
        r0, r1 = x[:, :, hi0], x[:, :, hi1]
        top = r0[..., wi0] * (2 ** Q - w1) + r0[..., wi1] * w1
        bottom = r1[..., wi0] * (2 ** Q - w1) + r1[..., wi1] * w1
        return round_shift(top * (2 ** Q - h1) + bottom * h1, 2 * Q) + qout.zero_point

    def emit(self, e, node):
        src = node.inputs[0]
        tables = []
        for axis, (i0, i1, l1) in zip("hw", node.attrs["taps"]):
            tables.append(e.array(f"{axis}i", "int32_t", np.concatenate([i0, i1])))
            tables.append(e.array(f"{axis}l", *(("int32_t", self.int8_weights(l1)) if e.int8 else ("float", l1))))
        e.use(*(["fixed"] if e.int8 else []), f"bilinear_{e.sfx}")
        e.call(f"bilinear_{e.sfx}", e.at(src), *e.shape(src), e.at(node.output), *e.shape(node.output)[1:],
               *tables, *([Q, e.zp(src)] if e.int8 else []))

    kernels = {"bilinear_f32": _BILINEAR_F32, "bilinear_q8": _BILINEAR_Q8}
