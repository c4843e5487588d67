"""Lower a plain PyTorch CNN to a short list of C-friendly nodes.

The model goes through ``torch.export`` (functional ATen ops, so in-place calls and module wrappers disappear),
then each op becomes one node of a tiny IR over per-sample tensors of shape (C, H, W): 1-D signals are (C, 1, L)
and vectors (F, 1, 1), so one set of kernels serves all of them. BatchNorm is folded into the conv before it (or
becomes a depthwise 1x1 conv), ReLU/ReLU6 are fused into the conv or add before them, a Linear layer is a 1x1
conv on an (F, 1, 1) tensor, and flatten/view/dropout are aliases that cost nothing at run time.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ...profile import eval_mode

ACTIVATIONS = ("relu", "relu6", "sigmoid", "silu")
SUPPORTED = ("Conv1d/Conv2d (any groups, stride, padding, dilation)", "BatchNorm", "ReLU", "ReLU6", "Sigmoid",
             "SiLU", "MaxPool1d/2d", "AvgPool1d/2d", "global average pooling", "residual add", "channel concat",
             "channel zero-padding", "flatten/view", "Linear", "Dropout/Identity")


class UnsupportedLayerError(ValueError):
    """The model holds something the C exporter cannot lower; the message names the layer and its place."""


@dataclass
class Tensor:
    """A per-sample activation; ``storage`` names the buffer it lives in (views share their source's)."""
    name: str
    shape: tuple[int, int, int]
    storage: str

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class Node:
    """One kernel call. ``where`` is the module path the op came from, for messages and comments."""
    op: str  # conv | maxpool | avgpool | gap | add | concat | pad_channels | act
    inputs: list[str]
    output: str
    where: str
    attrs: dict = field(default_factory=dict)
    weight: np.ndarray | None = None  # conv: (O, C/groups, KH, KW) float32
    bias: np.ndarray | None = None  # conv: (O,) float32
    act: str = "none"  # conv/add: fused none | relu | relu6; act node: the function


@dataclass
class Graph:
    """The lowered model: nodes in execution order over named tensors, one input and one output."""
    tensors: dict[str, Tensor]
    nodes: list[Node]
    input: str
    output: str
    input_shape: tuple[int, ...]  # as PyTorch sees one sample, e.g. (3, 32, 32) or (1, 16000)
    output_shape: tuple[int, ...]

    def consumers(self, name: str) -> list[Node]:
        storage = self.tensors[name].storage
        return [n for n in self.nodes if any(self.tensors[i].storage == storage for i in n.inputs)]

    @property
    def macs(self) -> int:
        total = 0
        for n in self.nodes:
            if n.op == "conv":
                out = self.tensors[n.output]
                total += out.size * int(np.prod(n.weight.shape[1:]))
        return total

    @property
    def params(self) -> int:
        return sum(n.weight.size + n.bias.size for n in self.nodes if n.op == "conv")


def _val(node: torch.fx.Node) -> torch.Tensor:
    val = node.meta["val"]
    return val[0] if isinstance(val, (tuple, list)) else val


def _per_sample(shape: tuple[int, ...], where: str) -> tuple[int, int, int]:
    dims = tuple(int(d) for d in shape[1:])
    if len(dims) == 3:
        return dims  # type: ignore[return-value]
    if len(dims) == 2:
        return (dims[0], 1, dims[1])
    if len(dims) == 1:
        return (dims[0], 1, 1)
    raise UnsupportedLayerError(f"{where}: tensors of rank {len(shape)} are not supported (need (N, C, H, W), "
                                f"(N, C, L) or (N, F))")


def _pair(v, n: int = 2) -> tuple[int, ...]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return tuple(int(x) for x in (v * n if len(v) == 1 else v))


def _as2d(v, dims: int, fill: int) -> tuple[int, int]:
    """Spatial arguments of a 1-D op become (fill, v) on the (C, 1, L) view; 2-D ones pass through."""
    return (fill, _pair(v, 1)[0]) if dims == 1 else _pair(v)  # type: ignore[return-value]


class _Lowering:
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

    # -- helpers ------------------------------------------------------------------------------------------------
    @staticmethod
    def where(node: torch.fx.Node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path, kind = list(stack.values())[-1]
            kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
            return f"'{path or '<top>'}' ({kind.rsplit('.', 1)[-1]})"
        return f"'{node.name}'"

    def fail(self, node: torch.fx.Node, why: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(f"layer {self.where(node)}, op {node.target}: {why}. The C exporter supports: "
                                     f"{', '.join(SUPPORTED)}.")

    def const(self, arg, node: torch.fx.Node) -> np.ndarray | None:
        if arg is None:
            return None
        if isinstance(arg, torch.fx.Node) and arg.name in self.consts:
            return self.consts[arg.name].detach().float().numpy().copy()
        raise self.fail(node, "its weights are computed at run time, not stored parameters")

    def tensor_of(self, arg, node: torch.fx.Node) -> str:
        if isinstance(arg, torch.fx.Node) and arg.name in self.value:
            return self.value[arg.name]
        raise self.fail(node, "an input is a constant or a parameter, not an activation")

    def new_tensor(self, node: torch.fx.Node, storage: str | None = None) -> str:
        name = f"t{len(self.graph.tensors)}"
        self.graph.tensors[name] = Tensor(name, _per_sample(_val(node).shape, self.where(node)), storage or name)
        self.value[node.name] = name
        self.last_fx[name] = node
        return name

    def emit(self, node: torch.fx.Node, op: str, inputs: list[str], **kw) -> Node:
        out = self.new_tensor(node)
        ir = Node(op, inputs, out, self.where(node).split(" ")[0].strip("'"), **kw)
        self.graph.nodes.append(ir)
        self.producer[out] = ir
        return ir

    def fusable(self, tensor: str, ops: tuple[str, ...]) -> Node | None:
        """The node producing ``tensor`` when its result feeds only the node being lowered."""
        ir = self.producer.get(tensor)
        if ir is None or ir.op not in ops or ir.act != "none" or ir.output != tensor:
            return None
        return ir if len(self.last_fx[tensor].users) == 1 else None

    def alias(self, node: torch.fx.Node, tensor: str) -> None:
        """The op only relabels a tensor (view, flatten, dropout in eval, a fused op): no code, same buffer."""
        if self.graph.tensors[tensor].shape == _per_sample(_val(node).shape, self.where(node)):
            self.value[node.name] = tensor
            self.last_fx[tensor] = node
        else:
            self.new_tensor(node, storage=self.graph.tensors[tensor].storage)

    # -- ops ----------------------------------------------------------------------------------------------------
    def conv(self, node, x, w, b, stride, padding, dilation, groups, dims):
        weight = self.const(w, node)
        if isinstance(padding, str):
            if padding == "valid":
                padding = 0
            else:  # "same" with stride 1: symmetric only
                k = weight.shape[2:]
                total = [d * (kk - 1) for d, kk in zip(_pair(dilation, dims), k)]
                if any(t % 2 for t in total):
                    raise self.fail(node, "'same' padding with an even kernel is asymmetric")
                padding = [t // 2 for t in total]
        if dims == 1:
            weight = weight[:, :, None, :]
        bias = self.const(b, node)
        self.emit(node, "conv", [self.tensor_of(x, node)], weight=weight.astype(np.float32),
                  bias=(bias if bias is not None else np.zeros(weight.shape[0])).astype(np.float32),
                  attrs=dict(stride=_as2d(stride, dims, 1), padding=_as2d(padding, dims, 0),
                             dilation=_as2d(dilation, dims, 1), groups=int(groups)))

    def batch_norm(self, node, x, w, b, mean, var, eps):
        src = self.tensor_of(x, node)
        channels = self.graph.tensors[src].shape[0]
        mean, var = self.const(mean, node), self.const(var, node)
        gamma = self.const(w, node) if w is not None else np.ones(channels, np.float32)
        beta = self.const(b, node) if b is not None else np.zeros(channels, np.float32)
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        shift = beta - mean * scale
        conv = self.fusable(src, ("conv",))
        if conv is not None:
            conv.weight = (conv.weight * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
            conv.bias = (conv.bias * scale + shift).astype(np.float32)
            self.alias(node, src)
        else:  # BN not after a conv: a depthwise 1x1 conv does the same per-channel affine map
            self.emit(node, "conv", [src], weight=scale.reshape(-1, 1, 1, 1).astype(np.float32),
                      bias=shift.astype(np.float32),
                      attrs=dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=channels))

    def activation(self, node, x, kind: str):
        src = self.tensor_of(x, node)
        producer = self.fusable(src, ("conv", "add")) if kind in ("relu", "relu6") else None
        if producer is not None:
            producer.act = kind
            self.alias(node, src)
        else:
            self.emit(node, "act", [src], act=kind)

    def pool(self, node, op, x, kernel, stride, padding, ceil_mode, dims, count_include_pad=True, dilation=1):
        if _pair(dilation, dims) != (1,) * dims:
            raise self.fail(node, "dilated pooling is not supported")
        kernel = _as2d(kernel, dims, 1)
        stride = _as2d(stride, dims, 1) if stride else kernel
        self.emit(node, op, [self.tensor_of(x, node)],
                  attrs=dict(kernel=kernel, stride=stride, padding=_as2d(padding, dims, 0), ceil_mode=bool(ceil_mode),
                             count_include_pad=bool(count_include_pad)))

    def adaptive_avg(self, node, x, size):
        src = self.tensor_of(x, node)
        c, h, w = self.graph.tensors[src].shape
        oc, oh, ow = _per_sample(_val(node).shape, self.where(node))
        if (oh, ow) == (1, 1):
            self.emit(node, "gap", [src])
        elif (oh, ow) == (h, w):
            self.alias(node, src)
        elif h % oh == 0 and w % ow == 0:
            k = (h // oh, w // ow)
            self.emit(node, "avgpool", [src], attrs=dict(kernel=k, stride=k, padding=(0, 0), ceil_mode=False,
                                                         count_include_pad=True))
        else:
            raise self.fail(node, f"adaptive pooling from {h}x{w} to {oh}x{ow} has uneven windows")

    def lower(self) -> Graph:
        g, A = self.graph, torch.ops.aten
        for node in self.program.graph.nodes:
            if node.op == "placeholder":
                if node.name in self.consts:
                    continue
                if g.input:
                    raise UnsupportedLayerError("the C exporter takes models with one input tensor")
                g.input = self.new_tensor(node)
                g.input_shape = tuple(int(d) for d in _val(node).shape[1:])
                continue
            if node.op == "output":
                outs = node.args[0]
                if len(outs) != 1:
                    raise UnsupportedLayerError(f"the C exporter takes models with one output tensor; this one "
                                                f"returns {len(outs)}")
                g.output = self.tensor_of(outs[0], node)
                g.output_shape = tuple(int(d) for d in _val(outs[0]).shape[1:])
                continue
            if node.op != "call_function":
                raise self.fail(node, f"fx node kind {node.op!r}")
            if not isinstance(_val(node), torch.Tensor):
                continue  # size arithmetic of a dynamic batch (sym_size, mul): no run-time work per sample
            t, a = node.target, node.args
            kw = dict(node.kwargs)
            if t is operator.getitem:
                if a[1] != 0:
                    raise self.fail(node, "only the first result of a multi-output op is supported")
                self.alias(node, self.tensor_of(a[0], node))
            elif t in (A.conv2d.default, A.conv2d.padding, A.conv1d.default, A.conv1d.padding):
                dims = 1 if t in (A.conv1d.default, A.conv1d.padding) else 2
                args = list(a) + [None, 1, 0, 1, 1][len(a) - 2:]
                self.conv(node, *args[:7], dims=dims)
            elif t is A.convolution.default:
                x, w, b, stride, padding, dilation, transposed, _, groups = a
                if transposed:
                    raise self.fail(node, "transposed convolution is not supported")
                self.conv(node, x, w, b, stride, padding, dilation, groups, dims=len(stride))
            elif t is A._native_batch_norm_legit_no_training.default:
                x, w, b, mean, var, _, eps = a
                self.batch_norm(node, x, w, b, mean, var, eps)
            elif t is A.batch_norm.default:
                x, w, b, mean, var, training, _, eps, _ = a
                if training:
                    raise self.fail(node, "BatchNorm in training mode; call model.eval() first")
                self.batch_norm(node, x, w, b, mean, var, eps)
            elif t in (A.relu.default, A.relu_.default):
                self.activation(node, a[0], "relu")
            elif t in (A.hardtanh.default, A.hardtanh_.default, A.clamp.default):
                lo, hi = (list(a[1:]) + [-1.0, 1.0][len(a) - 1:]) if t is not A.clamp.default else a[1:3]
                if (lo, hi) == (0, 6):
                    self.activation(node, a[0], "relu6")
                elif lo == 0 and hi is None:
                    self.activation(node, a[0], "relu")
                else:
                    raise self.fail(node, f"clamping to [{lo}, {hi}] (only ReLU and ReLU6 ranges)")
            elif t in (A.sigmoid.default, A.silu.default):
                self.activation(node, a[0], "sigmoid" if t is A.sigmoid.default else "silu")
            elif t is A.add.Tensor:
                if not all(isinstance(v, torch.fx.Node) and v.name in self.value for v in a[:2]) or kw.get("alpha", 1) != 1:
                    raise self.fail(node, "only the sum of two activations (a residual add) is supported")
                x, y = (self.tensor_of(v, node) for v in a[:2])
                if g.tensors[x].shape != g.tensors[y].shape:
                    raise self.fail(node, "adding tensors of different shapes (broadcasting) is not supported")
                self.emit(node, "add", [x, y])
            elif t is A.cat.default:
                dim = a[1] if len(a) > 1 else kw.get("dim", 0)
                if dim not in (1, -len(_val(node).shape) + 1):
                    raise self.fail(node, f"concatenation along dim {dim} (only channels, dim 1)")
                self.emit(node, "concat", [self.tensor_of(v, node) for v in a[0]])
            elif t in (A.max_pool2d.default, A.max_pool1d.default, A.max_pool2d_with_indices.default):
                dims = 1 if t is A.max_pool1d.default else 2
                args = list(a) + [[], 0, 1, False][len(a) - 2:]
                self.pool(node, "maxpool", args[0], args[1], args[2], args[3], args[5], dims, dilation=args[4])
            elif t in (A.avg_pool2d.default, A.avg_pool1d.default):
                dims = 1 if t is A.avg_pool1d.default else 2
                args = list(a) + [[], 0, False, True, None][len(a) - 2:]
                if len(args) > 6 and args[6] is not None:
                    raise self.fail(node, "avg_pool with divisor_override")
                self.pool(node, "avgpool", args[0], args[1], args[2], args[3], args[4], dims,
                          count_include_pad=args[5])
            elif t in (A.adaptive_avg_pool2d.default, A.adaptive_avg_pool1d.default, A._adaptive_avg_pool2d.default):
                self.adaptive_avg(node, a[0], a[1])
            elif t is A.mean.dim:
                dims = [d % len(_val(a[0]).shape) for d in a[1]]
                if sorted(dims) != list(range(2, len(_val(a[0]).shape))):
                    raise self.fail(node, f"mean over dims {a[1]} (only over all spatial dims)")
                self.emit(node, "gap", [self.tensor_of(a[0], node)])
            elif t in (A.constant_pad_nd.default, A.pad.default):
                self.pad(node, a)
            elif t in (A.linear.default,):
                x = self.tensor_of(a[0], node)
                if len(_val(a[0]).shape) != 2:
                    raise self.fail(node, "Linear on a tensor of rank > 2 (flatten first)")
                w = self.const(a[1], node)
                b = self.const(a[2] if len(a) > 2 else None, node)
                self.emit(node, "conv", [x], weight=w[:, :, None, None].astype(np.float32),
                          bias=(b if b is not None else np.zeros(w.shape[0])).astype(np.float32),
                          attrs=dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1))
            elif t in (A.view.default, A.reshape.default, A._unsafe_view.default, A.flatten.using_ints,
                       A.squeeze.dim, A.squeeze.dims, A.unsqueeze.default, A.clone.default, A.alias.default,
                       A.detach.default, A.dropout.default, A.contiguous.default, A.lift_fresh_copy.default,
                       A._assert_tensor_metadata.default):
                if t is A._assert_tensor_metadata.default:
                    continue
                if t is A.dropout.default and a[2]:
                    raise self.fail(node, "dropout in training mode; call model.eval() first")
                shape = _val(node).shape
                if shape[0] != _val(a[0]).shape[0]:
                    raise self.fail(node, "a view that mixes the batch dimension")
                self.alias(node, self.tensor_of(a[0], node))
            else:
                raise self.fail(node, "this operation is not supported")
        if g.output == g.input or g.tensors[g.output].storage == g.tensors[g.input].storage:
            raise UnsupportedLayerError("the model returns its input (or a view of it); nothing to compute")
        return g

    def pad(self, node, a):
        src = self.tensor_of(a[0], node)
        pads, value = list(a[1]), (a[2] if len(a) > 2 else 0.0)
        rank = len(_val(a[0]).shape)
        pads += [0] * (2 * (rank - 1) - len(pads))  # pairs from the last dim backwards, up to the channel dim
        spatial, channel = pads[:-2], pads[-2:]
        if any(spatial) or value not in (0, 0.0) or min(channel) < 0:
            raise self.fail(node, "padding other than zero channels appended (as lwdc's skip branch does)")
        self.emit(node, "pad_channels", [src], attrs=dict(before=int(channel[0]), after=int(channel[1])))


def lower(model: nn.Module | torch.export.ExportedProgram, example_input: torch.Tensor | None = None) -> Graph:
    """Lower an eval-mode CNN (or a saved ``torch.export`` program, e.g. an lwdc run's ``model.pt2``)."""
    if isinstance(model, torch.export.ExportedProgram):
        program = model
    else:
        if example_input is None:
            raise ValueError("lower() needs an example input for an nn.Module (one sample or a batch)")
        with eval_mode(model), torch.no_grad():
            program = torch.export.export(model, (example_input[:1].contiguous(),))
    return _Lowering(program.run_decompositions({})).lower()
