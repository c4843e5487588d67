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
from .fold import fold_parallel_convs
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


def permuted(target) -> tuple:
    """The op-table key of ``target``'s lowering on a value in a tracked layout (``Lowering.perm``)."""
    return ("permuted", target)


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
        self.names: dict[str, list[torch.fx.Node]] = {}  # tensor name -> every fx node that is (an alias of) it
        # fx node name -> p with value = channels-first tensor .permute(p) (rank 5: its channels split in two first)
        self.perm: dict[str, tuple[int, ...]] = {}

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

    def new_tensor(self, node: torch.fx.Node, storage: str | None = None, offset: int = 0) -> str:
        name = f"t{len(self.graph.tensors)}"
        self.graph.tensors[name] = Tensor(name, self.sample_shape(node), storage or name, offset)
        self.value[node.name] = name
        self.names[name] = [node]
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
        names = self.names[tensor]  # a same-shape alias (clone, dropout) must not hide another reader
        readers = {user for fx in names for user in fx.users if user not in names}
        return ir if len(readers) == 1 else None

    def alias(self, node: torch.fx.Node, tensor: str) -> None:
        """The op only relabels a tensor (view, flatten, dropout in eval, a fused op): no code, same buffer."""
        if self.graph.tensors[tensor].shape == self.sample_shape(node):
            self.value[node.name] = tensor
            self.names[tensor].append(node)
        else:
            src = self.graph.tensors[tensor]
            self.new_tensor(node, storage=src.storage, offset=src.offset)

    def sample_shape(self, node: torch.fx.Node) -> tuple[int, int, int]:
        """A node's per-sample (C, H, W) in the IR's channels-first layout: a permuted value's permutation is
        undone and a channel split (rank 5) merged back, as its data are stored."""
        shape = [int(d) for d in val(node).shape]
        perm = self.perm.get(node.name)
        if perm is not None:
            shape = [shape[perm.index(d)] for d in range(len(perm))]
            if len(shape) == 5:
                shape = [shape[0], shape[1] * shape[2], *shape[3:]]
        return per_sample(tuple(shape), self.where(node))

    def layout_rule(self, node: torch.fx.Node):
        """The lowering of a node that reads a permuted value or makes a rank-5 one: an elementwise op
        (``Op.in_place``) whose operands are all activations in one layout computes as is and passes the layout
        on; else the lowering registered for ``permuted(target)``; anything else would compute in the wrong
        layout, so it fails."""
        rule, inputs = lowering_for(node.target), node.all_input_nodes
        layouts = {self.perm.get(a.name) for a in inputs}
        elementwise = getattr(getattr(rule, "__self__", None), "in_place", False)
        if elementwise and len(layouts) == 1 and None not in layouts and all(map(self.is_activation, inputs)):
            self.perm[node.name] = layouts.pop()
            return rule
        rule = lowering_for(permuted(node.target))
        if rule is not None:
            return rule
        perms = sorted({str(list(self.perm[a.name])) for a in inputs if a.name in self.perm})
        what = f"a tensor permuted from (N, C, H, W) by {' and '.join(perms)}" if perms else "a rank-5 tensor"
        raise self.fail(node, f"this operation on {what} is not supported (only ConvNeXt's channels-last "
                              "LayerNorm, Linear, layer scale and elementwise ops, and ShuffleNet's channel shuffle); "
                              "permute back to (N, C, H, W) first")

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
                if getattr(outs[0], "name", None) in self.perm:
                    raise self.fail(outs[0], "the model returns a permuted tensor; permute it back to (N, C, H, W)")
                g.output = self.tensor_of(outs[0], node)
                g.output_shape = tuple(int(d) for d in val(outs[0]).shape[1:])
            elif node.op != "call_function":
                raise self.fail(node, f"fx node kind {node.op!r}")
            elif isinstance(val(node), torch.Tensor):  # else size arithmetic of a dynamic batch: no work per sample
                laid_out = any(a.name in self.perm for a in node.all_input_nodes) or len(val(node).shape) > 4
                rule = self.layout_rule(node) if laid_out else lowering_for(node.target)
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
    return fold_parallel_convs(Lowering(program.run_decompositions({})).lower())
