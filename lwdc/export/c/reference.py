"""Run a lowered graph in float32 with torch: the check that lowering kept the model's function, and the
source of activation ranges for int8 calibration. Each node runs its op entry's ``run``."""
from __future__ import annotations

import torch

from .ir import Graph, Node
from .registry import op_for


def run_node(node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    """One node on (N, C, H, W) float tensors, with the same semantics the C kernels implement."""
    return op_for(node.op).run(node, xs)


def run_float(graph: Graph, x: torch.Tensor, keep: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
    """The graph's output for a batch ``x`` shaped like the model's input; with ``keep``, every storage's
    value as (N, size) rows instead (what calibration observes)."""
    n = x.shape[0]
    store = {graph.tensors[graph.input].storage: x.detach().float().reshape(n, -1)}

    def value(name: str) -> torch.Tensor:  # a view is a slice of its storage's row
        t = graph.tensors[name]
        return t.take(store[t.storage])

    with torch.no_grad():
        for node in graph.nodes:
            out = run_node(node, [value(i) for i in node.inputs])
            store[graph.tensors[node.output].storage] = out.reshape(n, -1)
    if keep:
        return store
    return value(graph.output).reshape(n, *graph.output_shape)
