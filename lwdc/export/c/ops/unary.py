"""A base for elementwise ops of one tensor: a new one (say ``neg``) is a name, the ATen targets, the torch
function and a C expression (which may read one float node attribute, as LeakyReLU its slope); int8 comes for
free as a 256-entry table of the function on the input's grid."""
from __future__ import annotations

import numpy as np
import torch

from ..emit import _float_literal as float_literal
from ..fixed import QNode
from ..registry import Op


class Unary(Op):
    in_place = True
    c_expr = ""  # the float result as a C expression of ``const float v`` (the input value)
    c_param = ""  # a node attribute the expression reads as ``p`` (a float argument of the kernel), if any

    def fn(self, node, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def lower(self, lw, node, args: dict) -> None:
        lw.emit(node, self.name, [lw.tensor_of(next(iter(args.values())), node)])

    def run(self, node, xs):
        return self.fn(node, xs[0])

    def quantize(self, node, qin, qout):
        real = torch.from_numpy(qin[0].dequantize(np.arange(-128, 128)))
        return QNode(lut=qout.quantize(self.fn(node, real).numpy()))

    def run_int8(self, node, q, xs, qin, qout):
        return q.lut[xs[0].astype(np.int64) + 128].astype(np.int64)

    def emit(self, e, node):
        src, dst, n = e.at(node.inputs[0]), e.at(node.output), e.size(node.output)
        if e.int8:
            e.use("lut_q8")
            e.call("lut_q8", src, dst, n, e.array("lut", "int8_t", e.qnode.lut))
        else:
            self.emit_float(e, node, src, dst, n)

    def emit_float(self, e, node, src: str, dst: str, n: int) -> None:
        e.use(f"{self.name}_f32")
        param = [float_literal(node.attrs[self.c_param])] if self.c_param else []
        e.call(f"{self.name}_f32", src, dst, n, *param)

    @property
    def kernels(self) -> dict[str, str]:
        if not self.c_expr:
            return {}
        param = ", const float p" if self.c_param else ""
        return {f"{self.name}_f32": f"static void lw_{self.name}_f32(const float *x, float *y, int n{param})\n{{\n"
                                    f"    int i;\n    for (i = 0; i < n; ++i) {{\n        const float v = x[i];\n"
                                    f"        y[i] = {self.c_expr};\n    }}\n}}\n"}
