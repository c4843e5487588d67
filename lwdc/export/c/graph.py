"""Lower a plain PyTorch CNN to a short list of C-friendly nodes.

The model goes through ``torch.export`` (functional ATen ops, so in-place calls and module wrappers disappear),
then each ATen call is handed to the op entry registered for its target (``registry``), which adds nodes to the
IR (``ir``), folds itself into the node before it (BatchNorm, ReLU) or aliases a tensor (views, dropout). This
module is the machinery those entries share: argument binding, constants, tensors, fusion and error messages.
"""
from __future__ import annotations

import torch
from torch import nn

from ...modes import eval_mode
from .ir import Graph, Node, Tensor, UnsupportedLayerError
from .registry import lowering_for, supported

__all__ = ["Graph", "Node", "Tensor", "UnsupportedLayerError", "lower", "Lowering"]


def val(node: torch.fx.Node) -> torch.Tensor:
    """The example value an fx node computed (the first one of a multi-output op)."""
    v = node.meta["val"]
    return v[0] if isinstance(v, (tuple, list)) else v


def per_sample(shape: tuple[int, ...], where: str) -> tuple[int, int, int]:
    dims = tuple(int(d) for d in shape[1:])
    if len(dims) == 3:
        return dims  # type: ignore[return-value]
    if len(dims) == 2:
        return (dims[0], 1, dims[1])
    if len(dims) == 1:
        return (dims[0], 1, 1)
    raise UnsupportedLayerError(f"{where}: tensors of rank {len(shape)} are not supported (need (N, C, H, W), "
                                f"(N, C, L) or (N, F))")


def pair(v, n: int = 2) -> tuple[int, ...]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return tuple(int(x) for x in (v * n if len(v) == 1 else v))


def as2d(v, dims: int, fill: int) -> tuple[int, int]:
    """Spatial arguments of a 1-D op become (fill, v) on the (C, 1, L) view; 2-D ones pass through."""
    return (fill, pair(v, 1)[0]) if dims == 1 else pair(v)  # type: ignore[return-value]


def bind(node: torch.fx.Node) -> dict:
    """The call's arguments by schema name with defaults filled in, so op entries never count positions; a
    plain Python callable (``operator.getitem``) gets its positional arguments as 0, 1, ..."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return {**dict(enumerate(node.args)), **node.kwargs}
    out = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args) and not arg.kwarg_only:
            out[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            out[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
    return out


class Lowering:
    """State of one lowering pass, and the helpers op entries call (``lw`` in their ``lower`` methods)."""

    def __init__(self, program: torch.export.ExportedProgram):
        self.program = program
        self.consts = self._constants(program)
        self.graph = Graph({}, [], "", "", (), ())
        self.value: dict[str, str] = {}  # fx node name -> tensor name
        self.producer: dict[str, Node] = {}  # tensor name -> node writing it
        self.last_fx: dict[str, torch.fx.Node] = {}  # tensor name -> the fx node whose value it currently is

    @staticmethod
    def _constants(program) -> dict[str, torch.Tensor]:
        sig, out = program.graph_signature, {}
        for spec in sig.input_specs:
            if spec.kind.name in ("PARAMETER", "BUFFER"):
                out[spec.arg.name] = program.state_dict[spec.target]
            elif spec.kind.name == "CONSTANT_TENSOR":
                out[spec.arg.name] = program.constants[spec.target]
        return out

    @staticmethod
    def path(node: torch.fx.Node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        return (list(stack.values())[-1][0] or "<top>") if stack else node.name

    def where(self, node: torch.fx.Node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            return f"'{node.name}'"
        kind = list(stack.values())[-1][1]
        kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
        return f"'{self.path(node)}' ({kind.rsplit('.', 1)[-1]})"

    def fail(self, node: torch.fx.Node, why: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(f"layer {self.where(node)}, op {node.target}: {why}. The C exporter supports: "
                                     f"{', '.join(supported())}.")

    def const(self, arg, node: torch.fx.Node):
        """A stored parameter or buffer as a float32 numpy copy (None stays None)."""
        if arg is None:
            return None
        if isinstance(arg, torch.fx.Node) and arg.name in self.consts:
            return self.consts[arg.name].detach().float().numpy().copy()
        raise self.fail(node, "its weights are computed at run time, not stored parameters")

    def is_activation(self, arg) -> bool:
        return isinstance(arg, torch.fx.Node) and arg.name in self.value

    def tensor_of(self, arg, node: torch.fx.Node) -> str:
        if self.is_activation(arg):
            return self.value[arg.name]
        raise self.fail(node, "an input is a constant or a parameter, not an activation")

    def new_tensor(self, node: torch.fx.Node, storage: str | None = None) -> str:
        name = f"t{len(self.graph.tensors)}"
        self.graph.tensors[name] = Tensor(name, per_sample(val(node).shape, self.where(node)), storage or name)
        self.value[node.name] = name
        self.last_fx[name] = node
        return name

    def emit(self, node: torch.fx.Node, op: str, inputs: list[str], **kw) -> Node:
        out = self.new_tensor(node)
        ir = Node(op, inputs, out, self.path(node), **kw)
        self.graph.nodes.append(ir)
        self.producer[out] = ir
        return ir

    def fusable(self, tensor: str) -> Node | None:
        """The node producing ``tensor`` when its result feeds only the node being lowered and has no fused
        activation yet: the caller may fold itself into it."""
        ir = self.producer.get(tensor)
        if ir is None or ir.act != "none" or ir.output != tensor:
            return None
        return ir if len(self.last_fx[tensor].users) == 1 else None

    def alias(self, node: torch.fx.Node, tensor: str) -> None:
        """The op only relabels a tensor (view, flatten, dropout in eval, a fused op): no code, same buffer."""
        if self.graph.tensors[tensor].shape == per_sample(val(node).shape, self.where(node)):
            self.value[node.name] = tensor
            self.last_fx[tensor] = node
        else:
            self.new_tensor(node, storage=self.graph.tensors[tensor].storage)

    def lower(self) -> Graph:
        g = self.graph
        for node in self.program.graph.nodes:
            if node.op == "placeholder":
                if node.name in self.consts:
                    continue
                if g.input:
                    raise UnsupportedLayerError("the C exporter takes models with one input tensor")
                g.input = self.new_tensor(node)
                g.input_shape = tuple(int(d) for d in val(node).shape[1:])
            elif node.op == "output":
                outs = node.args[0]
                if len(outs) != 1:
                    raise UnsupportedLayerError(f"the C exporter takes models with one output tensor; this one "
                                                f"returns {len(outs)}")
                g.output = self.tensor_of(outs[0], node)
                g.output_shape = tuple(int(d) for d in val(outs[0]).shape[1:])
            elif node.op != "call_function":
                raise self.fail(node, f"fx node kind {node.op!r}")
            elif isinstance(val(node), torch.Tensor):  # else size arithmetic of a dynamic batch: no work per sample
                rule = lowering_for(node.target)
                if rule is None:
                    raise self.fail(node, "this operation is not supported")
                rule(self, node, bind(node))
        if g.output == g.input or g.tensors[g.output].storage == g.tensors[g.input].storage:
            raise UnsupportedLayerError("the model returns its input (or a view of it); nothing to compute")
        return g


def lower(model: nn.Module | torch.export.ExportedProgram, example_input: torch.Tensor | None = None) -> Graph:
    """Lower an eval-mode CNN (or a saved ``torch.export`` program, e.g. an lwdc run's ``model.pt2``)."""
    if isinstance(model, torch.export.ExportedProgram):
        program = model
    else:
        if example_input is None:
            raise ValueError("lower() needs an example input for an nn.Module (one sample or a batch)")
        with eval_mode(model), torch.no_grad():
            program = torch.export.export(model, (example_input[:1].contiguous(),))
    return Lowering(program.run_decompositions({})).lower()
