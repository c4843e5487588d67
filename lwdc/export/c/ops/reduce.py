"""``mean`` over any per-sample dims: over channels (a (1, H, W) map, as spatial attention takes), over H or W
only, over everything. Over exactly the spatial dims it stays a global average pool (``pool.Gap``, its own
faster kernel). int8 keeps the input's quantisation: the sum of stored values divided with rounding half away
from zero, as every average in this exporter (``pool.tflite_average``, TensorFlow Lite's rounding)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..fixed import centred
from ..graph import val
from ..registry import Op, register_op
from .movement import sample_axis
from .pool import Gap, tflite_average

A = torch.ops.aten

_MEAN = """/* The mean over the axes flagged rc, rh, rw of a (C, H, W) tensor; the output keeps the others in order. */
static void lw_mean_{sfx}(const {t} *x, int C, int H, int W, {t} *y, int rc, int rh, int rw{z_arg})
{{
    const int OC = rc ? 1 : C, OH = rh ? 1 : H, OW = rw ? 1 : W;
    const int n = (rc ? C : 1) * (rh ? H : 1) * (rw ? W : 1);
    int oc, oh, ow, c, h, w;
    for (oc = 0; oc < OC; ++oc)
        for (oh = 0; oh < OH; ++oh)
            for (ow = 0; ow < OW; ++ow) {{
                {acc} s = 0;
                for (c = oc; c < (rc ? C : oc + 1); ++c)
                    for (h = oh; h < (rh ? H : oh + 1); ++h)
                        for (w = ow; w < (rw ? W : ow + 1); ++w) s += x[((long)c * H + h) * W + w]{minus_z};
                *y++ = {result};
            }}
}}
"""


@register_op
class Mean(Op):
    name = "mean"
    supports = ("mean over any dims but the batch",)
    aten = (A.mean.dim,)
    keeps_quant = True
    kernels = {"mean_f32": _MEAN.format(sfx="f32", t="float", z_arg="", acc="float", minus_z="",
                                        result="s / (float)n"),
               "mean_q8": _MEAN.format(sfx="q8", t="int8_t", z_arg=", int z", acc="int64_t", minus_z=" - z",
                                       result="lw_sat(lw_round_div(s + (int64_t)z * n, n), -128, 127)")}

    def lower(self, lw, node, a):
        rank = len(val(a["self"]).shape)
        dims = sorted({d % rank for d in (a["dim"] or ())})
        if not dims or 0 in dims:
            raise lw.fail(node, "a mean over the batch dimension")
        src = lw.tensor_of(a["self"], node)
        if dims == list(range(2, rank)):
            Gap.append(lw, node, src)
        else:
            lw.emit(node, self.name, [src], attrs=dict(axes=tuple(sample_axis(d, rank) for d in dims)))

    def run(self, node, xs):
        return xs[0].mean(dim=tuple(a + 1 for a in node.attrs["axes"]), keepdim=True)

    def run_int8(self, node, q, xs, qin, qout):
        axes = tuple(a + 1 for a in node.attrs["axes"])
        sums = centred(xs, qin)[0].sum(axis=axes, keepdims=True)
        return tflite_average(sums, np.int64(math.prod(xs[0].shape[a] for a in axes)), qin[0].zero_point)

    def emit(self, e, node):
        src, axes = node.inputs[0], node.attrs["axes"]
        e.use(*(["fixed", "round_div"] if e.int8 else []), f"mean_{e.sfx}")
        e.call(f"mean_{e.sfx}", e.at(src), *e.shape(src), e.at(node.output), *(int(i in axes) for i in range(3)),
               *([e.zp(src)] if e.int8 else []))
