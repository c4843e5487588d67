"""The exporter's tiny IR: per-sample tensors of shape (C, H, W) and a list of kernel calls over them.

1-D signals are (C, 1, L) and vectors (F, 1, 1), so one set of kernels serves all of them. What a node *means*
lives in its op's entry (``registry.op_for(node.op)``); this module only holds the data."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .registry import op_for


class UnsupportedLayerError(ValueError):
    """The model holds something the C exporter cannot lower; the message names the layer and its place."""


@dataclass
class Tensor:
    """A per-sample activation; ``storage`` names the buffer it lives in (views share their source's) and
    ``offset`` where it starts there, in elements: a channel range of a (C, H, W) tensor is contiguous, so a
    split or slice along channels is a view at an offset, not a copy."""
    name: str
    shape: tuple[int, int, int]
    storage: str
    offset: int = 0
    # a binary layer's output that only the next binary layer reads is stored as that layer's input bits
    # (ops/binary.py): its buffer's bytes, whatever the build's element size
    packed_bytes: int | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def take(self, rows):
        """This tensor's values, (N, C, H, W), from its storage's values as (N, elements) rows (numpy or torch)."""
        return rows[:, self.offset:self.offset + self.size].reshape(len(rows), *self.shape)


@dataclass
class Node:
    """One kernel call. ``where`` is the module path the op came from, for messages and comments."""
    op: str  # a registered op name: conv | maxpool | avgpool | gap | add | concat | pad_channels | act | ...
    inputs: list[str]
    output: str
    where: str
    attrs: dict = field(default_factory=dict)
    weight: np.ndarray | None = None  # conv: (O, C/groups, KH, KW) float32
    bias: np.ndarray | None = None  # conv: (O,) float32
    act: str = "none"  # ops that fuse an activation: none | relu | relu6; act node: the function
    # conv with a BatchNorm (or other per-channel scale) folded in: weight == unscaled * channel_scale per output
    # channel, computed in float32, so a coded export can store the layer's own few values and one scale each
    unscaled: np.ndarray | None = None
    channel_scale: np.ndarray | None = None


@dataclass
class Graph:
    """The lowered model: nodes in execution order over named tensors, one input and one output."""
    tensors: dict[str, Tensor]
    nodes: list[Node]
    input: str
    output: str
    input_shape: tuple[int, ...]  # as PyTorch sees one sample, e.g. (3, 32, 32) or (1, 16000)
    output_shape: tuple[int, ...]

    def storage_sizes(self) -> dict[str, int]:
        """Elements of every storage: as far as its furthest view reaches."""
        sizes: dict[str, int] = {}
        for t in self.tensors.values():
            sizes[t.storage] = max(sizes.get(t.storage, 0), t.offset + t.size)
        return sizes

    def consumers(self, name: str) -> list[Node]:
        storage = self.tensors[name].storage
        return [n for n in self.nodes if any(self.tensors[i].storage == storage for i in n.inputs)]

    @property
    def macs(self) -> int:
        return sum(op_for(n.op).macs(self, n) for n in self.nodes)

    @property
    def params(self) -> int:
        return sum(op_for(n.op).params(n) for n in self.nodes)
