"""The residual add of two activations of the same shape (ReLU/ReLU6 after it fold in). int8: both inputs
rescaled to the output's scale with one shared shift, so the sum is one fixed-point rounding."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..fixed import QNode, centred, round_shift
from ..registry import Op, register_op
from .activations import act_clamp, act_code, activate

A = torch.ops.aten


@register_op
class Add(Op):
    name = "add"
    supports = ("residual add",)
    aten = (A.add.Tensor,)
    fuses_act = True
    in_place = True

    def lower(self, lw, node, a):
        if not (lw.is_activation(a["self"]) and lw.is_activation(a["other"])) or a["alpha"] != 1:
            raise lw.fail(node, "only the sum of two activations (a residual add) is supported")
        x, y = lw.tensor_of(a["self"], node), lw.tensor_of(a["other"], node)
        if lw.graph.tensors[x].shape != lw.graph.tensors[y].shape:
            raise lw.fail(node, "adding tensors of different shapes (broadcasting) is not supported")
        lw.emit(node, self.name, [x, y])

    def run(self, node, xs):
        return activate(xs[0] + xs[1], node.act)

    def quantize(self, node, qin, qout):
        ratios = [p.scale / qout.scale for p in qin]
        n = int(np.clip(30 - math.floor(math.log2(max(ratios))), 1, 62))
        return QNode(mult=np.array([round(r * 2 ** n) for r in ratios], np.int64), shift=np.array([n], np.int64),
                     clamp=act_clamp(node.act, qout))

    def run_int8(self, node, q, xs, qin, qout):
        a, b = centred(xs, qin)
        return round_shift(a * q.mult[0] + b * q.mult[1], q.shift[0]) + qout.zero_point

    def emit(self, e, node):
        tensors = [e.at(t) for t in (*node.inputs, node.output)]
        if not e.int8:
            e.use("act_f32", "add_f32")
            e.call("add_f32", *tensors, e.size(node.output), act_code(node.act))
            return
        q = e.qnode
        e.use("fixed", "add_q8")
        e.call("add_q8", *tensors, e.size(node.output), *(e.zp(t) for t in (*node.inputs, node.output)),
               f"{q.mult[0]}LL", f"{q.mult[1]}LL", q.shift[0], *q.clamp)
