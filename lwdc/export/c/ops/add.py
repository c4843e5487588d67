"""The sum a + alpha * b of two activations (ReLU/ReLU6 after it fold in): a residual add, a difference (alpha
-1), either operand repeated along its size-1 dims (broadcasting, ``elementwise``). int8: TensorFlow Lite's ADD
arithmetic, so a CMSIS-NN build can call ``arm_elementwise_add_s8`` and stay bit-exact: each centred input is
shifted left by 20 bits and rescaled by its own fixed-point multiplier (scale / twice the larger input scale), the
two are summed, and the sum is rescaled to the output scale; every rescale is one rounding (``round_shift``, CMSIS-NN's
``CMSIS_NN_USE_SINGLE_ROUNDING``)."""
from __future__ import annotations


import numpy as np
import torch

from ..emit import _float_literal as float_literal
from ..fixed import QNode, centred, fixed_point, round_shift
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
                                  ", int za, int zb, int zy, int32_t ma, int na, int32_t mb, int nb, int32_t my, "
                                  "int ny, int lo, int hi", "lw_add1_q8(u, v, za, zb, zy, ma, na, mb, nb, my, ny, lo, hi)")}

    #: TensorFlow Lite's left shift of int8 ADD inputs (headroom for the input rescales)
    LEFT_SHIFT = 20

    def lower(self, lw, node, a):
        lower_arithmetic(lw, node, a)

    def run(self, node, xs):
        alpha = node.attrs.get("alpha", 1.0)
        return activate(xs[0] + xs[1] if alpha == 1 else torch.add(xs[0], xs[1], alpha=alpha), node.act)

    def quantize(self, node, qin, qout):
        """mult/shift: (input a, input b, output) as fixed-point pairs ``m / 2^n``; a negative alpha (a difference)
        is the sign of b's multiplier."""
        alpha = node.attrs.get("alpha", 1.0)
        twice_max = 2.0 * max(qin[0].scale, qin[1].scale)
        reals = [qin[0].scale / twice_max, alpha * qin[1].scale / twice_max,
                 twice_max / (2 ** self.LEFT_SHIFT * qout.scale)]
        pairs = [fixed_point(abs(r)) for r in reals]
        return QNode(mult=np.array([int(np.sign(r)) * m for r, (m, _) in zip(reals, pairs)], np.int64),
                     shift=np.array([n for _, n in pairs], np.int64), clamp=act_clamp(node.act, qout))

    def run_int8(self, node, q, xs, qin, qout):
        a, b = (v * 2 ** self.LEFT_SHIFT for v in centred(xs, qin))
        total = round_shift(a * q.mult[0], q.shift[0]) + round_shift(b * q.mult[1], q.shift[1])
        return round_shift(total * q.mult[2], q.shift[2]) + qout.zero_point

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
        zps = [e.zp(t) for t in (*node.inputs, node.output)]
        pairs = [v for m, n in zip(q.mult, q.shift) for v in (f"{int(m)}", int(n))]
        if kernel == "add" and alpha == 1 and e.cmsis:
            from ..cmsis import emit_add
            emit_add(e, node, args, zps, q)
            return
        e.use("fixed", "add1_q8", f"{kernel}_q8")
        e.call(f"{kernel}_q8", *args, *zps, *pairs, *q.clamp)
