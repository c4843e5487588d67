"""Run a lowered graph in float32 with torch: the check that lowering kept the model's function, and the
source of activation ranges for int8 calibration."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .graph import Graph, Node


def activate(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "none":
        return x
    return {"relu": torch.relu, "relu6": lambda v: v.clamp(0, 6), "sigmoid": torch.sigmoid,
            "silu": F.silu}[kind](x)


def pool_out_size(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output length, including its rule that a last window must start inside the input."""
    span = n + 2 * p - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def run_node(node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    """One node on (N, C, H, W) float tensors, with the same semantics the C kernels implement."""
    a = node.attrs
    if node.op == "conv":
        y = F.conv2d(xs[0], torch.from_numpy(node.weight), torch.from_numpy(node.bias), a["stride"], a["padding"],
                     a["dilation"], a["groups"])
    elif node.op == "maxpool":
        y = F.max_pool2d(xs[0], a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"])
    elif node.op == "avgpool":
        y = F.avg_pool2d(xs[0], a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"],
                         count_include_pad=a["count_include_pad"])
    elif node.op == "gap":
        y = xs[0].mean(dim=(2, 3), keepdim=True)
    elif node.op == "add":
        y = xs[0] + xs[1]
    elif node.op == "concat":
        y = torch.cat(xs, dim=1)
    elif node.op == "pad_channels":
        y = F.pad(xs[0], (0, 0, 0, 0, a["before"], a["after"]))
    elif node.op == "act":
        return activate(xs[0], node.act)
    else:  # pragma: no cover - lowering produces only the ops above
        raise ValueError(f"unknown node op {node.op!r}")
    return activate(y, node.act)


def run_float(graph: Graph, x: torch.Tensor, keep: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
    """The graph's output for a batch ``x`` shaped like the model's input; with ``keep``, every storage's
    value as (N, size) rows instead (what calibration observes)."""
    n = x.shape[0]
    store = {graph.tensors[graph.input].storage: x.detach().float().reshape(n, -1)}

    def value(name: str) -> torch.Tensor:
        t = graph.tensors[name]
        return store[t.storage].reshape(n, *t.shape)

    with torch.no_grad():
        for node in graph.nodes:
            out = run_node(node, [value(i) for i in node.inputs])
            store[graph.tensors[node.output].storage] = out.reshape(n, -1)
    if keep:
        return store
    return store[graph.tensors[graph.output].storage].reshape(n, *graph.output_shape)
