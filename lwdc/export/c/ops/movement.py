"""Ops that only move values: split/chunk/slice/narrow/select/unbind, and padding on any dim but the batch.

A per-sample tensor is (C, H, W) in C order, so a channel range (or a row range of a one-channel tensor) is one
block of memory: those become views at an offset into their source's buffer (``ir.Tensor.offset``), with no
code and no memory. Everything else (spatial slices, steps, padding) is one ``gather`` kernel driven by a table
of source indices per axis, -1 for "the fill value": the tables hold all the op-specific logic, so the float
reference, the integer reference and the C are the same few lines for every such op, and a gather of a gather
composes into one. int8 keeps the input's quantisation; a constant pad value is rounded to the input's int8
grid (and saturates outside its range).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..emit import _float_literal
from ..graph import bind, val
from ..registry import Op, lowers, op_for, register_op

A = torch.ops.aten
# per-sample axis (of (C, H, W)) of each dim of an (N, C, H, W), (N, C, L) or (N, F) tensor; None: the batch
_SAMPLE_AXIS = {4: (None, 0, 1, 2), 3: (None, 0, 2), 2: (None, 0)}


def sample_axis(dim: int, rank: int) -> int | None:
    return _SAMPLE_AXIS[rank][dim % rank]


def identity_index(shape: tuple[int, int, int]) -> list[np.ndarray]:
    return [np.arange(n) for n in shape]


def gather(x, index: list[np.ndarray], fill):
    """``x[:, c, h, w]`` for the per-axis source indices, ``fill`` where one is -1 (torch or numpy, (N, C, H, W))."""
    if isinstance(x, torch.Tensor):
        x, index = F.pad(x, (0, 1, 0, 1, 0, 1), value=fill), [torch.as_tensor(i) for i in index]
    else:
        x = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 1)), constant_values=fill)
    return x[:, index[0]][:, :, index[1]][:, :, :, index[2]]  # index -1 picks the fill appended above


_GATHER = """/* y[c][h][w] = x[ci[c]][hi[h]][wi[w]], or fill where a source index is -1; a NULL table is the identity.
 * Slices, padding and nearest upsampling are all this, with different tables. */
static void lw_gather_{sfx}(const {t} *x, int H, int W, {t} *y, int OC, int OH, int OW,
                          const int32_t *ci, const int32_t *hi, const int32_t *wi, {t} fill)
{{
    int c, h, w;
    for (c = 0; c < OC; ++c) {{
        const int ic = ci ? ci[c] : c;
        for (h = 0; h < OH; ++h) {{
            const int ih = hi ? hi[h] : h, skip = ic < 0 || ih < 0;
            const {t} *row = skip ? x : x + ((long)ic * H + ih) * W;
            for (w = 0; w < OW; ++w) {{
                const int iw = wi ? wi[w] : w;
                *y++ = skip || iw < 0 ? fill : row[iw];
            }}
        }}
    }}
}}
"""


class Gather(Op):
    """Base of the table-driven movement ops: ``attrs`` holds ``index`` (three int arrays, the source index along
    C, H and W of every output position on that axis, -1 = fill) and ``fill`` (a float)."""
    keeps_quant = True
    kernels = {f"gather_{sfx}": _GATHER.format(sfx=sfx, t=t) for sfx, t in (("f32", "float"), ("q8", "int8_t"))}

    def append(self, lw, node, src: str, index: list[np.ndarray], fill: float = 0.0) -> None:
        """A gather node, or the gather producing ``src`` rewritten to do both in one pass (a crop is two
        slices, a pad then a slice...): no buffer and no pass for the intermediate."""
        if not math.isfinite(fill):
            raise lw.fail(node, f"padding with {fill}")
        attrs = dict(index=[np.asarray(i, np.int64) for i in index], fill=float(fill))
        first = lw.fusable(src)
        if first is not None and isinstance(op_for(first.op), Gather):
            merged = self.compose(first.attrs, attrs)
            if merged is not None:
                first.attrs = merged
                lw.graph.tensors[src].shape = tuple(len(i) for i in merged["index"])
                lw.alias(node, src)
                return
        lw.emit(node, self.name, [src], attrs=attrs)

    @staticmethod
    def compose(first: dict, then: dict) -> dict | None:
        """The tables of gathering ``then`` from the result of gathering ``first``; None when both would fill,
        with different values."""
        index = [np.where(i < 0, -1, f[np.maximum(i, 0)]) for f, i in zip(first["index"], then["index"])]
        fills_then = any((i < 0).any() for i in then["index"])
        fills_first = any((f[i[i >= 0]] < 0).any() for f, i in zip(first["index"], then["index"]))
        if fills_then and fills_first and first["fill"] != then["fill"]:
            return None
        return dict(index=index, fill=then["fill"] if fills_then else first["fill"])

    @staticmethod
    def int8_fill(node, qp) -> int:
        return int(qp.quantize(np.float32(node.attrs["fill"])))

    def run(self, node, xs):
        return gather(xs[0], node.attrs["index"], node.attrs["fill"])

    def run_int8(self, node, q, xs, qin, qout):
        return gather(xs[0].astype(np.int64), node.attrs["index"], self.int8_fill(node, qin[0]))

    def emit(self, e, node):
        src, index = node.inputs[0], node.attrs["index"]
        _, h, w = e.shape(src)
        tables = [e.array(axis, "int32_t", i) if not np.array_equal(i, np.arange(len(i))) else "NULL"
                  for axis, i in zip("chw", index)]
        fill = self.int8_fill(node, e.qp(src)) if e.int8 else _float_literal(node.attrs["fill"])
        e.use(f"gather_{e.sfx}")
        e.call(f"gather_{e.sfx}", e.at(src), h, w, e.at(node.output), *(len(i) for i in index), *tables, fill)


@register_op
class Slice(Gather):
    name = "slice"
    supports = ("split/chunk/narrow/slicing/select (channel ranges are views; other dims or steps copy)",)
    _SPLITS = (A.split.Tensor, A.split_with_sizes.default, A.unbind.int)

    @lowers(*_SPLITS)
    def lower_split(self, lw, node, a):
        if a["dim"] % len(val(a["self"]).shape) == 0:
            raise lw.fail(node, "splitting the batch dimension")
        # nothing to do yet: each result is taken where ``operator.getitem`` asks for it (``lower_result``)

    def lower_result(self, lw, node, multi, i: int) -> None:
        """Result ``i`` of a split or unbind: a range of the source along the split dim."""
        a = bind(multi)
        if multi.target is A.unbind.int:
            self.take(lw, node, a["self"], a["dim"], i, i + 1, 1)
            return
        dim = a["dim"] % len(val(a["self"]).shape)
        start = sum(int(v.shape[dim]) for v in multi.meta["val"][:i])
        self.take(lw, node, a["self"], dim, start, start + int(multi.meta["val"][i].shape[dim]), 1)

    @lowers(A.slice.Tensor)
    def lower_slice(self, lw, node, a):
        self.take(lw, node, a["self"], a["dim"], a["start"], a["end"], a["step"])

    @lowers(A.select.int)
    def lower_select(self, lw, node, a):
        n = int(val(a["self"]).shape[a["dim"]])
        i = a["index"] % n
        self.take(lw, node, a["self"], a["dim"], i, i + 1, 1)

    def take(self, lw, node, x, dim: int, start, stop, step) -> None:
        """``x`` restricted to ``start:stop:step`` along ``dim`` (PyTorch's clamping): an alias when that is all
        of it, a view when it is contiguous, else a gather node."""
        shape = val(x).shape
        picked = np.arange(int(shape[dim]))[slice(start, stop, step)]
        axis = sample_axis(dim, len(shape))
        full = len(picked) == shape[dim]
        if axis is None and not full:
            raise lw.fail(node, "slicing the batch dimension")
        if len(picked) == 0:
            raise lw.fail(node, "an empty slice")
        src = lw.tensor_of(x, node)
        if full:
            lw.alias(node, src)
            return
        t = lw.graph.tensors[src]
        if step == 1 and math.prod(t.shape[:axis]) == 1:  # one block of memory: a view, no copy
            lw.new_tensor(node, storage=t.storage, offset=t.offset + int(picked[0]) * math.prod(t.shape[axis + 1:]))
            return
        index = identity_index(t.shape)
        index[axis] = picked
        self.append(lw, node, src, index)


def pad_index(n: int, before: int, after: int, mode: str) -> np.ndarray:
    """Source index of every padded position along one axis of length ``n`` (negative pads crop)."""
    i = np.arange(-before, n + after)
    if mode == "constant":
        return np.where((i >= 0) & (i < n), i, -1)
    if mode == "reflect":
        i = np.abs(i)
        return np.where(i >= n, 2 * (n - 1) - i, i)
    if mode == "replicate":
        return np.clip(i, 0, n - 1)
    return i % n  # circular


@register_op
class Pad(Gather):
    name = "pad"
    supports = ("ZeroPad/ConstantPad (any value), ReflectionPad, ReplicationPad, circular padding",)
    aten = (A.constant_pad_nd.default, A.pad.default)

    def lower(self, lw, node, a):
        mode, value = a.get("mode", "constant"), a.get("value") or 0.0
        rank = len(val(a["self"]).shape)
        pads = [int(p) for p in a["pad"]] + [0] * (2 * rank - len(a["pad"]))
        pairs = {rank - 1 - k: (pads[2 * k], pads[2 * k + 1]) for k in range(rank)}  # dim -> (before, after)
        if pairs[0] != (0, 0):
            raise lw.fail(node, "padding the batch dimension")
        if mode not in ("constant", "reflect", "replicate", "circular"):
            raise lw.fail(node, f"padding mode {mode!r}")
        src = lw.tensor_of(a["self"], node)
        channel = pairs[1]
        if mode == "constant" and value == 0 and min(channel) >= 0 and all(pairs[d] == (0, 0) for d in pairs if d > 1):
            lw.emit(node, "pad_channels", [src], attrs=dict(before=channel[0], after=channel[1]))  # a memset
            return
        index = identity_index(lw.graph.tensors[src].shape)
        for dim, (before, after) in pairs.items():
            if dim:
                index[sample_axis(dim, rank)] = pad_index(len(index[sample_axis(dim, rank)]), before, after, mode)
        self.append(lw, node, src, index, value if mode == "constant" else 0.0)
