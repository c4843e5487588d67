"""Elementwise arithmetic of mobile CNNs. Between two activations: products (a squeeze-and-excitation gate
(N, C, H, W) * (N, C, 1, 1), spatial attention (N, C, H, W) * (N, 1, H, W)) and sums or differences, either
operand repeated along its size-1 dims. With a constant (a scalar, or a per-channel parameter such as a layer
scale gamma): add, sub, mul and div are the per-channel affine map x * s[c] + b[c], folded into the conv before
it or a depthwise 1x1 conv of its own, as BatchNorm is.

int8 of a product: y = round_shift((a - za) * (b - zb) * m, n) + zy with m / 2^n = sa * sb / sy (sums: ``add``).
"""
from __future__ import annotations

import numpy as np
import torch

from ..fixed import QNode, centred, fixed_point, round_shift
from ..graph import val
from ..registry import Op, register_op
from .activations import act_clamp, act_code, activate
from .conv import Conv

A = torch.ops.aten

# ATen target -> (arithmetic, operands swapped): rsub(x, c) is c - x
ARITHMETIC = {A.add.Tensor: ("add", False), A.add.Scalar: ("add", False), A.sub.Tensor: ("sub", False),
              A.sub.Scalar: ("sub", False), A.rsub.Tensor: ("sub", True), A.rsub.Scalar: ("sub", True),
              A.mul.Tensor: ("mul", False), A.mul.Scalar: ("mul", False), A.div.Tensor: ("div", False),
              A.div.Scalar: ("div", False)}


def lower_arithmetic(lw, node, a: dict) -> None:
    """add, sub, rsub, mul or div. Of two activations: an ``add`` node (``attrs['alpha']`` weighs the second
    operand: -1 for a difference) or a ``mul`` node; of an activation and a constant: a per-channel affine map;
    of two constants: a constant."""
    kind, swapped = ARITHMETIC[node.target]
    first, second = (a["other"], a["self"]) if swapped else (a["self"], a["other"])
    alpha = float(a.get("alpha", 1))
    is_act = [lw.is_activation(v) for v in (first, second)]
    if not any(is_act):
        fold_constant(lw, node)
    elif all(is_act):
        if kind == "div":
            raise lw.fail(node, "dividing by an activation is not supported (only by a constant)")
        inputs = broadcast_operands(lw, node, first, second)
        weight = {"add": alpha, "sub": -alpha, "mul": 1.0}[kind]
        lw.emit(node, "mul" if kind == "mul" else "add", inputs, attrs={} if weight == 1 else {"alpha": weight})
    else:
        x, c = (first, second) if is_act[0] else (second, first)
        if kind == "div" and not is_act[0]:
            raise lw.fail(node, "dividing a constant by an activation is not supported")
        c = per_channel(lw, node, x, constant(lw, c, node))
        if kind == "mul":
            scale, shift = c, 0.0
        elif kind == "div":
            if not np.all(c):
                raise lw.fail(node, "division by a constant that holds zeros")
            scale, shift = 1.0 / c, 0.0
        else:  # c + alpha * x, c - alpha * x, x + alpha * c or x - alpha * c
            sign = 1.0 if kind == "add" else -1.0
            scale, shift = (1.0, sign * alpha * c) if is_act[0] else (sign * alpha, c)
        affine(lw, node, lw.tensor_of(x, node), *(np.broadcast_to(v, c.shape).astype(np.float64)
                                                  for v in (scale, shift)))


def affine(lw, node, src: str, scale: np.ndarray, shift: np.ndarray) -> None:
    """x * scale + shift per channel; the identity (x + 0, x * 1) only relabels ``src``."""
    if np.all(scale == 1) and not np.any(shift):
        lw.alias(node, src)
    else:
        Conv.affine(lw, node, src, scale, shift)


def constant(lw, arg, node) -> np.ndarray:
    """A Python number or a stored parameter, buffer or folded constant, as float64."""
    if isinstance(arg, (int, float)):
        return np.asarray(float(arg))
    return lw.const(arg, node).astype(np.float64)


def per_channel(lw, node, x, c: np.ndarray) -> np.ndarray:
    """A constant combined with activation ``x`` as one value per channel of ``x``; refused when it varies
    along another dim or makes the result larger than ``x``."""
    shape, out = tuple(val(x).shape), tuple(val(node).shape)
    padded = (1,) * (len(shape) - c.ndim) + tuple(c.shape)
    if out != shape or len(padded) != len(shape) or any(d != 1 for i, d in enumerate(padded) if i != 1):
        raise lw.fail(node, f"a constant of shape {tuple(c.shape)} with an activation of shape {shape} (only "
                            "scalars and per-channel constants, e.g. (C, 1, 1), combine with an activation)")
    channels = lw.graph.tensors[lw.tensor_of(x, node)].shape[0]
    return np.broadcast_to(c.reshape(-1), (channels,)).astype(np.float64)


def fold_constant(lw, node) -> None:
    """An op on constants only (a parameter times 2, say) is computed now and becomes a constant itself."""
    def value(v):
        if isinstance(v, torch.fx.Node):
            if v.name not in lw.consts:
                raise lw.fail(node, "an operand is neither an activation nor a stored constant")
            return lw.consts[v.name]
        return v
    lw.consts[node.name] = node.target(*map(value, node.args), **{k: value(v) for k, v in node.kwargs.items()})


def broadcast_operands(lw, node, x, y) -> list[str]:
    """The IR tensors of two activations whose (C, H, W) shapes agree or are 1 in every dim."""
    tx, ty = lw.tensor_of(x, node), lw.tensor_of(y, node)
    sx, sy = lw.graph.tensors[tx].shape, lw.graph.tensors[ty].shape
    if len(val(x).shape) != len(val(y).shape) or any(a != b and 1 not in (a, b) for a, b in zip(sx, sy)):
        raise lw.fail(node, f"combining activations of shapes {tuple(val(x).shape)} and {tuple(val(y).shape)} "
                            "(only equal shapes, or size 1 along channels or space, broadcast)")
    return [tx, ty]


def broadcast_args(e, node) -> list:
    """The arguments every ``broadcast_kernel`` takes first: both inputs and the output, each with its shape."""
    return [arg for t in (*node.inputs, node.output) for arg in (e.at(t), *e.shape(t))]


def broadcast_kernel(name: str, ctype: str, params: str, expr: str, after: str = "") -> dict[str, str]:
    """A C kernel computing ``expr`` of ``u`` (from a) and ``v`` (from b) at every output position; an input
    with size 1 along a dim is read with stride 0 there, so one loop serves equal shapes and broadcasting."""
    return {name: f"""/* y = {expr} over the output's (C, H, W); an input of size 1 along a dim repeats along it. */
static void lw_{name}(const {ctype} *a, int AC, int AH, int AW, const {ctype} *b, int BC, int BH, int BW,
    {ctype} *y, int C, int H, int W{params})
{{
    const int ac = AC == 1 ? 0 : AH * AW, ah = AH == 1 ? 0 : AW, aw = AW == 1 ? 0 : 1;
    const int bc = BC == 1 ? 0 : BH * BW, bh = BH == 1 ? 0 : BW, bw = BW == 1 ? 0 : 1;
    int c, h, w;
    for (c = 0; c < C; ++c)
        for (h = 0; h < H; ++h) {{
            const {ctype} *pa = a + c * ac + h * ah, *pb = b + c * bc + h * bh;
            for (w = 0; w < W; ++w) {{
                const {ctype} u = pa[w * aw], v = pb[w * bw];
                *y++ = {expr};
            }}
        }}{after}
}}
"""}


# the float kernels end with the fused ReLU/ReLU6 over the whole output
FUSED_ACT = "\n    lw_act_f32(y - C * H * W, C * H * W, act);"


@register_op
class Mul(Op):
    name = "mul"
    supports = ("elementwise multiply (equal shapes, or broadcast over channels or space)",
                "add/sub/mul/div by a scalar or a per-channel constant")
    aten = (A.mul.Tensor, A.mul.Scalar, A.div.Tensor, A.div.Scalar)
    fuses_act = True
    in_place = True
    kernels = {**broadcast_kernel("mul_f32", "float", ", int act", "u * v", FUSED_ACT),
               **broadcast_kernel("mul_q8", "int8_t", ", int za, int zb, int zy, int64_t m, int n, int lo, int hi",
                                  "lw_sat(lw_round_shift((int64_t)((u - za) * (v - zb)) * m, n) + zy, lo, hi)")}

    def lower(self, lw, node, a):
        lower_arithmetic(lw, node, a)

    def run(self, node, xs):
        return activate(xs[0] * xs[1], node.act)

    def quantize(self, node, qin, qout):
        m, n = fixed_point(qin[0].scale * qin[1].scale / qout.scale)
        return QNode(mult=np.array([m], np.int64), shift=np.array([n], np.int64), clamp=act_clamp(node.act, qout))

    def run_int8(self, node, q, xs, qin, qout):
        a, b = centred(xs, qin)
        return round_shift(a * b * q.mult[0], q.shift[0]) + qout.zero_point

    def emit(self, e, node):
        if not e.int8:
            e.use("act_f32", "mul_f32")
            e.call("mul_f32", *broadcast_args(e, node), act_code(node.act))
            return
        q = e.qnode
        e.use("fixed", "mul_q8")
        e.call("mul_q8", *broadcast_args(e, node), *(e.zp(t) for t in (*node.inputs, node.output)),
               f"{q.mult[0]}LL", q.shift[0], *q.clamp)
