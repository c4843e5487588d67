"""A model's architecture as data: described from a traced graph, rebuilt from lwdc's own layer vocabulary.

A run folder must be safe to open when it comes from a stranger, so it cannot hold pickled modules or a
``torch.export`` program (``torch.export.load`` unpickles what the archive marks as pickled). Instead a model is
saved as JSON describing its ``torch.fx`` graph plus a ``weights_only`` state dict. Rebuilding never imports or
evaluates anything named by the file: every module type, function and method must be in the allow-lists below,
every constructor argument and call argument must be a plain number, bool, string (only where listed), tuple,
list, slice, None or a reference to an earlier node, and names are regenerated. What cannot be described this
way (a model with data-dependent control flow that ``torch.fx`` cannot trace, a layer outside the vocabulary)
is refused by :func:`describe` with the reason, and the run then keeps only the weights.
"""
from __future__ import annotations

import inspect
import operator
import re

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .binary import BinaryConv1d, BinaryConv2d, BiRealBlock

__all__ = ["ArchitectureError", "describe", "build", "MODULES", "FUNCTIONS", "METHODS", "FORMAT"]

FORMAT = "lwdc-architecture/1"


class ArchitectureError(ValueError):
    """A model that cannot be described with lwdc's vocabulary, or a description that is not one lwdc wrote."""


#: torch.nn leaf layers a description may name (the layers lwdc's operators and reference models use, and the
#: common ones of mobile CNNs); anything else is refused.
MODULES: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (
    nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.Hardswish, nn.Hardsigmoid,
    nn.Hardtanh, nn.ELU, nn.Softmax, nn.Identity, nn.Flatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ZeroPad2d, nn.Upsample, BinaryConv1d, BinaryConv2d, BiRealBlock,
)}


class _Tracer(fx.Tracer):
    """fx's tracer, with every vocabulary layer a leaf (lwdc's own layers, e.g. binary convolutions, too)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return MODULES.get(type(m).__name__) is type(m) or super().is_leaf_module(m, qualname)

#: Functions a graph may call, by the name stored in the file.
FUNCTIONS: dict[str, object] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "getitem": operator.getitem, "neg": operator.neg,
    "torch.add": torch.add, "torch.mul": torch.mul, "torch.cat": torch.cat, "torch.flatten": torch.flatten,
    "torch.relu": torch.relu, "torch.sigmoid": torch.sigmoid, "torch.tanh": torch.tanh, "torch.mean": torch.mean,
    "torch.clamp": torch.clamp, "torch.chunk": torch.chunk, "torch.split": torch.split,
    "F.relu": F.relu, "F.relu6": F.relu6, "F.silu": F.silu, "F.hardswish": F.hardswish,
    "F.hardsigmoid": F.hardsigmoid, "F.gelu": F.gelu, "F.leaky_relu": F.leaky_relu, "F.pad": F.pad,
    "F.adaptive_avg_pool1d": F.adaptive_avg_pool1d, "F.adaptive_avg_pool2d": F.adaptive_avg_pool2d,
    "F.avg_pool2d": F.avg_pool2d, "F.max_pool2d": F.max_pool2d, "F.interpolate": F.interpolate,
}
_FUNCTION_NAMES = {id(f): name for name, f in FUNCTIONS.items()}

#: Tensor methods a graph may call.
METHODS = frozenset({"view", "reshape", "flatten", "mean", "sum", "size", "relu", "sigmoid", "permute",
                     "transpose", "contiguous", "chunk", "split", "squeeze", "unsqueeze", "clamp", "mul", "add",
                     "expand_as", "expand", "amax"})

_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_SKIP_INIT = {"self", "device", "dtype"}


def _init_args(module: nn.Module) -> dict:
    """The constructor arguments that rebuild ``module``, read back from its attributes."""
    args = {}
    for name, param in inspect.signature(type(module).__init__).parameters.items():
        if name in _SKIP_INIT or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name == "bias":
            args[name] = getattr(module, "bias", None) is not None
        elif name == "elementwise_affine":
            args[name] = getattr(module, "weight", None) is not None
        elif hasattr(module, name):
            args[name] = _plain(getattr(module, name), f"{type(module).__name__}.{name}")
    return args


def _plain(value, where: str):
    """A JSON-able copy of a constant: numbers, bools, strings, None, lists (from tuples), slices."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list, torch.Size)):
        return {"tuple": [_plain(v, where) for v in value]} if isinstance(value, (tuple, torch.Size)) \
            else [_plain(v, where) for v in value]
    if isinstance(value, slice):
        return {"slice": [_plain(value.start, where), _plain(value.stop, where), _plain(value.step, where)]}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    raise ArchitectureError(f"{where}: a constant of type {type(value).__name__} cannot be described")


def _arg(value, index: dict[str, int], where: str):
    if isinstance(value, fx.Node):
        return {"node": index[value.name]}
    if isinstance(value, (tuple, list)):
        items = [_arg(v, index, where) for v in value]
        return {"tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        raise ArchitectureError(f"{where}: dict arguments cannot be described")
    return _plain(value, where)


def describe(model: nn.Module) -> dict:
    """The architecture of ``model`` as a JSON-able dict (weights not included; save its ``state_dict``)."""
    try:
        traced = fx.GraphModule(model, _Tracer().trace(model), type(model).__name__)
    except Exception as exc:  # fx raises many types on untraceable Python
        raise ArchitectureError(f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    modules, nodes, index = {}, [], {}
    for node in traced.graph.nodes:
        where = f"{type(model).__name__} node {node.name}"
        entry = {"op": node.op}
        if node.op == "call_module":
            sub = traced.get_submodule(node.target)
            kind = type(sub).__name__
            if MODULES.get(kind) is not type(sub):
                raise ArchitectureError(f"layer {node.target} is a {type(sub).__module__}.{kind}, outside lwdc's "
                                        f"vocabulary ({', '.join(sorted(MODULES))})")
            modules[node.target] = {"type": kind, "init": _init_args(sub)}
            entry["target"] = node.target
        elif node.op == "call_function":
            name = _FUNCTION_NAMES.get(id(node.target))
            if name is None:
                raise ArchitectureError(f"{where}: function {getattr(node.target, '__name__', node.target)} is "
                                        "outside lwdc's vocabulary")
            entry["target"] = name
        elif node.op == "call_method":
            if node.target not in METHODS:
                raise ArchitectureError(f"{where}: tensor method {node.target} is outside lwdc's vocabulary")
            entry["target"] = node.target
        elif node.op == "get_attr":
            raise ArchitectureError(f"{where}: reads attribute {node.target} directly (only layers are described)")
        elif node.op not in ("placeholder", "output"):
            raise ArchitectureError(f"{where}: graph operation {node.op} cannot be described")
        entry["args"] = _arg(node.args, index, where)
        entry["kwargs"] = {k: _arg(v, index, where) for k, v in node.kwargs.items()}
        index[node.name] = len(nodes)
        nodes.append(entry)
    return {"format": FORMAT, "modules": modules, "nodes": nodes}


def _value(data, where: str, nodes: list | None = None):
    """Inverse of ``_plain``/``_arg``, refusing anything else."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [_value(v, where, nodes) for v in data]
    if isinstance(data, dict) and len(data) == 1:
        (kind, inner), = data.items()
        if kind == "tuple" and isinstance(inner, list):
            return tuple(_value(v, where, nodes) for v in inner)
        if kind == "slice" and isinstance(inner, list) and len(inner) == 3:
            return slice(*(_value(v, where, nodes) for v in inner))
        if kind == "node" and nodes is not None and isinstance(inner, int) and 0 <= inner < len(nodes):
            return nodes[inner]
        if kind == "dtype" and isinstance(inner, str) and isinstance(getattr(torch, inner, None), torch.dtype):
            return getattr(torch, inner)
    raise ArchitectureError(f"{where}: {str(data)[:80]!r} is not a value lwdc writes")


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent = root
    *parents, leaf = path.split(".")
    for part in parents:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
        if type(parent) is not nn.Module:
            raise ArchitectureError(f"layer path {path}: {part} is a layer, not a container")
    if hasattr(parent, leaf):
        raise ArchitectureError(f"layer path {path} appears twice")
    parent.add_module(leaf, module)


def build(description: dict) -> fx.GraphModule:
    """An ``nn.Module`` (an fx ``GraphModule`` of standard torch layers) from :func:`describe`'s output; its
    parameters are freshly initialised: load the saved ``state_dict`` next."""
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ArchitectureError(f"not an lwdc architecture description (format {FORMAT} expected)")
    modules, entries = description.get("modules"), description.get("nodes")
    if not isinstance(modules, dict) or not isinstance(entries, list):
        raise ArchitectureError("an architecture description needs 'modules' (an object) and 'nodes' (a list)")
    root = nn.Module()
    for path, spec in modules.items():
        if not isinstance(path, str) or not _PATH.match(path) or not isinstance(spec, dict):
            raise ArchitectureError(f"layer path {str(path)[:60]!r} is not a dotted name")
        cls = MODULES.get(spec.get("type"))
        init = spec.get("init")
        if cls is None or not isinstance(init, dict):
            raise ArchitectureError(f"layer {path}: type {str(spec.get('type'))[:40]!r} is outside lwdc's vocabulary")
        allowed = set(inspect.signature(cls.__init__).parameters) - _SKIP_INIT
        if set(init) - allowed:
            raise ArchitectureError(f"layer {path}: {cls.__name__} takes no argument {sorted(set(init) - allowed)[0]}")
        try:
            module = cls(**{k: _value(v, path) for k, v in init.items()})
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ArchitectureError(f"layer {path}: {cls.__name__} refused its arguments ({exc})") from None
        _set_submodule(root, path, module)
    graph, built = fx.Graph(), []
    for i, entry in enumerate(entries):
        where = f"node {i}"
        if not isinstance(entry, dict):
            raise ArchitectureError(f"{where} is not an object")
        op, target = entry.get("op"), entry.get("target")
        args = _value(entry.get("args", {"tuple": []}), where, built)
        kwargs = {str(k): _value(v, where, built) for k, v in (entry.get("kwargs") or {}).items()}
        if not isinstance(args, tuple) or any(not k.isidentifier() for k in kwargs):
            raise ArchitectureError(f"{where}: malformed arguments")
        if op == "placeholder":
            node = graph.placeholder(f"x{i}")
        elif op == "output":
            node = graph.output(args[0])
        elif op == "call_module":
            if target not in modules:
                raise ArchitectureError(f"{where}: calls undeclared layer {str(target)[:60]!r}")
            node = graph.call_module(target, args, kwargs)
        elif op == "call_function":
            if target not in FUNCTIONS:
                raise ArchitectureError(f"{where}: function {str(target)[:60]!r} is outside lwdc's vocabulary")
            node = graph.call_function(FUNCTIONS[target], args, kwargs)
        elif op == "call_method":
            if target not in METHODS:
                raise ArchitectureError(f"{where}: tensor method {str(target)[:60]!r} is outside lwdc's vocabulary")
            node = graph.call_method(target, args, kwargs)
        else:
            raise ArchitectureError(f"{where}: operation {str(op)[:40]!r} is not one lwdc writes")
        built.append(node)
    try:
        graph.lint()
        return fx.GraphModule(root, graph, class_name="LwdcModel")
    except Exception as exc:
        raise ArchitectureError(f"the described graph is inconsistent ({type(exc).__name__}: {exc})") from None
