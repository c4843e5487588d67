"""RAM: the peak bytes of activations the generated C library needs (its static plan's arena plus the int8
kernels' int32 scratch), the limit a microcontroller's SRAM sets.

Peak RAM is not a sum over layers: it is the largest live set at any one step. LWDC's operators keep every
layer's input and output shapes, so a choice changes the live set only inside its own layer (a separable conv's
depthwise output, a skip that removes the layer's step), while the tensors that cross a layer (a residual
input) are the same whatever is chosen. So the peak decomposes into windows: per choice layer and branch, the
most bytes live while that layer's kernels run (``W[l, b]``), and the most live at steps outside every choice
layer (``F``); the network's peak is ``max(F, max_l W[l, b_l])``, and likewise for the scratch. One lowering per
branch position prices every layer at once (network k takes branch k everywhere), so a ResNet-20 with the default
operators costs six lowerings, not 118.

During the search the budget sees ``max(F, max_l E_p[W[l]])`` (differentiable in the gates; the gradient
reaches the layer that sets the peak); after derivation the real planner measures the derived network and has
the last word (``RamTable.measure``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ops import LayerSpec

__all__ = ["RamCost", "RamTable", "peak_ram_bytes"]

_BYTES = {"int8": 1, "float32": 4}


def _graph(model: nn.Module, example_input: torch.Tensor):
    from ..export.c.graph import lower
    was = model.training
    model.eval()
    try:
        return lower(model, example_input[:1].detach().float())
    finally:
        model.train(was)


def peak_ram_bytes(model: nn.Module, example_input: torch.Tensor, precision: str = "int8",
                   in_place: bool = True) -> int:
    """What ``lwdc export --format c`` would report as ``peak_ram_bytes`` for ``model``."""
    from ..export.c.plan import plan_memory
    return plan_memory(_graph(model, example_input), _BYTES[precision], in_place=in_place).peak_ram_bytes


@dataclass
class RamTable:
    """The windowed peak of one supernet: ``live[l]``/``scratch[l]`` hold ``W[l, b]`` per branch (bytes), ``fixed``
    the live peak outside every choice layer and ``fixed_scratch`` its scratch."""

    name: str
    unit: str
    live: dict[str, torch.Tensor]
    scratch: dict[str, torch.Tensor]
    fixed: float
    fixed_scratch: float
    reference: float                # the original network's real peak (the planner's arena + scratch)
    cost_model: "RamCost"
    example_input: torch.Tensor

    def __post_init__(self):
        # Per-branch working set of each layer (live + scratch): what a layer can give back when it sets the peak.
        self.layer_costs = {n: self.live[n] + self.scratch[n] for n in self.live}

    def _peak(self, per_layer) -> torch.Tensor:
        live = torch.tensor(float(self.fixed))
        scratch = torch.tensor(float(self.fixed_scratch))
        for w_live, w_scratch in per_layer.values():
            live, scratch = torch.maximum(live, w_live), torch.maximum(scratch, w_scratch)
        return (live + scratch) / self.reference

    def expected_ratio(self, supernet, temperature: float = 1.0) -> torch.Tensor:
        """Differentiable: the peak of the expected working set of each layer under softmax(alpha / temperature)."""
        per = {}
        for name, layer in supernet.choice_layers().items():
            p = layer.probabilities(temperature).cpu()
            per[name] = ((p * self.live[name]).sum(), (p * self.scratch[name]).sum())
        return self._peak(per)

    def ratio_of(self, picks: dict[str, int]) -> float:
        """The peak of the network that takes branch ``picks[name]`` at every layer."""
        return float(self._peak({n: (self.live[n][i], self.scratch[n][i]) for n, i in picks.items()}))

    def chosen_ratio(self, supernet) -> float:
        return self.ratio_of({n: layer.chosen for n, layer in supernet.choice_layers().items()})

    def ratio_if(self, supernet, name: str, index: int) -> float:
        """The peak if layer ``name`` took branch ``index``, plus a thousandth of the mean working set: when
        several layers share the peak, lightening one of them counts as progress toward lightening all."""
        picks = {n: layer.chosen for n, layer in supernet.choice_layers().items()}
        picks[name] = index
        mean = sum(float(self.layer_costs[n][i]) for n, i in picks.items()) / max(len(picks), 1)
        return self.ratio_of(picks) + 1e-3 * mean / self.reference

    def floor_ratio(self) -> float:
        """The smallest peak any choice reaches: the floor no budget can go under."""
        return self.ratio_of({n: int(torch.argmin(c)) for n, c in self.layer_costs.items()})

    def measure(self, model: nn.Module) -> float:
        """The real planner's peak of a derived network, as a ratio of the original's."""
        return self.cost_model.network_cost(model, self.example_input) / self.reference


class RamCost:
    """``ram[:int8|float32][:inplace|plain]``: peak activation bytes of the C library's static plan (int8 and
    in-place element-wise kernels by default, as ``lwdc export`` plans it; ``plain`` gives every kernel its own
    output buffer)."""

    name, unit = "ram", "bytes of activations"

    def __init__(self, precision: str = "int8", in_place: bool = True):
        if precision not in _BYTES:
            raise ValueError(f"ram precision {precision!r}: choose {' or '.join(_BYTES)}")
        self.precision, self.in_place = precision, in_place

    @classmethod
    def from_spec(cls, args: list[str], **_options) -> "RamCost":
        precision, in_place = "int8", True
        for arg in args:
            if arg in _BYTES:
                precision = arg
            elif arg in ("inplace", "plain"):
                in_place = arg == "inplace"
            else:
                raise ValueError(f"ram option {arg!r}: write ram[:int8|float32][:inplace|plain]")
        return cls(precision, in_place)

    def branch_cost(self, spec: LayerSpec, op_name: str, branch: nn.Module) -> float:
        raise TypeError("peak RAM is not a sum over layers; price it with RamCost.build_table")

    def network_cost(self, model: nn.Module, example_input: torch.Tensor) -> float:
        return float(peak_ram_bytes(model, example_input, self.precision, self.in_place))

    def build_table(self, supernet, original: nn.Module, example_input: torch.Tensor) -> RamTable:
        from ..derivation import derive
        from ..export.c.plan import lifetimes, scratch_elements
        if supernet.chains:
            raise ValueError("peak RAM cannot yet price width operators (width{p}): cutting a layer to the channels "
                             "the next one reads shrinks an activation the per-layer RAM table does not see; drop "
                             f"the width operators from the operator set for a RAM target or budget (layers: "
                             f"{', '.join(sorted(supernet.chains))})")
        layers = supernet.choice_layers()
        live = {n: torch.zeros(len(l.op_names)) for n, l in layers.items()}
        scratch = {n: torch.zeros(len(l.op_names)) for n, l in layers.items()}
        fixed, fixed_scratch = 0.0, 0.0
        element = _BYTES[self.precision]
        for k in range(max((len(l.op_names) for l in layers.values()), default=1)):
            picks = {n: l.op_names[k] if k < len(l.op_names) else l.op_names[0] for n, l in layers.items()}
            graph = _graph(derive(supernet, picks), example_input)
            per_step = lifetimes(graph, element, self.in_place).live_bytes()
            node_scratch = [4 * s if element == 1 else 0 for s in scratch_elements(graph)]
            for step, load in enumerate(per_step):
                node = graph.nodes[step - 1] if 1 <= step <= len(graph.nodes) else None
                owner = _owner(node.where, layers) if node is not None else None
                s = node_scratch[step - 1] if node is not None else 0
                if owner is None:
                    fixed, fixed_scratch = max(fixed, load), max(fixed_scratch, s)
                elif k < len(layers[owner].op_names):
                    live[owner][k] = max(float(live[owner][k]), load)
                    scratch[owner][k] = max(float(scratch[owner][k]), s)
        reference = self.network_cost(original, example_input)
        return RamTable(self.name, self.unit, live, scratch, fixed, fixed_scratch, reference, self,
                        example_input[:1].detach())


def _owner(path: str, layers: dict) -> str | None:
    """The choice layer a lowered kernel belongs to (its module path is the layer's or inside it)."""
    for name in layers:
        if path == name or path.startswith(name + "."):
            return name
    return None
