"""Max and average pooling (1-D on the (C, 1, L) view, ceil mode, padding) and global average pooling, which
``adaptive_avg_pool`` and ``mean`` over the spatial dims (``reduce.Mean``) lower to. int8 keeps the input's scale
and zero point: max compares values; an average divides the window's sum of stored int8 values (padding counted
as the zero point, i.e. a real 0, where PyTorch counts it) by PyTorch's divisor at that position, rounded half away
from zero, as TensorFlow Lite's AVERAGE_POOL_2D and CMSIS-NN's ``arm_avgpool_s8`` do, so CMSIS-NN builds can call
them (``cmsis.py``)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..fixed import QNode, centred, fixed_point, round_shift
from ..graph import as2d, pair, per_sample, val
from ..registry import Op, lowers, register_op

A = torch.ops.aten


def pool_divisors(in_hw: tuple[int, int], out_hw: tuple[int, int], a: dict) -> np.ndarray:
    """PyTorch's avg_pool divisor at every output position: the window clipped to the padded input (or to the
    input itself when padding is not counted); a ceil-mode overhang past the padding never counts."""
    per_axis = []
    for n, out, k, s, p in zip(in_hw, out_hw, a["kernel"], a["stride"], a["padding"]):
        start = np.arange(out) * s - p
        end = np.minimum(start + k, n + p)
        if not a["count_include_pad"]:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        per_axis.append((end - start).astype(np.int64))
    return np.outer(*per_axis)


def tflite_average(centred_sums: np.ndarray, div, zero_point: int) -> np.ndarray:
    """The stored int8 average: ``raw = centred sum + zero point x divisor`` divided by the divisor, rounded half
    away from zero (C's truncating ``(raw +- div / 2) / div``)."""
    raw = centred_sums + zero_point * np.asarray(div, np.int64)
    half = np.asarray(div, np.int64) // 2
    return np.where(raw > 0, (raw + half) // div, -((half - raw) // div))


class _Window(Op):
    """What max and average pooling share: their lowering and their kernel's arguments."""
    keeps_quant = True
    dims_1d: tuple = ()  # the targets among ``aten`` that pool a 1-D signal
    int8_rounds = False  # its int8 kernel divides with rounding (lw_round_div)

    def lower(self, lw, node, a):
        dims = 1 if node.target in self.dims_1d else 2
        if pair(a.get("dilation", 1), dims) != (1,) * dims:
            raise lw.fail(node, "dilated pooling is not supported")
        if a.get("divisor_override") is not None:
            raise lw.fail(node, "avg_pool with divisor_override")
        kernel = as2d(a["kernel_size"], dims, 1)
        lw.emit(node, self.name, [lw.tensor_of(a["self"], node)],
                attrs=dict(kernel=kernel, stride=as2d(a["stride"], dims, 1) if a["stride"] else kernel,
                           padding=as2d(a["padding"], dims, 0), ceil_mode=bool(a["ceil_mode"]),
                           count_include_pad=bool(a.get("count_include_pad", True))))

    def emit(self, e, node, extra=()):
        if e.cmsis and e.index in e.cmsis.mapped:
            from ..cmsis import emit_pool
            emit_pool(e, node)
            return
        a, src = node.attrs, node.inputs[0]
        e.use("window", *(["fixed", "round_div"] if e.int8 and self.int8_rounds else []), f"{self.name}_{e.sfx}")
        e.call(f"{self.name}_{e.sfx}", e.at(src), *e.shape(src), e.at(node.output), *e.shape(node.output)[1:],
               *a["kernel"], *a["stride"], *a["padding"], *extra)


@register_op
class MaxPool(_Window):
    name = "maxpool"
    supports = ("MaxPool1d/2d",)
    aten = (A.max_pool2d.default, A.max_pool1d.default, A.max_pool2d_with_indices.default)
    dims_1d = (A.max_pool1d.default,)

    def run(self, node, xs):
        a = node.attrs
        return F.max_pool2d(xs[0], a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"])

    def run_int8(self, node, q, xs, qin, qout):
        a = node.attrs
        return F.max_pool2d(torch.from_numpy(xs[0].astype(np.float64)), a["kernel"], a["stride"], a["padding"],
                            ceil_mode=a["ceil_mode"]).to(torch.int64).numpy()


@register_op
class AvgPool(_Window):
    name = "avgpool"
    supports = ("AvgPool1d/2d",)
    aten = (A.avg_pool2d.default, A.avg_pool1d.default)
    dims_1d = (A.avg_pool1d.default,)
    int8_rounds = True

    def run(self, node, xs):
        a = node.attrs
        return F.avg_pool2d(xs[0], a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"],
                            count_include_pad=a["count_include_pad"])

    def run_int8(self, node, q, xs, qin, qout):
        a = node.attrs
        sums = F.avg_pool2d(torch.from_numpy(centred(xs, qin)[0]).double(), a["kernel"], a["stride"], a["padding"],
                            ceil_mode=a["ceil_mode"], count_include_pad=a["count_include_pad"],
                            divisor_override=1).round().to(torch.int64).numpy()
        return tflite_average(sums, pool_divisors(xs[0].shape[2:], sums.shape[2:], a), qin[0].zero_point)

    def emit(self, e, node):
        zp = [e.zp(node.inputs[0])] if e.int8 else []
        super().emit(e, node, [int(node.attrs["count_include_pad"]), *zp])


@register_op
class Gap(Op):
    """Global average pooling. int8: unlike the windowed pools it has its own output scale (TensorFlow Lite's MEAN):
    the pooled vector spans a far narrower range than the feature map, and a head regressing from it (landmarks)
    lost up to 4 input pixels when it kept the input's step. y = round_shift(centred sum x m, n) + zy with
    m / 2^n = s_in / (s_out x H x W)."""
    name = "gap"
    supports = ("global average pooling",)

    @classmethod
    def append(cls, lw, node, src: str) -> None:
        """One global average of ``src`` (its plane size kept for the int8 constants, which see no shapes)."""
        _, h, w = lw.graph.tensors[src].shape
        lw.emit(node, cls.name, [src], attrs={"plane": h * w})

    @lowers(A.adaptive_avg_pool2d.default, A.adaptive_avg_pool1d.default, A._adaptive_avg_pool2d.default)
    def lower_adaptive(self, lw, node, a):
        src = lw.tensor_of(a["self"], node)
        c, h, w = lw.graph.tensors[src].shape
        oc, oh, ow = per_sample(val(node).shape, lw.where(node))
        if (oh, ow) == (1, 1):
            self.append(lw, node, src)
        elif (oh, ow) == (h, w):
            lw.alias(node, src)
        elif h % oh == 0 and w % ow == 0:
            k = (h // oh, w // ow)
            lw.emit(node, "avgpool", [src], attrs=dict(kernel=k, stride=k, padding=(0, 0), ceil_mode=False,
                                                       count_include_pad=True))
        else:
            raise lw.fail(node, f"adaptive pooling from {h}x{w} to {oh}x{ow} has uneven windows")

    def run(self, node, xs):
        return xs[0].mean(dim=(2, 3), keepdim=True)

    def quantize(self, node, qin, qout):
        m, n = fixed_point(qin[0].scale / (qout.scale * node.attrs["plane"]))
        return QNode(mult=np.array([m], np.int64), shift=np.array([n], np.int64))

    def run_int8(self, node, q, xs, qin, qout):
        sums = centred(xs, qin)[0].sum(axis=(2, 3), keepdims=True)
        return round_shift(sums * int(q.mult[0]), int(q.shift[0])) + qout.zero_point

    def emit(self, e, node):
        if e.cmsis and e.index in e.cmsis.mapped:
            from ..cmsis import emit_pool
            emit_pool(e, node)
            return
        src = node.inputs[0]
        c, h, w = e.shape(src)
        e.use(*(["fixed"] if e.int8 else []), f"gap_{e.sfx}")
        q = e.qnode if e.int8 else None
        e.call(f"gap_{e.sfx}", e.at(src), c, h * w, e.at(node.output),
               *([e.zp(src), e.zp(node.output), f"{int(q.mult[0])}LL", int(q.shift[0])] if e.int8 else []))
