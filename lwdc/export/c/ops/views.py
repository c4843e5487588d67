"""Ops that only relabel a tensor (views, flatten, squeeze, dropout and clones in eval, the first result of a
multi-result op): they alias their input's buffer and emit no code. A multi-result op whose entry has a
``lower_result`` method (split) lowers each result itself."""
from __future__ import annotations

import operator

import torch

from ..graph import val
from ..registry import Op, lowering_for, lowers, register_op

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
        owner = getattr(lowering_for(a[0].target), "__self__", None)
        if hasattr(owner, "lower_result"):
            owner.lower_result(lw, node, a[0], a[1])
            return
        if a[1] != 0:
            raise lw.fail(node, "only the first result of a multi-output op is supported")
        lw.alias(node, lw.tensor_of(a[0], node))
