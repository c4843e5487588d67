"""Reconstruction: expand every compressible layer of a user's model into a choice over candidate operators.

``expand`` works on a copy (the user's model is never touched), traces one forward pass on an example input to
learn each layer's input and output shape, and replaces each convolution (and, if asked, pooling) layer that is
called exactly once by a :class:`ChoiceLayer`. Anything it cannot expand is left as it was and listed in
``Supernet.skipped`` with the reason. It knows nothing of costs or training.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .gate import Gate, choice_probabilities, join
from .ops import LayerSpec, OpSpec, get_op, resolve_ops
from .modes import eval_mode

__all__ = ["ChoiceLayer", "Supernet", "Skipped", "Chain", "ExpansionError", "expand", "set_submodule"]

_CONVS = (nn.Conv1d, nn.Conv2d)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
_UNSUPPORTED = (nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class ExpansionError(ValueError):
    """The model cannot be expanded (nothing to expand, or expansion would change what it computes)."""


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclass(frozen=True)
class Chain:
    """A convolution whose input only ``producer`` makes, through per-channel layers: ``norms`` (BatchNorms, cut
    with it) and element-wise activations. A width operator on it lets derivation drop the unread channels
    where they are made."""
    producer: str
    norms: tuple[str, ...]


class ChoiceLayer(nn.Module):
    """Parallel candidate branches for one layer, of which the gate runs exactly one per forward pass."""

    def __init__(self, spec: LayerSpec, ops: list[OpSpec], branches: list[nn.Module], gate: Gate):
        super().__init__()
        self.spec = spec
        self.op_names = [op.name for op in ops]
        self.branches = nn.ModuleList(branches)
        self.alpha = nn.Parameter(torch.zeros(len(branches)))
        self.gate = gate
        self.fixed: int | None = None      # a forced choice overrides the gate (used by derive and tests)
        self.last_index: int | None = None

    @property
    def chosen(self) -> int:
        """The branch this layer would keep now: the forced one, else argmax(alpha)."""
        return self.fixed if self.fixed is not None else int(torch.argmax(self.alpha.detach()))

    @property
    def chosen_op(self) -> str:
        return self.op_names[self.chosen]

    def probabilities(self, temperature: float = 1.0) -> torch.Tensor:
        """softmax(alpha / temperature): at the gate's noise scale, the distribution its draws follow."""
        return choice_probabilities(self.alpha if temperature == 1.0 else self.alpha / temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.fixed is None:
            k, j, coef = self.gate.sample(self.alpha)
            self.last_index = k
            out = self.branches[k](x)
            with torch.no_grad():
                other = self.branches[j](x)
                # In place when the branch made a fresh tensor (saves a transient activation-sized buffer).
                fresh = other._base is None and other.data_ptr() not in (x.data_ptr(), out.data_ptr())
                delta = other.sub_(out) if fresh else other - out
            return join(out, coef, delta)    # value: exactly out; gradient: see lwdc.gate
        self.last_index = self.chosen
        return self.branches[self.last_index](x)

    def extra_repr(self) -> str:
        return f"ops={self.op_names}"


class Supernet(nn.Module):
    """The expanded model plus what expansion learned: the choice layers by name and what was left alone."""

    def __init__(self, net: nn.Module, gate: Gate, skipped: list[Skipped], input_shape: tuple[int, ...],
                 output_shape: tuple[int, ...], chains: dict[str, Chain] | None = None):
        super().__init__()
        self.net = net
        self.gate = gate
        self.skipped = skipped
        self.input_shape = input_shape      # the example input's shape, batch dimension included
        self.output_shape = output_shape
        self.chains = chains or {}          # choice layer with width operators -> the layers that make its input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def choice_layers(self) -> dict[str, ChoiceLayer]:
        return {name: m for name, m in self.net.named_modules() if isinstance(m, ChoiceLayer)}

    def arch_parameters(self) -> list[nn.Parameter]:
        return [layer.alpha for layer in self.choice_layers().values()]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    @torch.no_grad()
    def init_gates(self, original_prob: float | None) -> None:
        """Start every gate at P(original) = ``original_prob``, the rest uniform (``None``: all uniform).

        Starting from a trained model, a prior on the original keeps most sampled paths close to it, so the
        search compares each alternative against a working network instead of against noise.
        """
        for layer in self.choice_layers().values():
            layer.alpha.zero_()
            n = len(layer.op_names)
            if original_prob is not None and "original" in layer.op_names and n > 1:
                if not 0 < original_prob < 1:
                    raise ValueError(f"original_prob must be in (0, 1), got {original_prob}")
                layer.alpha[layer.op_names.index("original")] = math.log(original_prob * (n - 1) / (1 - original_prob))

    def choices(self) -> dict[str, str]:
        """Layer name -> the operator it would keep now."""
        return {name: layer.chosen_op for name, layer in self.choice_layers().items()}

    def set_choices(self, choices: dict[str, str] | None) -> None:
        """Force each named layer to an operator (``None`` releases all layers back to their gates)."""
        layers = self.choice_layers()
        if choices is None:
            for layer in layers.values():
                layer.fixed = None
            return
        unknown = set(choices) - set(layers)
        if unknown:
            raise KeyError(f"no choice layer named {sorted(unknown)}; layers are {sorted(layers)}")
        for name, op in choices.items():
            if op not in layers[name].op_names:
                raise ValueError(f"layer {name!r} has no operator {op!r}; it has {layers[name].op_names}")
            layers[name].fixed = layers[name].op_names.index(op)


# ------------------------------------------------------------------------------------------------- tracing
class _RawConvWatcher(TorchFunctionMode):
    """Counts functional convolutions issued outside any convolution module: they cannot be replaced."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.raw_calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.depth == 0 and getattr(func, "__name__", "") in ("conv1d", "conv2d", "conv3d"):
            self.raw_calls += 1
        return func(*args, **(kwargs or {}))


def _trace(net: nn.Module, example: torch.Tensor, watch: tuple[type, ...]):
    """Per watched layer, its calls' (input shape, output shape); the raw functional convolutions; the output
    shape; and which layers read the model's input or return its output themselves (first and last layers)."""
    calls: dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {}
    outputs: dict[str, torch.Tensor] = {}
    reads_input: set[str] = set()
    norm_inputs: list[torch.Tensor] = []
    watcher = _RawConvWatcher()
    hooks = []

    def pre(_m, _inp):
        watcher.depth += 1

    def make_post(name: str):
        def post(_m, inp, out):
            watcher.depth -= 1
            calls.setdefault(name, []).append((tuple(inp[0].shape), tuple(out.shape)))
            outputs[name] = out
            if inp[0] is example:
                reads_input.add(name)
        return post

    for name, module in net.named_modules():
        if isinstance(module, watch):
            hooks.append(module.register_forward_pre_hook(pre))
            hooks.append(module.register_forward_hook(make_post(name)))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            hooks.append(module.register_forward_pre_hook(lambda _m, inp: norm_inputs.append(inp[0])))
    try:
        with eval_mode(net), torch.no_grad(), watcher:
            out = net(example)
    except Exception as exc:  # the user's forward may raise anything
        raise ExpansionError(f"the model fails on the example input of shape {tuple(example.shape)} "
                             f"({type(exc).__name__}: {exc}); pass an input the model accepts") from None
    finally:
        for h in hooks:
            h.remove()
    if not isinstance(out, torch.Tensor):
        raise ExpansionError(f"the model must return one tensor; it returned {type(out).__name__}")
    writes_output = {name for name, o in outputs.items() if o is out}
    norm_after = {name for name, o in outputs.items() if any(o is t for t in norm_inputs)}
    return calls, watcher.raw_calls, tuple(out.shape), (reads_input, writes_output, norm_after)


def _spec(module: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...], reads_input: bool = False,
          writes_output: bool = False, norm_after: bool = False) -> LayerSpec:
    dims = len(in_shape) - 2

    def tup(v) -> tuple:
        return tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims

    if isinstance(module, _CONVS):
        padding = module.padding if isinstance(module.padding, str) else tup(module.padding)
        return LayerSpec("conv", dims, module.in_channels, module.out_channels, tup(module.kernel_size),
                         tup(module.stride), padding, tup(module.dilation), module.groups,
                         module.bias is not None, in_shape[2:], out_shape[2:], reads_input, writes_output, norm_after)
    stride = module.stride if module.stride is not None else module.kernel_size
    return LayerSpec("pool", dims, in_shape[1], out_shape[1], tup(module.kernel_size), tup(stride),
                     tup(module.padding), tup(getattr(module, "dilation", 1)), 1, False, in_shape[2:], out_shape[2:])


_PER_CHANNEL_MODULES = (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Hardswish,
                        nn.GELU, nn.Identity)
_PER_CHANNEL_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6, torch.nn.functional.silu,
                          torch.nn.functional.hardswish, torch.nn.functional.gelu, torch.nn.functional.leaky_relu}
_NOT_CHAINED = ("its input is not made for it alone by a convolution through per-channel layers (a norm, an "
                "activation), so the unread channels could not be removed where they are made")


def _chains(net: nn.Module) -> dict[str, Chain]:
    """Convolutions whose input another convolution makes for them alone, through BatchNorms and element-wise
    activations only (``conv1 -> bn1 -> relu -> conv2`` in a residual block), found on the traced graph. A model
    that torch.fx cannot trace has none: width operators are then offered nowhere."""
    try:
        graph = torch.fx.symbolic_trace(net).graph
    except Exception:  # the user's forward may do anything tracing cannot follow
        return {}
    modules = dict(net.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def per_channel(node) -> bool:
        if not node.args or len([a for a in node.args if isinstance(a, torch.fx.Node)]) != 1:
            return False
        if node.op == "call_module":
            return isinstance(modules.get(node.target), _PER_CHANNEL_MODULES) and calls[node.target] == 1
        if node.op == "call_function":
            return node.target in _PER_CHANNEL_FUNCTIONS
        return node.op == "call_method" and node.target in ("relu", "relu_")

    found: dict[str, Chain] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _CONVS) or calls[node.target] != 1:
            continue
        norms, current = [], node
        while len(current.users) == 1:
            (user,) = current.users
            target = modules.get(user.target) if user.op == "call_module" else None
            if isinstance(target, _CONVS):
                if user.args and user.args[0] is current and calls[user.target] == 1:
                    found[user.target] = Chain(node.target, tuple(norms))
                break
            if not per_channel(user) or user.args[0] is not current:
                break
            if isinstance(target, nn.modules.batchnorm._BatchNorm):
                norms.append(user.target)
            current = user
    return found


def _candidates(spec: LayerSpec, ops: list[OpSpec], unchained: str | None = _NOT_CHAINED
                ) -> tuple[list[OpSpec], list[str]]:
    """Operators that fit the layer and are no heavier than it (MACs and parameters); width operators only where
    ``unchained`` (why they cannot be offered) is None (see ``Chain``)."""
    original = next((op for op in ops if op.name == "original"), None)
    base = original or get_op("original")
    limit_macs, limit_params = base.macs(spec), base.params(spec)
    kept, reasons = [], []
    for op in ops:
        reason = None if op is original else op.fits(spec)
        if reason is None and op.thins_input and unchained is not None:
            reason = unchained
        if reason is None and op is not original and (op.macs(spec) > limit_macs or op.params(spec) > limit_params):
            reason = "heavier than the original layer"
        if reason is None:
            kept.append(op)
        else:
            reasons.append(f"{op.name}: {reason}")
    return kept, reasons


def _all_candidates(specs: dict[str, LayerSpec], ops: list[OpSpec], chains: dict[str, Chain]
                    ) -> dict[str, tuple[list[OpSpec], list[str]]]:
    """``_candidates`` of every layer. A width operator is offered only where the layer making its input is a
    choice layer too: the cost table prices the cut producer through its gate, and the report shows it as a row.
    Withdrawing width operators can leave a producer further up with fewer than two candidates, so repeat until
    nothing changes."""
    why_not: dict[str, str] = {}
    while True:
        found = {name: _candidates(spec, ops, why_not.get(name, None if name in chains else _NOT_CHAINED))
                 for name, spec in specs.items()}
        lost = {name: chain.producer for name, chain in chains.items()
                if name in specs and name not in why_not and len(found.get(chain.producer, ([],))[0]) < 2}
        if not lost:
            return found
        why_not.update({name: f"the layer making its input ({producer}) is left as it is, so it would not be cut "
                              "to the channels read" for name, producer in lost.items()})


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted path ``name`` inside ``root``."""
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def expand(model: nn.Module, example_input: torch.Tensor, ops: str | list[str] = "default", *,
           include_pooling: bool = False, gate: str = "gumbel", tau: float = 1.0, seed: int = 0) -> Supernet:
    """Return a supernet in which every expandable layer of (a copy of) ``model`` is a :class:`ChoiceLayer`.

    ``ops`` is a named set (``default``, ``paper``, ``minimal``) or a list of operator names. A layer keeps only
    candidates whose output shape equals its own and that are no heavier than it; with fewer than two such
    candidates it is left alone and listed in ``Supernet.skipped``.
    """
    op_specs = resolve_ops(ops)
    if example_input.dim() not in (3, 4):
        raise ExpansionError(f"example input must be (N, C, L) or (N, C, H, W); got shape {tuple(example_input.shape)}")
    net = copy.deepcopy(model)
    watch = _CONVS + (_POOLS if include_pooling else ()) + _UNSUPPORTED
    calls, raw_calls, out_shape, (reads_input, writes_output, norm_after) = _trace(net, example_input, watch)
    chains = _chains(net) if any(op.thins_input for op in op_specs) else {}
    gate_state = Gate(mode=gate, tau=tau, seed=seed)

    skipped: list[Skipped] = []
    if raw_calls:
        skipped.append(Skipped("<functional>", f"{raw_calls} convolution call(s) made through torch.nn.functional, "
                                               "not an nn.Module: they cannot be replaced"))
    specs: dict[str, LayerSpec] = {}
    replacements: dict[str, ChoiceLayer] = {}
    for name, module in net.named_modules():
        if not isinstance(module, watch):
            continue
        seen = calls.get(name, [])
        if isinstance(module, _UNSUPPORTED):
            skipped.append(Skipped(name, f"{type(module).__name__} is not a supported layer type"))
        elif not seen:
            skipped.append(Skipped(name, "not called in the forward pass on the example input"))
        elif len(seen) > 1:
            skipped.append(Skipped(name, f"called {len(seen)} times per forward pass (shared module)"))
        elif isinstance(module, _POOLS) and getattr(module, "dilation", 1) not in (1, (1,), (1, 1)):
            skipped.append(Skipped(name, "dilated pooling is not expanded"))
        elif isinstance(module, _CONVS) and module.padding_mode != "zeros":
            skipped.append(Skipped(name, f"padding_mode={module.padding_mode!r}: candidates pad with zeros"))
        else:
            specs[name] = _spec(module, *seen[0], name in reads_input, name in writes_output, name in norm_after)
    for name, (kept, reasons) in _all_candidates(specs, op_specs, chains).items():
        if len(kept) < 2:
            skipped.append(Skipped(name, "fewer than two candidates fit (" + "; ".join(reasons) + ")"))
            continue
        branches = [op.build(specs[name], net.get_submodule(name)) for op in kept]
        replacements[name] = ChoiceLayer(specs[name], kept, branches, gate_state)
    if not replacements:
        raise ExpansionError(_nothing_message(model, skipped))
    originals = {name: net.get_submodule(name) for name in replacements}
    for name, layer in replacements.items():
        _check_branches(name, layer, example_input.dtype)
        set_submodule(net, name, layer)
    if _probe(net, replacements.values(), example_input, out_shape) is not None:
        # Something outside the replaced layers depends on them (reads .weight, checks a shape): find which by
        # swapping them in one at a time, and leave those layers as they were.
        for name in replacements:
            set_submodule(net, name, originals[name])
        for name, layer in list(replacements.items()):
            set_submodule(net, name, layer)
            problem = _probe(net, [layer], example_input, out_shape)
            if problem is not None:
                set_submodule(net, name, originals[name])
                del replacements[name]
                skipped.append(Skipped(name, f"replacing it breaks the model's forward ({problem})"))
        orphans = True
        while orphans:      # a width operator needs its producer to be a choice layer (and that one may be a reader)
            orphans = [name for name, layer in replacements.items() if name in chains
                       and chains[name].producer not in replacements
                       and any(get_op(op).thins_input for op in layer.op_names)]
            for name in orphans:
                set_submodule(net, name, originals[name])
                del replacements[name]
                skipped.append(Skipped(name, f"the layer making its input ({chains[name].producer}) is left as it "
                                             "is, so its width operators could not be cut"))
        if not replacements:
            raise ExpansionError(_nothing_message(model, skipped))
        problem = _probe(net, replacements.values(), example_input, out_shape)
        if problem is not None:
            raise ExpansionError(f"expanding {type(model).__name__} breaks its forward pass: {problem}")
    used = {n: chains[n] for n, layer in replacements.items()
            if n in chains and any(get_op(op).thins_input for op in layer.op_names)}
    return Supernet(net, gate_state, skipped, tuple(example_input.shape), out_shape, used)


def _nothing_message(model: nn.Module, skipped: list[Skipped]) -> str:
    details = "; ".join(f"{s.name}: {s.reason}" for s in skipped) or "it has no Conv1d/Conv2d layers"
    return f"nothing to expand in {type(model).__name__}: {details}"


def _check_branches(name: str, layer: ChoiceLayer, dtype: torch.dtype) -> None:
    spec = layer.spec
    x = torch.zeros((1, spec.in_ch, *spec.in_size), dtype=dtype)
    expected = (1, spec.out_ch, *spec.out_size)
    with torch.no_grad():
        for op, branch in zip(layer.op_names, layer.branches):
            was = branch.training
            shape = tuple(branch.eval()(x).shape)
            branch.train(was)
            if shape != expected:
                raise ExpansionError(f"layer {name!r}: candidate {op!r} gives shape {shape}, expected {expected}")


def _probe(net: nn.Module, layers, example: torch.Tensor, expected: tuple[int, ...]) -> str | None:
    """Run ``net`` with the given choice layers forced to their first, then their last candidate; say what broke."""
    layers = list(layers)
    try:
        for pick in (0, -1):
            for layer in layers:
                layer.fixed = pick % len(layer.branches)
            try:
                with eval_mode(net), torch.no_grad():
                    out = net(example)
            except Exception as exc:  # the user's forward may raise anything
                return f"{type(exc).__name__}: {exc}"
            if tuple(out.shape) != expected:
                return f"the output shape changed from {expected} to {tuple(out.shape)}"
    finally:
        for layer in layers:
            layer.fixed = None
    return None
