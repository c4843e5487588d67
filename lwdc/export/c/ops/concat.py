"""Channel concatenation and channel zero-padding (the skip branch of a block that widens, as lwdc derives
it; ``movement.Pad`` lowers every F.pad and picks this for zero channels appended): both copy whole channel
planes. int8: concat rescales an input whose quantisation differs from the output's; padding keeps its input's
and fills with the zero point."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..fixed import QNode, centred, fixed_point, round_shift
from ..graph import val
from ..registry import Op, register_op

A = torch.ops.aten


@register_op
class Concat(Op):
    name = "concat"
    supports = ("channel concat",)
    aten = (A.cat.default,)

    def lower(self, lw, node, a):
        if a["dim"] not in (1, -len(val(node).shape) + 1):
            raise lw.fail(node, f"concatenation along dim {a['dim']} (only channels, dim 1)")
        lw.emit(node, self.name, [lw.tensor_of(v, node) for v in a["tensors"]])

    def run(self, node, xs):
        return torch.cat(xs, dim=1)

    def quantize(self, node, qin, qout):
        mult, shift = (np.array(v, np.int64) for v in zip(*[fixed_point(p.scale / qout.scale) for p in qin]))
        return QNode(mult=mult, shift=shift)

    def run_int8(self, node, q, xs, qin, qout):
        return np.concatenate([round_shift(c * m, n) + qout.zero_point if p != qout else c + p.zero_point
                               for c, p, m, n in zip(centred(xs, qin), qin, q.mult, q.shift)], axis=1)

    def emit(self, e, node):
        offset = 0
        for j, t in enumerate(node.inputs):
            size, dst = e.size(t), f"{e.at(node.output)} + {offset}"
            if e.int8 and e.qp(t) != e.qp(node.output):
                e.use("fixed", "rescale_q8")
                e.call("rescale_q8", e.at(t), dst, size, e.zp(t), e.zp(node.output), f"{e.qnode.mult[j]}LL",
                       e.qnode.shift[j])
            else:
                e.line(f"memcpy({dst}, {e.at(t)}, {size} * sizeof(*A));")
            offset += size


@register_op
class PadChannels(Op):
    name = "pad_channels"
    supports = ("channel zero-padding",)
    keeps_quant = True

    def run(self, node, xs):
        return F.pad(xs[0], (0, 0, 0, 0, node.attrs["before"], node.attrs["after"]))

    def run_int8(self, node, q, xs, qin, qout):
        a = node.attrs
        return np.pad(xs[0].astype(np.int64), ((0, 0), (a["before"], a["after"]), (0, 0), (0, 0)),
                      constant_values=qout.zero_point)

    def emit(self, e, node):
        src = node.inputs[0]
        c, h, w = e.shape(src)
        e.use(f"pad_{e.sfx}")
        e.call(f"pad_{e.sfx}", e.at(src), e.size(src), node.attrs["before"] * h * w, node.attrs["after"] * h * w,
               e.at(node.output), *([e.zp(src)] if e.int8 else []))
