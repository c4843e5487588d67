"""Convolution, and what lowers to one: Linear (a 1x1 conv on an (F, 1, 1) tensor) and BatchNorm (folded into
the conv before it, or else a depthwise 1x1 conv doing the same per-channel affine map). int8: weights per output
channel, symmetric; int32 bias at scale s_in * s_w; one fixed-point rescale per output channel."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..fixed import QNode, centred, fixed_point, round_shift
from ..graph import as2d, pair, val
from ..registry import Op, lowers, op_for, register_op
from .activations import act_clamp, act_code, activate

A = torch.ops.aten
_POINTWISE = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1))


@register_op
class Conv(Op):
    name = "conv"
    supports = ("Conv1d/Conv2d (any groups, stride, padding, dilation)", "BatchNorm", "Linear")
    fuses_act = True

    @staticmethod
    def append(lw, node, src: str, weight: np.ndarray, bias: np.ndarray | None, **attrs) -> None:
        """A conv node in float32; a missing bias becomes zeros, as the kernels always add one."""
        bias = bias if bias is not None else np.zeros(weight.shape[0])
        lw.emit(node, "conv", [src], weight=weight.astype(np.float32), bias=bias.astype(np.float32), attrs=attrs)

    @classmethod
    def pointwise(cls, lw, node, src: str, weight: np.ndarray, bias: np.ndarray | None, groups: int = 1) -> None:
        """A 1x1 conv with ``weight`` (O, C/groups): Linear over channels, or a per-channel affine map."""
        cls.append(lw, node, src, weight[:, :, None, None], bias, **_POINTWISE, groups=groups)

    @classmethod
    def affine(cls, lw, node, src: str, scale: np.ndarray, shift: np.ndarray) -> None:
        """x * scale + shift per channel (BatchNorm, a layer scale): folded into the conv writing ``src`` when
        nothing else reads it, else a depthwise 1x1 conv."""
        conv = lw.fusable(src)
        if conv is not None and conv.op != cls.name and hasattr(op_for(conv.op), "fold_affine"):
            op_for(conv.op).fold_affine(conv, scale, shift)     # another op that ends in a per-channel affine
            lw.alias(node, src)
            return
        if conv is not None and conv.op == cls.name:
            if conv.unscaled is None:
                conv.unscaled, conv.channel_scale = conv.weight, np.ones(len(scale), np.float32)
            conv.channel_scale = (conv.channel_scale * scale).astype(np.float32)
            conv.weight = conv.unscaled * conv.channel_scale.reshape(-1, 1, 1, 1)   # float32 x float32, as C does
            conv.bias = (conv.bias * scale + shift).astype(np.float32)
            lw.alias(node, src)
        else:
            cls.pointwise(lw, node, src, scale.reshape(-1, 1), shift, groups=len(scale))

    @lowers(A.conv2d.default, A.conv2d.padding, A.conv1d.default, A.conv1d.padding)
    def lower_conv(self, lw, node, a):
        dims = 1 if node.target in (A.conv1d.default, A.conv1d.padding) else 2
        self.conv(lw, node, a["input"], a["weight"], a["bias"], a["stride"], a["padding"], a["dilation"],
                  a["groups"], dims)

    @lowers(A.convolution.default)
    def lower_convolution(self, lw, node, a):
        if a["transposed"]:
            raise lw.fail(node, "transposed convolution is not supported")
        self.conv(lw, node, a["input"], a["weight"], a["bias"], a["stride"], a["padding"], a["dilation"],
                  a["groups"], len(a["stride"]))

    def conv(self, lw, node, x, w, b, stride, padding, dilation, groups, dims):
        weight = lw.const(w, node)
        if isinstance(padding, str):
            if padding == "valid":
                padding = 0
            else:  # "same" with stride 1: symmetric only
                total = [d * (k - 1) for d, k in zip(pair(dilation, dims), weight.shape[2:])]
                if any(t % 2 for t in total):
                    raise lw.fail(node, "'same' padding with an even kernel is asymmetric")
                padding = [t // 2 for t in total]
        if dims == 1:
            weight = weight[:, :, None, :]
        self.append(lw, node, lw.tensor_of(x, node), weight, lw.const(b, node), stride=as2d(stride, dims, 1),
                 padding=as2d(padding, dims, 0), dilation=as2d(dilation, dims, 1), groups=int(groups))

    @lowers(A.linear.default)
    def lower_linear(self, lw, node, a):
        if len(val(a["input"]).shape) != 2:
            raise lw.fail(node, "Linear on a tensor of rank > 2 (flatten first)")
        self.pointwise(lw, node, lw.tensor_of(a["input"], node), lw.const(a["weight"], node),
                       lw.const(a["bias"], node))

    @lowers(A._native_batch_norm_legit_no_training.default, A.batch_norm.default)
    def lower_batch_norm(self, lw, node, a):
        if a.get("training"):
            raise lw.fail(node, "BatchNorm in training mode; call model.eval() first")
        src = lw.tensor_of(a["input"], node)
        channels = lw.graph.tensors[src].shape[0]
        mean, var = lw.const(a["running_mean"], node), lw.const(a["running_var"], node)
        gamma = lw.const(a["weight"], node) if a["weight"] is not None else np.ones(channels, np.float32)
        beta = lw.const(a["bias"], node) if a["bias"] is not None else np.zeros(channels, np.float32)
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + a["eps"])
        self.affine(lw, node, src, scale, beta - mean * scale)

    def run(self, node, xs):
        a = node.attrs
        y = F.conv2d(xs[0], torch.from_numpy(node.weight), torch.from_numpy(node.bias), a["stride"], a["padding"],
                     a["dilation"], a["groups"])
        return activate(y, node.act)

    def macs(self, graph, node):
        return graph.tensors[node.output].size * math.prod(node.weight.shape[1:])

    def params(self, node):
        return node.weight.size + node.bias.size

    def may_write_over_input(self, node):
        """A depthwise 1x1 conv with stride 1 and no padding (BatchNorm after a skipped conv) is elementwise per
        channel; both kernels finish reading a plane before writing it."""
        a, w = node.attrs, node.weight
        if w is None or "groups" not in a:      # a hand-built plan test's placeholder: assume a real conv
            return False
        return (w.shape[1] == 1 and a["groups"] == w.shape[0] and all(k == 1 for k in w.shape[2:])
                and all(st == 1 for st in a["stride"]) and not any(a["padding"]))

    def scratch(self, graph, node):
        """int32 accumulators of one output plane; a blocked int8 conv instead needs, as int16, its patch rows of
        one output row (C/G*KH*KW rows of OW values rounded up to even)."""
        out = graph.tensors[node.output]
        if self.int8_blocked(node):
            return max(out.size // out.shape[0], -(-math.prod(node.weight.shape[1:]) * ((out.shape[2] + 1) & ~1) // 2))
        return out.size // out.shape[0]

    def int8_blocked(self, node) -> bool:
        """Whether the int8 kernel runs as a register-blocked product (kernels.c): at least 4 output channels per
        group, not a per-channel affine written over its input. Depthwise convs keep the plane-wide loops."""
        return node.weight is not None and not self.may_write_over_input(node) and \
            node.weight.shape[0] // node.attrs.get("groups", 1) >= 4

    @staticmethod
    def pack_int8(weight: np.ndarray, groups: int) -> np.ndarray:
        """(O, C/G, KH, KW) -> the blocked kernel's order: per group, each block of 4 output channels as K groups
        of 4 values (channel fastest), then the channels left over as plain rows."""
        O, K = weight.shape[0], int(np.prod(weight.shape[1:]))
        rows, cout, parts = weight.reshape(O, K), O // groups, []
        for g in range(groups):
            o, end = g * cout, (g + 1) * cout
            while end - o >= 4:
                parts.append(rows[o:o + 4].T.reshape(-1))
                o += 4
            parts.extend(rows[o:end])
        return np.concatenate(parts).astype(np.int8)

    def float_scratch(self, graph, node):
        """A conv with at least 4 output channels per group runs as a blocked matrix product over one output row of
        one group's input patches (kernels.c): C/G*KH*KW rows of OW values rounded up to 8. Not one that writes
        over its input (a per-channel affine)."""
        # a depthwise conv gains nothing from patch rows (its plane-wide loops were faster, measured on
        # MobileNetV2); a hand-built plan test's placeholder node has no weight
        if node.weight is None or self.may_write_over_input(node) or \
                node.weight.shape[0] // node.attrs.get("groups", 1) < 4:
            return 0
        out_w = graph.tensors[node.output].shape[2]
        return math.prod(node.weight.shape[1:]) * (-(-out_w // 8) * 8)

    @staticmethod
    def weight_scale(node) -> np.ndarray:
        """Per output channel, symmetric: max |w| / 127 (1 for an all-zero channel)."""
        w_scale = np.abs(node.weight.astype(np.float64)).reshape(node.weight.shape[0], -1).max(axis=1) / 127.0
        return np.where(w_scale > 0, w_scale, 1.0).astype(np.float32).astype(np.float64)

    def bias_scale(self, node, qin) -> np.ndarray:
        """What one unit of the int32 bias is worth in the output's float units, per output channel."""
        return qin[0].scale * self.weight_scale(node)

    def quantize(self, node, qin, qout):
        w = node.weight.astype(np.float64)
        w_scale = self.weight_scale(node)
        bias_scale = self.bias_scale(node, qin)
        mult, shift = (np.array(v, np.int64) for v in zip(*[fixed_point(s / qout.scale) for s in bias_scale]))
        return QNode(weight=np.clip(np.rint(w / w_scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8),
                     bias=np.clip(np.rint(node.bias / bias_scale), -2 ** 31, 2 ** 31 - 1).astype(np.int32),
                     mult=mult, shift=shift, clamp=act_clamp(node.act, qout))

    def run_int8(self, node, q, xs, qin, qout):
        a, x = node.attrs, centred(xs, qin)[0]  # float64 convolution of integers below 2^53 is exact
        acc = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(q.weight.astype(np.float64)), None,
                       a["stride"], a["padding"], a["dilation"], a["groups"]).round().to(torch.int64).numpy()
        acc = (acc + q.bias.reshape(1, -1, 1, 1)).astype(np.int32).astype(np.int64)  # the C accumulator is int32
        return round_shift(acc * q.mult.reshape(1, -1, 1, 1), q.shift.reshape(1, -1, 1, 1)) + qout.zero_point

    def emit(self, e, node):
        if e.cmsis and e.index in e.cmsis.mapped:
            from ..cmsis import emit_conv
            emit_conv(e, node)
            return
        a, src, dst = node.attrs, node.inputs[0], node.output
        geometry = [*node.weight.shape[2:], *a["stride"], *a["padding"], *a["dilation"], a["groups"]]
        tensors = [e.at(src), *e.shape(src), e.at(dst), *e.shape(dst)]
        e.use("range", "fixed" if e.int8 else "act_f32", f"conv_{e.sfx}")
        if not e.int8:
            weights = e.float_weights(node)
            e.call("conv_f32", *tensors, weights, e.array("b", "float", node.bias),
                   *geometry, act_code(node.act), "lw_col" if self.float_scratch(e.g, node) else "0")
            return
        q = e.qnode
        blocked = self.int8_blocked(node)
        weight = self.pack_int8(q.weight, a["groups"]) if blocked else q.weight
        arrays = [e.array("w", "int8_t", weight), e.array("b", "int32_t", q.bias), e.array("m", "int32_t", q.mult),
                  e.array("s", "int8_t", q.shift)]
        e.call("conv_q8", *tensors, *arrays, *geometry, e.zp(src), e.zp(dst), *q.clamp, "lw_acc", int(blocked))
