"""The activations of mobile CNNs beyond ReLU: hard-swish and hard-sigmoid (MobileNetV3), LeakyReLU (YOLO-style
detectors), GELU (ConvNeXt, MobileViT), exact or with the tanh approximation, and ELU (EEG CNNs). Each is a ``Unary``: one C
expression in float, a 256-entry table on the input's int8 grid in int8."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register_op
from .unary import Unary

A = torch.ops.aten


@register_op
class Hardswish(Unary):
    name, supports = "hardswish", ("Hardswish",)
    aten = (A.hardswish.default, A.hardswish_.default)
    c_expr = "v * (v <= -3.0f ? 0.0f : (v >= 3.0f ? 6.0f : v + 3.0f)) / 6.0f"  # PyTorch's order of operations

    def fn(self, node, x):
        return F.hardswish(x)


@register_op
class Hardsigmoid(Unary):
    name, supports = "hardsigmoid", ("Hardsigmoid",)
    aten = (A.hardsigmoid.default, A.hardsigmoid_.default)
    c_expr = "v <= -3.0f ? 0.0f : (v >= 3.0f ? 1.0f : (v + 3.0f) / 6.0f)"

    def fn(self, node, x):
        return F.hardsigmoid(x)


@register_op
class LeakyRelu(Unary):
    name, supports = "leaky_relu", ("LeakyReLU",)
    aten = (A.leaky_relu.default, A.leaky_relu_.default)
    c_expr, c_param = "v > 0.0f ? v : v * p", "negative_slope"

    def lower(self, lw, node, a):
        lw.emit(node, self.name, [lw.tensor_of(a["self"], node)],
                attrs=dict(negative_slope=float(a["negative_slope"])))

    def fn(self, node, x):
        return F.leaky_relu(x, node.attrs["negative_slope"])


@register_op
class Gelu(Unary):
    name, supports = "gelu", ("GELU (exact and approximate='tanh')",)
    aten = (A.gelu.default, A.gelu_.default)
    c_expr = "0.5f * v * (1.0f + erff(v * 0.707106781f))"

    def lower(self, lw, node, a):
        kind = {"none": self.name, "tanh": GeluTanh.name}.get(a["approximate"])
        if kind is None:
            raise lw.fail(node, f"GELU with approximate={a['approximate']!r}")
        lw.emit(node, kind, [lw.tensor_of(a["self"], node)])

    def fn(self, node, x):
        return F.gelu(x)


@register_op
class GeluTanh(Unary):
    """GELU(approximate='tanh'): an op of its own so each C kernel is one expression; ``Gelu`` lowers to it."""
    name = "gelu_tanh"
    c_expr = "0.5f * v * (1.0f + tanhf(0.797884561f * (v + 0.044715f * v * v * v)))"

    def fn(self, node, x):
        return F.gelu(x, approximate="tanh")


@register_op
class Elu(Unary):
    """ELU (EEGNet and most EEG CNNs): ``alpha * (exp(v) - 1)`` below zero, with ``expm1f`` as PyTorch uses."""
    name, supports = "elu", ("ELU",)
    aten = (A.elu.default, A.elu_.default)
    c_expr, c_param = "v > 0.0f ? v : p * expm1f(v)", "alpha"

    def lower(self, lw, node, a):
        if float(a.get("scale", 1.0)) != 1.0 or float(a.get("input_scale", 1.0)) != 1.0:
            raise lw.fail(node, "ELU with scale or input_scale other than 1 (SELU)")
        lw.emit(node, self.name, [lw.tensor_of(a["self"], node)], attrs=dict(alpha=float(a["alpha"])))

    def fn(self, node, x):
        return F.elu(x, node.attrs["alpha"])
