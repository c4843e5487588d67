"""Post-training static int8 quantisation and its integer reference.

Weights: per output channel, symmetric (zero point 0), int8 in [-127, 127]. Activations: per tensor, asymmetric
int8 with the range observed on calibration data (always containing 0, so zero padding is exact). Biases: int32
at scale s_in * s_w. Every real multiplier M is a fixed-point pair (m, n) with M ~= m / 2^n, m in [2^30, 2^31),
and every rescale is ``round_shift(v, n) = floor((v + 2^(n-1)) / 2^n)`` on 64-bit integers: the C kernels do
exactly this, and ``run_int8`` below does it in numpy, so the two agree bit for bit.

Ops that only move or compare values (max/avg pooling, global average, channel padding, views) keep their input's
quantisation; concat rescales each input to the output's range; sigmoid/SiLU are 256-entry lookup tables.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .graph import Graph
from .reference import activate, run_float

KEEPS_QUANT = ("maxpool", "avgpool", "gap", "pad_channels")


@dataclass(frozen=True)
class QParams:
    scale: float  # a float32 value
    zero_point: int

    @staticmethod
    def from_range(lo: float, hi: float) -> "QParams":
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = float(np.float32(max(hi - lo, 1e-8) / 255.0))
        zp = int(np.clip(round(-128 - lo / scale), -128, 127))
        return QParams(scale, zp)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """float32 x / scale, rounded half to even, as C's ``lrintf(x / scale)`` does."""
        q = np.rint(np.asarray(x, np.float32) / np.float32(self.scale)).astype(np.int64) + self.zero_point
        return np.clip(q, -128, 127).astype(np.int8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return np.float32(self.scale) * (q.astype(np.int32) - self.zero_point).astype(np.float32)


def fixed_point(multiplier: float) -> tuple[int, int]:
    """(m, n) with multiplier ~= m / 2^n, m in [2^30, 2^31) where possible and 1 <= n <= 62."""
    if multiplier <= 0:
        return 0, 1
    mant, exp = math.frexp(multiplier)
    m, n = round(mant * 2 ** 31), 31 - exp
    if m == 2 ** 31:
        m, n = m // 2, n - 1
    if n > 62:
        m, n = round(multiplier * 2 ** 62), 62
    if n < 1:
        raise ValueError(f"rescale factor {multiplier:.3g} is too large for int8 fixed point")
    return int(m), int(n)


def round_shift(v: np.ndarray, n) -> np.ndarray:
    """floor((v + 2^(n-1)) / 2^n) on int64 (numpy's >> on signed integers floors, as the C helper does)."""
    n = np.asarray(n, np.int64)
    return (v + (np.int64(1) << (n - 1))) >> n


@dataclass
class QNode:
    """The integer constants of one node."""
    weight: np.ndarray | None = None  # int8 (O, C/g, KH, KW)
    bias: np.ndarray | None = None  # int32 (O,)
    mult: np.ndarray | None = None  # int32 per output channel (conv) or per input (add, concat)
    shift: np.ndarray | None = None
    lut: np.ndarray | None = None  # int8 (256,) for act nodes
    clamp: tuple[int, int] = (-128, 127)


@dataclass
class QuantizedGraph:
    graph: Graph
    params: dict[str, QParams]  # storage -> activation quantisation
    nodes: list[QNode] = field(default_factory=list)

    def qp(self, tensor: str) -> QParams:
        return self.params[self.graph.tensors[tensor].storage]


def _mse_range(values: np.ndarray, lo: float, hi: float, steps: int = 40) -> tuple[float, float]:
    """The clipping range, shrunk from (lo, hi) by a common factor, that minimises the mean squared
    quantise-dequantise error on ``values``: a few outliers no longer stretch the step for everything else."""
    best, best_err = (lo, hi), np.inf
    for a in np.linspace(1.0, 1.0 / steps, steps):
        qp = QParams.from_range(lo * a, hi * a)
        err = float(np.mean((qp.dequantize(qp.quantize(values)) - values) ** 2))
        if err < best_err:
            best, best_err = (lo * a, hi * a), err
    return best


def calibrate(graph: Graph, batches: Iterable[torch.Tensor], method: str = "minmax",
              sample: int = 65536, seed: int = 0) -> dict[str, tuple[float, float]]:
    """The range of every storage over the calibration batches (the float reference runs the graph).

    ``minmax`` takes the observed extremes; ``mse`` picks, per tensor, the clipping range with the least
    quantisation error on up to ``sample`` observed values (better when a few activations are outliers)."""
    if method not in ("minmax", "mse"):
        raise ValueError(f"calibration method {method!r}: choose 'minmax' or 'mse'")
    ranges: dict[str, tuple[float, float]] = {}
    seen: dict[str, list[np.ndarray]] = {}
    rng = np.random.default_rng(seed)
    for x in batches:
        for storage, v in run_float(graph, x, keep=True).items():
            lo, hi = float(v.min()), float(v.max())
            old = ranges.get(storage, (lo, hi))
            ranges[storage] = (min(old[0], lo), max(old[1], hi))
            if method == "mse":
                flat = v.reshape(-1).numpy()
                seen.setdefault(storage, []).append(rng.choice(flat, min(sample, flat.size), replace=False))
    if not ranges:
        raise ValueError("calibration needs at least one batch of inputs")
    if method == "mse":
        for storage, parts in seen.items():
            values = np.concatenate(parts)
            values = rng.choice(values, min(sample, values.size), replace=False)
            ranges[storage] = _mse_range(values, *ranges[storage])
    return ranges


def _act_clamp(act: str, qp: QParams) -> tuple[int, int]:
    lo, hi = -128, 127
    if act in ("relu", "relu6"):
        lo = max(lo, qp.zero_point)
    if act == "relu6":
        hi = min(hi, qp.zero_point + round(6.0 / qp.scale))
    return lo, hi


def quantize(graph: Graph, ranges: dict[str, tuple[float, float]]) -> QuantizedGraph:
    """Choose all integer constants from calibrated ranges."""
    storage = {name: t.storage for name, t in graph.tensors.items()}
    params = {s: QParams.from_range(*r) for s, r in ranges.items()}
    for node in graph.nodes:  # pooling and padding pass their input's quantisation through
        if node.op in KEEPS_QUANT:
            params[storage[node.output]] = params[storage[node.inputs[0]]]
    qg = QuantizedGraph(graph, params)
    for node in graph.nodes:
        qin, qout = [qg.qp(i) for i in node.inputs], qg.qp(node.output)
        q = QNode(clamp=_act_clamp(node.act, qout) if node.op in ("conv", "add") else (-128, 127))
        if node.op == "conv":
            w = node.weight.astype(np.float64)
            w_scale = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127.0
            w_scale = np.where(w_scale > 0, w_scale, 1.0).astype(np.float32).astype(np.float64)
            q.weight = np.clip(np.rint(w / w_scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
            bias_scale = qin[0].scale * w_scale
            q.bias = np.clip(np.rint(node.bias / bias_scale), -2 ** 31, 2 ** 31 - 1).astype(np.int32)
            pairs = [fixed_point(s / qout.scale) for s in bias_scale]
            q.mult, q.shift = (np.array(v, np.int64) for v in zip(*pairs))
        elif node.op == "add":
            ratios = [p.scale / qout.scale for p in qin]
            n = int(np.clip(30 - math.floor(math.log2(max(ratios))), 1, 62))
            q.mult = np.array([round(r * 2 ** n) for r in ratios], np.int64)
            q.shift = np.array([n], np.int64)
        elif node.op == "concat":
            pairs = [fixed_point(p.scale / qout.scale) for p in qin]
            q.mult, q.shift = (np.array(v, np.int64) for v in zip(*pairs))
        elif node.op == "act":
            real = torch.from_numpy(qin[0].dequantize(np.arange(-128, 128)))
            q.lut = qout.quantize(activate(real, node.act).numpy())
        qg.nodes.append(q)
    return qg


def pool_divisors(in_hw: tuple[int, int], out_hw: tuple[int, int], a: dict) -> np.ndarray:
    """PyTorch's avg_pool divisor at every output position: the window clipped to the padded input (or to the
    input itself when padding is not counted); a ceil-mode overhang past the padding never counts."""
    per_axis = []
    for n, out, k, s, p in zip(in_hw, out_hw, a["kernel"], a["stride"], a["padding"]):
        start = np.arange(out) * s - p
        end = np.minimum(start + k, n + p)
        if not a["count_include_pad"]:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        per_axis.append((end - start).astype(np.int64))
    return np.outer(*per_axis)


def run_node_int8(qg: QuantizedGraph, i: int, xs: list[np.ndarray]) -> np.ndarray:
    """One node on int8 arrays (N, C, H, W), in exactly the C kernel's integer arithmetic."""
    node, q = qg.graph.nodes[i], qg.nodes[i]
    qin, qout = [qg.qp(t) for t in node.inputs], qg.qp(node.output)
    a, lo, hi = node.attrs, q.clamp[0], q.clamp[1]
    centred = [x.astype(np.int64) - p.zero_point for x, p in zip(xs, qin)]
    if node.op == "conv":  # float64 convolution of integers below 2^53 is exact
        acc = F.conv2d(torch.from_numpy(centred[0]).double(), torch.from_numpy(q.weight.astype(np.float64)), None,
                       a["stride"], a["padding"], a["dilation"], a["groups"]).round().to(torch.int64).numpy()
        acc = (acc + q.bias.reshape(1, -1, 1, 1)).astype(np.int32).astype(np.int64)  # the C accumulator is int32
        y = round_shift(acc * q.mult.reshape(1, -1, 1, 1), q.shift.reshape(1, -1, 1, 1)) + qout.zero_point
    elif node.op == "add":
        y = round_shift(centred[0] * q.mult[0] + centred[1] * q.mult[1], q.shift[0]) + qout.zero_point
    elif node.op == "concat":
        y = np.concatenate([round_shift(c * m, n) + qout.zero_point if (p != qout) else c + p.zero_point
                            for c, p, m, n in zip(centred, qin, q.mult, q.shift)], axis=1)
    elif node.op == "maxpool":
        y = F.max_pool2d(torch.from_numpy(xs[0].astype(np.float64)), a["kernel"], a["stride"], a["padding"],
                         ceil_mode=a["ceil_mode"]).to(torch.int64).numpy()
    elif node.op in ("avgpool", "gap"):
        if node.op == "gap":
            sums, div = centred[0].sum(axis=(2, 3), keepdims=True), np.int64(np.prod(xs[0].shape[2:]))
        else:
            sums = F.avg_pool2d(torch.from_numpy(centred[0]).double(), a["kernel"], a["stride"], a["padding"],
                                ceil_mode=a["ceil_mode"], count_include_pad=a["count_include_pad"],
                                divisor_override=1).round().to(torch.int64).numpy()
            div = pool_divisors(xs[0].shape[2:], sums.shape[2:], a)
        y = (2 * sums + div) // (2 * div) + qout.zero_point
    elif node.op == "pad_channels":
        y = np.pad(xs[0].astype(np.int64), ((0, 0), (a["before"], a["after"]), (0, 0), (0, 0)),
                   constant_values=qout.zero_point)
    elif node.op == "act":
        y = q.lut[xs[0].astype(np.int64) + 128].astype(np.int64)
    else:  # pragma: no cover
        raise ValueError(node.op)
    return np.clip(y, lo, hi).astype(np.int8)


def run_int8(qg: QuantizedGraph, xq: np.ndarray) -> np.ndarray:
    """The int8 graph on a batch of already-quantised inputs; returns the int8 output (N, *output_shape)."""
    g, n = qg.graph, xq.shape[0]
    store = {g.tensors[g.input].storage: xq.reshape(n, -1)}
    for i, node in enumerate(g.nodes):
        xs = [store[g.tensors[t].storage].reshape(n, *g.tensors[t].shape) for t in node.inputs]
        store[g.tensors[node.output].storage] = run_node_int8(qg, i, xs).reshape(n, -1)
    return store[g.tensors[g.output].storage].reshape(n, *g.output_shape)


def run_quantized(qg: QuantizedGraph, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float in, float out through the int8 graph: what the C library's ``model_run`` computes."""
    g = qg.graph
    xq = qg.qp(g.input).quantize(np.asarray(x, np.float32))
    return qg.qp(g.output).dequantize(run_int8(qg, xq))
