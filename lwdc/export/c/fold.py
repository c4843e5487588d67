"""Re-parameterisation at export. RepVGG, MobileOne and ACNet blocks train parallel linear branches on one input
(a 3x3 conv, a 1x1 conv, a 3x1 and a 1x3 conv, an identity BatchNorm, the input itself) and sum them; a sum of
convolutions of one input is one convolution whose kernel is the sum of theirs, each zero-padded to the union
of their windows. This pass, run on the lowered graph, merges every such ``add`` with its branches into one
conv, so the C runs one kernel per block instead of one per branch plus the adds."""
from __future__ import annotations

import math

import numpy as np

from .ir import Graph, Node

__all__ = ["fold_parallel_convs"]


def fold_parallel_convs(graph: Graph) -> Graph:
    """Merge, until none is left, every add of two convs (or a conv and its own input) reading one tensor with
    dilation 1 and the same stride, whose outputs nothing else reads, unless the merged conv would cost more
    than its branches; chains of adds merge fully."""
    while True:
        for i, node in enumerate(graph.nodes):
            if node.op == "add":
                merged = _merge(graph, node)
                if merged is not None:
                    merged_conv, branches = merged
                    graph.nodes[i] = merged_conv
                    graph.nodes[:] = [n for n in graph.nodes if all(n is not b for b in branches)]
                    for branch in branches:
                        del graph.tensors[branch.output]
                    break
        else:
            return graph


def _identity(channels: int) -> Node:
    """The input itself as a conv: a depthwise 1x1 with weight 1."""
    return Node("conv", [], "", "", weight=np.ones((channels, 1, 1, 1), np.float32),
                bias=np.zeros(channels, np.float32),
                attrs=dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=channels))


def _branches(graph: Graph, add: Node) -> tuple[str, list[tuple[Node, bool]]] | None:
    """The tensor both branches of ``add`` read and, per input, (the conv computing it from that tensor, whether
    it is a real node to remove); None unless each input is such a conv, with no activation and read by nothing
    else, or that tensor itself."""
    producers = {n.output: n for n in graph.nodes}

    def branch(t: str, source: str) -> tuple[Node, bool] | None:
        if t == source:
            return _identity(graph.tensors[t].shape[0]), False
        conv = producers.get(t)
        if (conv is None or conv.op != "conv" or conv.inputs[0] != source or conv.act != "none"
                or t == graph.output or [n is add for n in graph.consumers(t)] != [True]):
            return None
        return conv, True

    if add.inputs[0] == add.inputs[1]:
        return None
    for t in add.inputs:  # the shared input is the input of one of the convs
        if t in producers and producers[t].op == "conv":
            source = producers[t].inputs[0]
            found = [branch(u, source) for u in add.inputs]
            if None not in found:
                return source, found  # type: ignore[return-value]
    return None


def _merge(graph: Graph, add: Node) -> tuple[Node, list[Node]] | None:
    shapes = {graph.tensors[t].shape for t in (*add.inputs, add.output)}
    found = _branches(graph, add) if len(shapes) == 1 else None
    if found is None:
        return None
    source, branches = found
    convs = [c for c, _ in branches]
    channels_in, (_, out_h, out_w) = graph.tensors[source].shape[0], graph.tensors[add.output].shape
    strides = {c.attrs["stride"] for c in convs}
    if len(strides) != 1 or any(c.attrs["dilation"] != (1, 1) for c in convs):
        return None
    (stride,) = strides
    # per axis, the input offsets (relative to output position * stride) the union of the windows covers
    first = [min(-c.attrs["padding"][d] for c in convs) for d in (0, 1)]
    last = [max(-c.attrs["padding"][d] + c.weight.shape[2 + d] - 1 for c in convs) for d in (0, 1)]
    kernel = [b - a + 1 for a, b in zip(first, last)]
    padding = tuple(-a for a in first)
    in_h, in_w = graph.tensors[source].shape[1:]
    if ((in_h + 2 * padding[0] - kernel[0]) // stride[0] + 1, (in_w + 2 * padding[1] - kernel[1]) // stride[1] + 1) \
            != (out_h, out_w):
        return None
    groups = math.gcd(*(c.attrs["groups"] for c in convs))
    weight = np.zeros((convs[0].weight.shape[0], channels_in // groups, *kernel))
    if weight.size > sum(c.weight.size for c in convs):  # e.g. a depthwise 3x3 plus a dense 1x1: cheaper apart
        return None
    bias = np.zeros(convs[0].weight.shape[0])
    for conv, coefficient in zip(convs, (1.0, add.attrs.get("alpha", 1.0))):
        kh, kw = conv.weight.shape[2:]
        top, left = (-conv.attrs["padding"][d] - first[d] for d in (0, 1))
        weight[:, :, top:top + kh, left:left + kw] += coefficient * _regroup(conv.weight, conv.attrs["groups"],
                                                                             groups, channels_in)
        bias += coefficient * conv.bias
    merged = Node("conv", [source], add.output, add.where, weight=weight.astype(np.float32),
                  bias=bias.astype(np.float32), act=add.act,
                  attrs=dict(stride=stride, padding=padding, dilation=(1, 1), groups=groups))
    return merged, [c for c, real in branches if real]


def _regroup(weight: np.ndarray, groups: int, to_groups: int, channels_in: int) -> np.ndarray:
    """A conv weight (O, C/groups, KH, KW) as the same conv with ``to_groups`` groups (a divisor of ``groups``):
    (O, C/to_groups, KH, KW), zero outside each output channel's own input channels."""
    out_channels = weight.shape[0]
    per_in, per_out = channels_in // groups, out_channels // groups
    to_in, to_out = channels_in // to_groups, out_channels // to_groups
    out = np.zeros((out_channels, to_in, *weight.shape[2:]))
    for o in range(out_channels):
        start = (o // per_out) * per_in - (o // to_out) * to_in  # its first input channel, within its new group
        out[o, start:start + per_in] = weight[o]
    return out
