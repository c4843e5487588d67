"""The op table: every IR op is one ``Op`` entry holding all the exporter knows about it, so a new op is one
class in one file (as a TFLite Micro kernel registration or an onnx2c node class) and the generic passes
(lowering, float and integer references, quantisation, memory planning, C emission) never branch on op names.

An entry says which ATen targets it lowers (``aten`` for ``self.lower``, or ``@lowers`` on other methods),
how it runs in float (``run``) and in int8 (``quantize`` picks the integer constants, ``run_int8`` is the exact
integer arithmetic of its kernel), and how it is written as C (``emit``, with any kernel source in ``kernels``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from .fixed import QNode, QParams
from .safe import check_identifier

if TYPE_CHECKING:
    from .ir import Graph, Node

_OPS: dict[str, "Op"] = {}
_LOWERINGS: dict[object, Callable] = {}  # ATen target (or operator.getitem) -> bound lowering method


def lowers(*targets) -> Callable:
    """Mark an ``Op`` method as the lowering of these ATen targets; it is called as ``method(lw, node, args)``."""
    def mark(fn: Callable) -> Callable:
        fn._lowers = targets
        return fn
    return mark


class Op:
    """One kind of IR node. Subclasses override what applies; the defaults fit an op with no weights."""
    name: str = ""
    supports: tuple[str, ...] = ()  # what the 'not supported' message lists, e.g. ("MaxPool1d/2d",)
    aten: tuple = ()  # targets lowered by ``self.lower``
    fuses_act = False  # a ReLU/ReLU6 right after it folds into its output (node.act, an int8 clamp)
    keeps_quant = False  # its output keeps the input's int8 scale and zero point (it moves or compares values)
    in_place = False  # elementwise: it may write over an input that dies at this node
    kernels: dict[str, str] = {}  # C sections it adds to kernels.c, by the name ``emit`` passes to ``e.use``

    def may_write_over_input(self, node: Node) -> bool:
        """Whether this node's kernel may write its output over an input that dies here (the memory plan then
        gives both one buffer): elementwise ops always; a conv only as a per-channel affine map."""
        return self.in_place

    def lower(self, lw, node: torch.fx.Node, args: dict) -> None:
        raise NotImplementedError(f"{self.name}: no lowering")

    def run(self, node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
        """Float reference on (N, C, H, W) tensors, before any fused activation."""
        raise NotImplementedError(f"{self.name}: no float reference")

    def quantize(self, node: Node, qin: list[QParams], qout: QParams) -> QNode:
        return QNode()

    def run_int8(self, node: Node, q: QNode, xs: list[np.ndarray], qin: list[QParams],
                 qout: QParams) -> np.ndarray:
        """Integer reference: int64 (N, C, H, W) values before the final clamp to ``q.clamp``."""
        raise NotImplementedError(f"{self.name}: no int8 reference")

    def emit(self, e, node: Node) -> None:
        """Append this node's C statements through the emitter ``e`` (``e.int8`` says which build)."""
        raise NotImplementedError(f"{self.name}: no C emission")

    def macs(self, graph: Graph, node: Node) -> int:
        return 0

    def params(self, node: Node) -> int:
        return 0

    def scratch(self, graph: Graph, node: Node) -> int:
        """int32 accumulators its int8 kernel needs outside the arena."""
        return 0

    def float_scratch(self, graph: Graph, node: Node) -> int:
        """floats its float32 kernel needs outside the arena (e.g. a row of input patches)."""
        return 0


def register_op(op):
    """Add an op (an ``Op`` subclass or instance) to the table; usable as a class decorator."""
    entry = op() if isinstance(op, type) else op
    check_identifier(entry.name, "op name")
    found = {t: entry.lower for t in entry.aten}
    for attr in dir(type(entry)):
        for t in getattr(getattr(type(entry), attr), "_lowers", ()):
            found[t] = getattr(entry, attr)
    taken = [str(t) for t in found if t in _LOWERINGS] + ([entry.name] if entry.name in _OPS else [])
    if taken:
        raise ValueError(f"op {entry.name!r}: {', '.join(taken)} already registered; unregister_op() it first")
    _OPS[entry.name] = entry
    _LOWERINGS.update(found)
    return op


def unregister_op(name: str) -> None:
    entry = _OPS.pop(name)
    for target in [t for t, fn in _LOWERINGS.items() if getattr(fn, "__self__", None) is entry]:
        del _LOWERINGS[target]


def op_for(name: str) -> Op:
    return _OPS[name]


def lowering_for(target) -> Callable | None:
    return _LOWERINGS.get(target)


def supported() -> list[str]:
    return [s for entry in _OPS.values() for s in entry.supports]


def kernel_sources() -> dict[str, str]:
    return {k: v for entry in _OPS.values() for k, v in entry.kernels.items()}
