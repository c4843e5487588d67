"""ReLU, ReLU6, sigmoid and SiLU: folded into the conv or add before them when they can be (ReLU/ReLU6 become
that node's output clamp), otherwise a node of their own (int8: a lookup table)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import lowers, op_for, register_op
from .unary import Unary

A = torch.ops.aten
# name -> (float function, code of lw_act_f32, the real range a fused int8 clamp keeps or None)
ACTIVATIONS = {
    "none": (lambda v: v, 0, None),
    "relu": (torch.relu, 1, (0.0, None)),
    "relu6": (lambda v: v.clamp(0, 6), 2, (0.0, 6.0)),
    "sigmoid": (torch.sigmoid, 3, None),
    "silu": (F.silu, 4, None),
}


def activate(x: torch.Tensor, kind: str) -> torch.Tensor:
    return ACTIVATIONS[kind][0](x)


def act_code(kind: str) -> int:
    return ACTIVATIONS[kind][1]


def act_clamp(kind: str, qp) -> tuple[int, int]:
    """The int8 output range of a fused activation on a tensor quantised with ``qp``."""
    keep = ACTIVATIONS[kind][2]
    if keep is None:
        return -128, 127
    lo = max(-128, qp.zero_point + round(keep[0] / qp.scale))
    hi = 127 if keep[1] is None else min(127, qp.zero_point + round(keep[1] / qp.scale))
    return lo, hi


@register_op
class Act(Unary):
    name = "act"
    supports = ("ReLU", "ReLU6", "clamp(min=0) and clamp(0, 6)", "Sigmoid", "SiLU")

    def fn(self, node, x):
        return activate(x, node.act)

    def activation(self, lw, node, x, kind: str) -> None:
        src = lw.tensor_of(x, node)
        producer = lw.fusable(src) if ACTIVATIONS[kind][2] is not None else None
        if producer is not None and op_for(producer.op).fuses_act:
            producer.act = kind
            lw.alias(node, src)
        else:
            lw.emit(node, self.name, [src], act=kind)

    @lowers(A.relu.default, A.relu_.default)
    def lower_relu(self, lw, node, a):
        self.activation(lw, node, a["self"], "relu")

    @lowers(A.hardtanh.default, A.hardtanh_.default, A.clamp.default, A.clamp_min.default)
    def lower_clamp(self, lw, node, a):
        lo, hi = (a["min_val"], a["max_val"]) if "min_val" in a else (a["min"], a.get("max"))
        if lo == 0 and hi is None:
            self.activation(lw, node, a["self"], "relu")
        elif (lo, hi) == (0, 6):
            self.activation(lw, node, a["self"], "relu6")
        else:
            raise lw.fail(node, f"clamping to [{lo}, {hi}] (only the ReLU and ReLU6 ranges)")

    @lowers(A.relu6.default, A.relu6_.default)  # F.relu6 (nn.ReLU6 arrives as hardtanh)
    def lower_relu6(self, lw, node, a):
        self.activation(lw, node, a["self"], "relu6")

    @lowers(A.sigmoid.default, A.silu.default)
    def lower_sigmoid_silu(self, lw, node, a):
        self.activation(lw, node, a["self"], "sigmoid" if node.target is A.sigmoid.default else "silu")

    def emit_float(self, e, node, src, dst, n):
        e.use("act_f32")
        if src != dst:
            e.line(f"memcpy({dst}, {src}, {n} * sizeof(*A));")
        e.call("act_f32", dst, n, act_code(node.act))
