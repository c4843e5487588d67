"""Property tests: random small CNNs through expand -> forward/backward -> derive -> ONNX.

The generator builds 1-D and 2-D networks of random depth from convolutions (random kernel, stride, padding
including "same", dilation, groups, bias), BatchNorm, ReLU, residual adds, channel concatenations and pooling, on
odd and even input sizes, ending in a linear head or a feature map. For every model either ``expand`` raises its
documented ``ExpansionError`` (nothing it can expand) or all of these hold:
* the supernet with every gate on ``original`` computes what the model computes (max abs diff <= 1e-5);
* a training-mode forward keeps the output shape, and backward gives finite gradients, alpha included;
* with random gate choices, ``derive`` gives a model of plain ``torch.nn`` layers equal to the supernet in eval
  mode (max abs diff <= 1e-5, the bound documented for ``derive``);
* (ONNX tests) ``export_onnx`` succeeds, which means onnxruntime matches PyTorch within its default 1e-4.
Exporting to ONNX costs ~1 s per model, so CI exports 25 models and the slow run 200; the other properties run on
200 models in CI.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

from lwdc.derivation import derive, max_output_difference
from lwdc.export.onnx import export_onnx
from lwdc.space import ChoiceLayer, ExpansionError, expand

OP_SETS = ["default", "paper", "minimal", "ghost", "width", ["original", "conv1x1", "skip", "avgpool3x3"]]


def _out_size(size: int, k: int, s: int, p: int | str, d: int) -> int:
    if p == "same":
        return size
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@st.composite
def conv_args(draw, c_in: int, sizes: tuple[int, ...], keep_shape: bool = False, c_out: int | None = None):
    """Keyword arguments of one convolution that fits ``sizes``, and its output sizes."""
    groups = draw(st.sampled_from([g for g in (1, 2, 4) if c_in % g == 0]))
    if c_out is None:
        c_out = c_in if keep_shape else groups * draw(st.integers(1, max(1, 12 // groups)))
    if c_out % groups:
        groups = 1
    k = draw(st.sampled_from([1, 2, 3, 5]))
    d = draw(st.sampled_from([1, 1, 2]))
    s = 1 if keep_shape else draw(st.sampled_from([1, 1, 2]))
    if keep_shape:
        p = "same" if k % 2 == 0 or draw(st.booleans()) else (k - 1) // 2 * d
    else:
        p = draw(st.sampled_from([0, (k - 1) // 2 * d] + (["same"] if s == 1 else [])))
    if any(_out_size(n, k, s, p, d) < 1 for n in sizes):
        k, d, p = 1, 1, 0
    out = tuple(_out_size(n, k, s, p, d) for n in sizes)
    return dict(in_channels=c_in, out_channels=c_out, kernel_size=k, stride=s, padding=p, dilation=d,
                groups=groups, bias=draw(st.booleans())), out


@st.composite
def cnn_specs(draw):
    """A list of blocks plus input shape: enough to rebuild the same model anywhere."""
    dims = draw(st.sampled_from([1, 2]))
    c = draw(st.integers(1, 4))
    sizes = tuple(draw(st.integers(5, 13)) for _ in range(dims)) if dims == 2 else (draw(st.integers(5, 24)),)
    input_shape = (c, *sizes)
    blocks = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "conv", "res", "cat", "pool"]))
        if kind == "pool" and min(sizes) < 2:
            kind = "conv"
        if kind == "conv":
            args, sizes = draw(conv_args(c, sizes))
            blocks.append(("conv", args, draw(st.booleans()), draw(st.booleans())))
            c = args["out_channels"]
        elif kind == "res":
            args, _ = draw(conv_args(c, sizes, keep_shape=True))
            blocks.append(("res", args, draw(st.booleans()), draw(st.booleans())))
        elif kind == "cat":
            a, out = draw(conv_args(c, sizes))
            b = dict(a, out_channels=a["groups"] * draw(st.integers(1, 3)), bias=draw(st.booleans()))
            blocks.append(("cat", a, b))
            c, sizes = a["out_channels"] + b["out_channels"], out
        else:
            blocks.append(("pool", draw(st.sampled_from(["max", "avg"]))))
            sizes = tuple(n // 2 for n in sizes)
    head = draw(st.sampled_from(["linear", "map"]))
    return {"dims": dims, "input_shape": input_shape, "blocks": blocks, "head": head,
            "classes": draw(st.integers(2, 5)), "channels": c}


class RandomNet(nn.Module):
    """A CNN assembled from a spec of :func:`cnn_specs`: every layer is its own module, called once."""

    def __init__(self, spec: dict):
        super().__init__()
        dims = spec["dims"]
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        bn = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        self.spec = spec
        self.layers = nn.ModuleList()
        for block in spec["blocks"]:
            if block[0] in ("conv", "res"):
                _, args, norm, relu = block
                self.layers.append(nn.ModuleList([conv(**args), bn(args["out_channels"]) if norm else nn.Identity(),
                                                  nn.ReLU() if relu else nn.Identity()]))
            elif block[0] == "cat":
                self.layers.append(nn.ModuleList([conv(**block[1]), conv(**block[2])]))
            else:
                pool = {("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d, ("avg", 1): nn.AvgPool1d,
                        ("avg", 2): nn.AvgPool2d}[block[1], dims]
                self.layers.append(pool(2))
        if spec["head"] == "linear":
            pool = nn.AdaptiveAvgPool1d if dims == 1 else nn.AdaptiveAvgPool2d
            self.head = nn.Sequential(pool(1), nn.Flatten(), nn.Linear(spec["channels"], spec["classes"]))
        else:
            self.head = conv(spec["channels"], spec["classes"], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, layer in zip(self.spec["blocks"], self.layers):
            if block[0] == "conv":
                x = layer[2](layer[1](layer[0](x)))
            elif block[0] == "res":
                x = layer[2](x + layer[1](layer[0](x)))
            elif block[0] == "cat":
                x = torch.cat([layer[0](x), layer[1](x)], dim=1)
            else:
                x = layer(x)
        return self.head(x)


def check_pipeline(spec: dict, ops, pooling: bool, seed: int, onnx: bool) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _check(spec, ops, pooling, seed, onnx)
    finally:
        torch.set_num_threads(threads)


def _check(spec: dict, ops, pooling: bool, seed: int, onnx: bool) -> None:
    torch.manual_seed(seed)
    model = RandomNet(spec)
    x = torch.randn(3, *spec["input_shape"])
    with torch.no_grad():
        expected = model.eval()(x)
    try:
        supernet = expand(model, x[:1], ops, include_pooling=pooling, seed=seed)
    except ExpansionError as exc:
        assert "nothing to expand" in str(exc), str(exc)
        event("ExpansionError: nothing to expand")
        return
    layers = supernet.choice_layers()
    event(f"expanded: {min(len(layers), 4)}{'+' if len(layers) >= 4 else ''} layer(s)")
    assert layers and all(isinstance(m, ChoiceLayer) for m in layers.values())
    if all(layer.op_names[0] == "original" for layer in layers.values()):
        # alpha starts at zero, argmax 0 is "original": expansion alone must not change the function
        assert max_output_difference(supernet, model, x) <= 1e-5

    supernet.train()
    out = supernet(x)
    assert out.shape == expected.shape
    out.square().mean().backward()
    grads = [(n, p.grad) for n, p in supernet.named_parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for _, g in grads), [n for n, g in grads if not torch.isfinite(g).all()]
    assert all(layer.alpha.grad is not None for layer in layers.values())

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers.values():
            layer.alpha.copy_(torch.randn(layer.alpha.shape, generator=g))   # random choices to derive
    plain = derive(supernet)
    assert not any(isinstance(m, ChoiceLayer) for m in plain.modules())
    assert max_output_difference(supernet, plain, x) <= 1e-5
    with torch.no_grad():
        assert plain.eval()(x).shape == expected.shape
    if onnx:
        with tempfile.TemporaryDirectory() as tmp:
            info = export_onnx(plain, x, Path(tmp) / "m.onnx")   # raises unless onnxruntime matches within 1e-4
        assert info["max_abs_diff_vs_pytorch"] <= 1e-4


def _property(examples: int, onnx: bool):
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(spec=cnn_specs(), ops=st.sampled_from(OP_SETS), pooling=st.booleans(), seed=st.integers(0, 2**16))
    def run(spec, ops, pooling, seed):
        check_pipeline(spec, ops, pooling, seed, onnx)
    return run


# The bar: 200 generated models through the whole path, ONNX included, in CI (about 3-5 minutes here;
# the dynamo ONNX exporter is most of it), marked e2e so a plain `pytest` (the developer loop) runs 25 of them.
# The slow variant tries ten times as many; CI leaves out the 25 (``devloop``), as the 200 cover them.
test_random_cnns_expand_train_derive_export_onnx_25 = pytest.mark.devloop(_property(25, onnx=True))
test_random_cnns_expand_train_derive_export_onnx = pytest.mark.e2e(_property(200, onnx=True))
test_random_cnns_expand_train_derive_export_onnx_2000 = pytest.mark.slow(_property(2000, onnx=True))
