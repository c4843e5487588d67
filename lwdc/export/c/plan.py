"""Static memory plan: every activation gets a fixed offset in one arena, chosen from tensor lifetimes.

Step 0 loads the input, node i runs at step i + 1, and the output is read at the last step. A buffer is live from
the step that writes it to the last step that reads it (views share their source's buffer, a channel slice at an
offset into it, and keep all of it live). Elementwise nodes (``Op.may_write_over_input``: add, standalone
activations, a per-channel affine conv) write over an input that dies at that step and is a whole buffer, not a part view. Buffers are
then placed largest first at the lowest offset that no buffer with an overlapping lifetime occupies ("greedy by
size", as TFLite Micro does). The lower bound is the largest total of buffers live at any one step: no placement
can use less.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ir import Graph
from .registry import op_for


@dataclass
class MemoryPlan:
    offsets: dict[str, int]  # storage -> byte offset in the arena
    buffer_of: dict[str, str]  # IR storage -> the buffer it was merged into (in-place ops)
    sizes: dict[str, int]  # buffer -> bytes
    arena_bytes: int
    lower_bound_bytes: int  # the largest live set at any step
    naive_bytes: int  # every activation in its own buffer
    scratch_bytes: int  # outside the arena: int32 accumulators (int8 builds), patch rows of dense convs (float32)

    def offset(self, graph: Graph, tensor: str) -> int:
        return self.offsets[self.buffer_of[graph.tensors[tensor].storage]]

    @property
    def peak_ram_bytes(self) -> int:
        return self.arena_bytes + self.scratch_bytes

    def summary(self) -> dict:
        return {"arena_bytes": self.arena_bytes, "scratch_bytes": self.scratch_bytes,
                "peak_ram_bytes": self.peak_ram_bytes, "lower_bound_bytes": self.lower_bound_bytes,
                "naive_bytes": self.naive_bytes,
                "arena_over_lower_bound": round(self.arena_bytes / max(self.lower_bound_bytes, 1), 4)}


def _align(n: int, to: int) -> int:
    return -(-n // to) * to


@dataclass
class Lifetimes:
    """Which buffer each storage lives in (in-place ops merge an output into a dying input), their sizes in
    bytes and the steps each is live for: step 0 loads the input, node i runs at step i + 1."""
    buffer_of: dict[str, str]
    sizes: dict[str, int]
    life: dict[str, tuple[int, int]]
    naive_bytes: int
    steps: int

    def live_bytes(self) -> list[int]:
        """Bytes of buffers live at each step: the most any placement must hold then."""
        return [sum(self.sizes[b] for b, (a, z) in self.life.items() if a <= step <= z) for step in range(self.steps)]


def lifetimes(graph: Graph, element_bytes: int, in_place: bool = True) -> Lifetimes:
    t = graph.tensors
    sizes = {s: n * element_bytes for s, n in graph.storage_sizes().items()}  # a view takes no buffer of its own
    for tensor in t.values():               # sign bits between binary layers (ops/binary.py)
        if tensor.packed_bytes is not None:
            sizes[tensor.storage] = tensor.packed_bytes
    last_step = len(graph.nodes) + 1
    first = {t[graph.input].storage: 0}
    last = {t[graph.input].storage: 0, t[graph.output].storage: last_step}
    for step, node in enumerate(graph.nodes, start=1):
        first.setdefault(t[node.output].storage, step)
        for name in node.inputs:
            last[t[name].storage] = max(last.get(t[name].storage, 0), step)
    for s in first:
        last.setdefault(s, first[s])
    naive = sum(sizes[s] for s in first)

    buffer_of = {s: s for s in first}
    if in_place:
        for step, node in enumerate(graph.nodes, start=1):
            out = t[node.output].storage
            if not op_for(node.op).may_write_over_input(node) or out == t[graph.output].storage:
                continue
            for name in node.inputs:
                src = buffer_of[t[name].storage]
                whole = t[name].size * element_bytes == sizes[src]  # a part view may be read after it is overwritten
                if whole and last[src] == step and sizes[src] == sizes[out] and src != t[graph.input].storage:
                    buffer_of[out] = src
                    last[src] = last[out]
                    break
    buffers = sorted(set(buffer_of.values()))
    return Lifetimes(buffer_of, {b: sizes[b] for b in buffers}, {b: (first[b], last[b]) for b in buffers}, naive,
                     last_step + 1)


def scratch_elements(graph: Graph, int8: bool = True) -> list[int]:
    """4-byte elements each node's kernel needs outside the arena: int32 accumulators (int8 builds) or floats
    (float32 builds)."""
    return [(op_for(n.op).scratch if int8 else op_for(n.op).float_scratch)(graph, n) for n in graph.nodes]


def plan_memory(graph: Graph, element_bytes: int, align: int = 16, in_place: bool = True) -> MemoryPlan:
    """Offsets for all activations of ``graph`` with ``element_bytes`` per value (4 float32, 1 int8)."""
    lt = lifetimes(graph, element_bytes, in_place)
    buffer_of, sizes, life, naive = lt.buffer_of, lt.sizes, lt.life, lt.naive_bytes
    buffers = sorted(sizes)

    lower = max(lt.live_bytes())
    offsets: dict[str, int] = {}
    for b in sorted(buffers, key=lambda b: (-sizes[b], life[b][0])):
        busy = sorted((offsets[o], offsets[o] + sizes[o]) for o in offsets
                      if life[o][0] <= life[b][1] and life[b][0] <= life[o][1])
        offset = 0
        for start, end in busy:
            if offset + sizes[b] <= start:
                break
            offset = max(offset, _align(end, align))
        offsets[b] = offset
    arena = _align(max(offsets[b] + sizes[b] for b in buffers), align)
    scratch = 4 * max(scratch_elements(graph, int8=element_bytes == 1), default=0)
    return MemoryPlan(offsets, buffer_of, dict(sizes), arena, lower, naive, scratch)
