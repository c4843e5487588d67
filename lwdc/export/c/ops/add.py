"""The sum a + alpha * b of two activations (ReLU/ReLU6 after it fold in): a residual add, a difference (alpha
-1), either operand repeated along its size-1 dims (broadcasting, ``elementwise``). int8: both inputs rescaled
to the output's scale with one shared shift, so the sum is one fixed-point rounding."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..emit import _float_literal as float_literal
from ..fixed import QNode, centred, round_shift
from ..registry import Op, register_op
from .activations import act_clamp, act_code, activate
from .elementwise import FUSED_ACT, broadcast_args, broadcast_kernel, lower_arithmetic

A = torch.ops.aten


@register_op
class Add(Op):
    name = "add"
    supports = ("residual add and sub (equal shapes, or broadcast over channels or space)",)
    aten = (A.add.Tensor, A.add.Scalar, A.sub.Tensor, A.sub.Scalar, A.rsub.Tensor, A.rsub.Scalar)
    fuses_act = True
    in_place = True
    kernels = {**broadcast_kernel("add_bc_f32", "float", ", float alpha, int act", "u + alpha * v", FUSED_ACT),
               **broadcast_kernel("add_bc_q8", "int8_t",
                                  ", int za, int zb, int zy, int64_t ma, int64_t mb, int n, int lo, int hi",
                                  "lw_sat(lw_round_shift((u - za) * ma + (v - zb) * mb, n) + zy, lo, hi)")}

    def lower(self, lw, node, a):
        lower_arithmetic(lw, node, a)

    def run(self, node, xs):
        alpha = node.attrs.get("alpha", 1.0)
        return activate(xs[0] + xs[1] if alpha == 1 else torch.add(xs[0], xs[1], alpha=alpha), node.act)

    def quantize(self, node, qin, qout):
        ratios = [qin[0].scale / qout.scale, node.attrs.get("alpha", 1.0) * qin[1].scale / qout.scale]
        n = int(np.clip(30 - math.floor(math.log2(max(abs(r) for r in ratios))), 1, 62))
        return QNode(mult=np.array([round(r * 2 ** n) for r in ratios], np.int64), shift=np.array([n], np.int64),
                     clamp=act_clamp(node.act, qout))

    def run_int8(self, node, q, xs, qin, qout):
        a, b = centred(xs, qin)
        return round_shift(a * q.mult[0] + b * q.mult[1], q.shift[0]) + qout.zero_point

    def emit(self, e, node):
        alpha = node.attrs.get("alpha", 1.0)
        flat = all(e.shape(t) == e.shape(node.output) for t in node.inputs)
        if flat and (alpha == 1 or e.int8):  # int8: alpha is in the second input's multiplier
            kernel, args = "add", [*(e.at(t) for t in (*node.inputs, node.output)), e.size(node.output)]
        else:
            kernel, args = "add_bc", broadcast_args(e, node)
        if not e.int8:
            e.use("act_f32", f"{kernel}_f32")
            e.call(f"{kernel}_f32", *args, *([] if kernel == "add" else [float_literal(alpha)]), act_code(node.act))
            return
        q = e.qnode
        e.use("fixed", f"{kernel}_q8")
        e.call(f"{kernel}_q8", *args, *(e.zp(t) for t in (*node.inputs, node.output)), f"{q.mult[0]}LL",
               f"{q.mult[1]}LL", q.shift[0], *q.clamp)
