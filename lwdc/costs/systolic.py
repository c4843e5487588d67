"""An analytical model of a systolic array of R x C processing elements (PEs): cycles, utilisation, traffic.

Why: on a systolic array a depthwise convolution has little data reuse and leaves most PEs idle, so MACs
overstate what it saves. This model prices each convolution the way a weight- or output-stationary array runs
it, so a search can minimise cycles on such hardware (spec ``systolic[:RxC][:ws|os][:risa]``).

**Lowering.** A convolution with G groups is G independent GEMMs (im2col). One group's GEMM multiplies
P x W inputs by W x F weights, with P = output pixels (times the batch), W = (C_in / G) * prod(kernel) (the
window) and F = C_out / G (filters per group). A ``Linear`` layer is a 1 x 1 convolution on one pixel.

**Mapping** (the operand mapping of SCALE-Sim, Samajdar et al., ISPASS 2020; ``systolic_compute_ws.py`` /
``_os.py`` of github.com/scalesim-project/scale-sim-v2):

    dataflow | spatial rows Sr | spatial columns Sc | streamed (temporal) T
    ws       | W (window)      | F (filters)        | P (pixels)
    os       | P (pixels)      | F (filters)        | W (window)

The GEMM is cut into folds of at most R x C: ``folds = ceil(Sr / R) * ceil(Sc / C)``. One fold takes

    ws: cycles_fold = 2R + C + T - 2        os: cycles_fold = R + C + T - 2

WS: R cycles to shift the weights in, then T input vectors stream through with a skew of R - 1 rows and the
partial sums drain through C - 1 columns (SCALE-Sim's demand matrices: R prefix + T + C - 1 suffix, skewed by
R - 1). OS: no weight preload; both operands stream for T cycles with a skew of R - 1 and C - 1. The fill and
drain use the whole array's R and C even in a partly used fold, as in SCALE-Sim. Folds and groups run one
after another (no overlap of one fold's drain with the next one's fill: an upper bound of a real array):

    cycles = G * ceil(Sr / R) * ceil(Sc / C) * cycles_fold
    utilisation = MACs / (cycles * R * C),        MACs = G * P * W * F

Checked against SCALE-Sim 3.0.0 (``pip install scalesim``, 32 x 32, 64 KiB SRAMs; tests/test_costs_systolic.py
lists the layers): its "Total Cycles" equal ours minus one (it counts from cycle 0) for standard, strided,
pointwise and per-channel depthwise layers in both dataflows, and its SRAM read counts equal ours.

(SCALE-Sim reports the mean of per-fold utilisations instead; ours is the whole layer's share of busy PE
cycles.) ``mapping`` = MACs / (folds * T * R * C) is the share of PEs holding work while data streams, i.e. the
utilisation without fill and drain. A depthwise 3 x 3 layer (G = C_in, W = 9, F = 1) occupies a 9 x 1 column of
the array per fold: on 32 x 32, 9 of 1,024 PEs. Pooling, skip, BatchNorm and activations cost zero cycles here
(they run on a vector unit beside the array).

**RiSA** (Cho, ACM TECS 2021, "RiSA: A Reinforced Systolic Array for Depthwise Convolutions and Embedded Tensor
Reshaping"). We modelled the mechanism from the paper's abstract only (the full text was not available to us).
The abstract says that RiSA raises the PE utilisation of depthwise layers with small additions to a plain array.
Our assumption of how: in a depthwise layer the array's otherwise idle columns take *other channels*. Each
column gets its own channel's input stream, and its partial-sum chain stays within the column. So
``floor(C / F)`` channels share a fold, and ``G`` becomes ``ceil(G / floor(C / F))`` in the cycle formula. Rows
are not split between channels (that would cut the vertical accumulation chain), so on 32 x 32 a 3 x 3
depthwise layer fills at most 9/32 of the PEs. Other layers are unchanged; grouped convolutions that are not
depthwise are not packed.

**Traffic** (elements, times ``word_bytes`` for bytes). SRAM: WS reads every weight once, re-streams the
inputs once per column fold (``P * W * ceil(F / C)`` per group) and writes partial sums once per row fold
(``P * F * ceil(W / R)``, re-reading all but the first). OS re-streams inputs per column fold and weights per row
fold (``F * W * ceil(P / R)``) and writes each output once. DRAM, to first order: each tensor is fetched once if
it fits its SRAM, else once per re-stream; WS spills partial sums (write + read) when the output does not fit the
output SRAM and there is more than one row fold. (SCALE-Sim instead fetches the padded input and writes every
partial sum to DRAM, so its DRAM figures are higher.) Double buffering, bank conflicts and bandwidth stalls are
not modelled: cycles are compute cycles.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..ops import LayerSpec
from ..modes import eval_mode

__all__ = ["SystolicArray", "ConvShape", "LayerEstimate", "estimate", "conv_shapes", "LayerCall", "SystolicCost"]


@dataclass(frozen=True)
class SystolicArray:
    rows: int = 32
    cols: int = 32
    dataflow: str = "ws"          # "ws" (weight-stationary) or "os" (output-stationary)
    ifmap_sram_kb: float = 64.0   # SCALE-Sim's default configuration: 32 x 32, 64 KiB per operand SRAM
    filter_sram_kb: float = 64.0
    ofmap_sram_kb: float = 64.0
    word_bytes: int = 1           # int8 operands
    risa: bool = False

    def __post_init__(self):
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"the array needs at least 1 x 1 PEs, got {self.rows} x {self.cols}")
        if self.dataflow not in ("ws", "os"):
            raise ValueError(f"dataflow must be 'ws' (weight-stationary) or 'os' (output-stationary), got {self.dataflow!r}")


@dataclass(frozen=True)
class ConvShape:
    """One convolution (or linear layer) as the array sees it; per sample unless ``batch`` says otherwise."""

    in_ch: int
    out_ch: int
    groups: int
    kernel: tuple[int, ...]
    in_size: tuple[int, ...]
    out_size: tuple[int, ...]
    batch: int = 1

    @property
    def window(self) -> int:
        return self.in_ch // self.groups * math.prod(self.kernel)

    @property
    def filters(self) -> int:
        return self.out_ch // self.groups

    @property
    def pixels(self) -> int:
        return math.prod(self.out_size) * self.batch

    @property
    def macs(self) -> int:
        return self.groups * self.pixels * self.window * self.filters

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_ch

    @property
    def kind(self) -> str:
        k = "x".join(map(str, self.kernel))
        if self.depthwise:
            return f"depthwise{k}"
        if self.groups > 1:
            return f"conv{k}_g{self.groups}"
        if math.prod(self.kernel) == 1:
            return "linear" if self.kernel == (1,) and self.out_size == (1,) else "pointwise"
        return f"conv{k}"


@dataclass
class LayerEstimate:
    cycles: int
    macs: int
    utilisation: float          # MACs / (cycles * R * C)
    mapping: float              # MACs / (folds * T * R * C): spatial use, without fill and drain
    folds: int
    sram_reads: dict            # elements: ifmap, filter, ofmap (partial sums read back)
    sram_writes: int            # elements of ofmap (partial sums included)
    dram_bytes: dict            # ifmap, filter, ofmap

    def as_dict(self) -> dict:
        return asdict(self)


def estimate(shape: ConvShape, array: SystolicArray = SystolicArray()) -> LayerEstimate:
    """Cycles, utilisation and traffic of one layer on ``array`` (formulas in the module docstring)."""
    R, C = array.rows, array.cols
    P, W, F, G = shape.pixels, shape.window, shape.filters, shape.groups
    sr, sc, t = (W, F, P) if array.dataflow == "ws" else (P, F, W)
    row_folds, col_folds = math.ceil(sr / R), math.ceil(sc / C)
    passes = G
    if array.risa and shape.depthwise:
        passes = math.ceil(G / max(1, C // F))       # idle columns take other channels
    folds = passes * row_folds * col_folds
    cycles = folds * ((2 * R if array.dataflow == "ws" else R) + C + t - 2)
    macs = shape.macs
    if array.dataflow == "ws":
        reads = {"ifmap": G * P * W * col_folds, "filter": G * W * F, "ofmap": G * P * F * (row_folds - 1)}
        writes = G * P * F * row_folds
    else:
        reads = {"ifmap": G * P * W * col_folds, "filter": G * F * W * row_folds, "ofmap": 0}
        writes = G * P * F
    b = array.word_bytes
    unique_in = shape.in_ch * math.prod(shape.in_size) * shape.batch
    unique_w, unique_out = G * W * F, shape.out_ch * P

    def fits(elements: int, kb: float) -> bool:
        return elements * b <= kb * 1024

    dram = {
        "ifmap": b * unique_in * (1 if fits(unique_in, array.ifmap_sram_kb) else col_folds),
        "filter": b * unique_w * (1 if array.dataflow == "ws" or fits(unique_w, array.filter_sram_kb) else row_folds),
        "ofmap": b * unique_out * (1 + (2 * (row_folds - 1) if array.dataflow == "ws"
                                        and not fits(unique_out, array.ofmap_sram_kb) else 0)),
    }
    return LayerEstimate(cycles, macs, macs / (cycles * R * C), macs / (folds * t * R * C), folds, reads, writes, dram)


def _shape_of(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> ConvShape:
    if isinstance(module, nn.Linear):
        pixels = math.prod(x.shape[1:-1]) if x.dim() > 2 else 1
        return ConvShape(module.in_features, module.out_features, 1, (1,), (pixels,), (pixels,))
    return ConvShape(module.in_channels, module.out_channels, module.groups, tuple(module.kernel_size),
                     tuple(x.shape[2:]), tuple(y.shape[2:]))


class LayerCall(NamedTuple):
    name: str
    module: nn.Module
    shape: ConvShape
    in_shape: tuple[int, ...]     # of one sample, as the module received it


@torch.no_grad()
def conv_shapes(model: nn.Module, example_input: torch.Tensor) -> list[LayerCall]:
    """Every Conv1d / Conv2d / Linear call of one eval-mode forward pass on one sample, in call order."""
    found: list[LayerCall] = []

    def hook(mod, inp, out, name):
        found.append(LayerCall(name, mod, _shape_of(mod, inp[0], out), tuple(inp[0].shape[1:])))

    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: hook(mod, inp, out, name))
             for name, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    try:
        with eval_mode(model):
            model(example_input[:1])
    finally:
        for h in hooks:
            h.remove()
    return found


class SystolicCost:
    """Compute cycles per sample on a systolic array (spec ``systolic[:RxC][:ws|os][:risa]``)."""

    name, unit = "systolic", "cycles"

    def __init__(self, array: SystolicArray | None = None, **array_options):
        self.array = array or SystolicArray(**array_options)

    @classmethod
    def from_spec(cls, args: list[str], **kwargs) -> "SystolicCost":
        for arg in args:
            rows, sep, cols = arg.partition("x")
            if sep and rows.isdigit() and cols.isdigit():
                kwargs.update(rows=int(rows), cols=int(cols))
            elif arg in ("ws", "os"):
                kwargs["dataflow"] = arg
            elif arg == "risa":
                kwargs["risa"] = True
            else:
                raise ValueError(f"systolic option {arg!r} not understood; use RxC (e.g. 32x32), ws or os, risa")
        return cls(**kwargs)

    def __repr__(self) -> str:
        return f"SystolicCost({self.array})"

    def cycles(self, model: nn.Module, example_input: torch.Tensor) -> int:
        return sum(estimate(call.shape, self.array).cycles for call in conv_shapes(model, example_input))

    def branch_cost(self, spec: LayerSpec, op_name: str, branch: nn.Module) -> float:
        return float(self.cycles(branch, torch.zeros(1, spec.in_ch, *spec.in_size)))

    def network_cost(self, model: nn.Module, example_input: torch.Tensor) -> float:
        return float(self.cycles(model, example_input))
