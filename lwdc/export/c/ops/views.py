"""Ops that only relabel a tensor (views, flatten, squeeze, dropout and clones in eval, the first result of a
multi-result op): they alias their input's buffer and emit no code."""
from __future__ import annotations

import operator

import torch

from ..graph import val
from ..registry import Op, lowers, register_op

A = torch.ops.aten


@register_op
class View(Op):
    name = "view"  # never a node: every lowering here aliases
    supports = ("flatten/view", "Dropout/Identity")

    @lowers(A.view.default, A.reshape.default, A._unsafe_view.default, A.flatten.using_ints, A.squeeze.dim,
            A.squeeze.dims, A.unsqueeze.default, A.clone.default, A.alias.default, A.detach.default,
            A.dropout.default, A.contiguous.default, A.lift_fresh_copy.default)
    def lower_view(self, lw, node, a):
        x = next(iter(a.values()))
        if a.get("train"):
            raise lw.fail(node, "dropout in training mode; call model.eval() first")
        if val(node).shape[0] != val(x).shape[0]:
            raise lw.fail(node, "a view that mixes the batch dimension")
        lw.alias(node, lw.tensor_of(x, node))

    @lowers(operator.getitem)
    def lower_getitem(self, lw, node, a):
        if a[1] != 0:
            raise lw.fail(node, "only the first result of a multi-output op is supported")
        lw.alias(node, lw.tensor_of(a[0], node))
