"""The C exporter: generated code compiled with strict warnings and run, float32 against PyTorch, int8 bit for bit
against the Python integer reference; the memory planner against hand-worked lifetimes; failures leave nothing."""
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lwdc import derive, expand
from lwdc.export import export_c
from lwdc.export.c import (
    ExportError,
    UnsupportedLayerError,
    compile_library,
    find_compiler,
    lower,
    plan_memory,
    run_float,
    run_int8,
    run_library,
)
from lwdc.export.c.graph import Graph, Node, Tensor
from lwdc.export.c.quant import fixed_point, round_shift
from lwdc.models import create_model
from lwdc.runs import save_portable

needs_cc = pytest.mark.skipif(find_compiler() is None, reason="no C compiler")


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-looking BatchNorm statistics, so folding is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


class ConcatNet(nn.Module):
    """Parallel branches joined by channel concat, a max-pool branch, then a strided grouped conv."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.b1 = nn.Sequential(nn.Conv2d(8, 6, 1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(8, 4, 1))
        self.down = nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=4)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.b1(x), self.b3(x), self.bp(x)], dim=1)
        return self.fc(self.down(x).mean(dim=(2, 3)))


class SepNet(nn.Module):
    """Depthwise-separable blocks (dw 3x3 -> BN -> ReLU6 -> pw 1x1 -> BN) with a residual add."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.pw = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.dw2 = nn.Sequential(nn.Conv2d(16, 16, 5, stride=2, padding=2, groups=16), nn.ReLU6())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))

    def forward(self, x):
        x = self.stem(x)
        x = x + self.pw(self.dw(x))
        return self.head(self.dw2(x))


class ZooNet(nn.Module):
    """The remaining supported layers at odd sizes: dilation, ceil-mode pooling with padding, standalone BN,
    sigmoid/SiLU, avg-pool without padding counted, Linear on flattened spatial features."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=2, dilation=2)
        self.pool1 = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        self.c2 = nn.Conv2d(6, 6, (3, 1), padding=(1, 0), groups=3, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.pool2 = nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False)
        self.pool3 = nn.AvgPool2d(2, 1, padding=1, count_include_pad=True)
        self.fc = nn.Linear(6 * 5 * 5, 3)

    def forward(self, x):
        x = nn.functional.silu(self.c1(x))
        x = self.pool1(x)
        x = self.bn(self.c2(x) + x)  # BN after an add: a depthwise 1x1 conv in C
        x = torch.sigmoid(self.pool2(x))
        return self.fc(torch.flatten(self.pool3(x), 1))


def lwdc_derived(ops: str = "lowrank", covers=("sep3x3", "skip", "conv1x1", "lowrank_d2", "lowrank_d4")) -> nn.Module:
    """ResNet-20 (width 0.5) through expand + derive, choices cycling through every candidate operator."""
    torch.manual_seed(0)
    supernet = expand(create_model("resnet20", width=0.5), torch.randn(2, 3, 32, 32), ops)
    picks = {}
    for i, (name, layer) in enumerate(supernet.choice_layers().items()):
        picks[name] = layer.op_names[i % len(layer.op_names)]
    assert set(covers) <= set(picks.values())
    return randomize_bn(derive(supernet, picks), seed=1)


def lwdc_ghost() -> nn.Module:
    """The same with GhostNet's operator (a convolution, a depthwise 3x3 on its output, a concatenation)."""
    return lwdc_derived("ghost", ("ghost_d2", "ghost_d4", "sep3x3"))


def lwdc_width() -> nn.Module:
    """Width operators: every residual block's inner pair cut to 3/4, 1/2 or 1/4 of its channels, the first
    layer of each pair cycling through the operators that can be cut (and a skip, which cannot)."""
    torch.manual_seed(0)
    supernet = expand(create_model("resnet20", width=0.5), torch.randn(2, 3, 32, 32), "width")
    producers = ("original", "conv3x3_g2", "conv1x1", "sep3x3", "skip", "conv3x3_g4")
    picks = {}
    for i, (consumer, chain) in enumerate(supernet.chains.items()):
        picks[consumer] = ("width75", "width50", "width25")[i % 3]
        picks[chain.producer] = producers[i % len(producers)]
    return randomize_bn(derive(supernet, picks), seed=1)


MODELS = {
    "resnet20": (lambda: randomize_bn(create_model("resnet20")), (3, 32, 32)),
    "lwdc_derived": (lwdc_derived, (3, 32, 32)),
    "lwdc_ghost": (lwdc_ghost, (3, 32, 32)),
    "lwdc_width": (lwdc_width, (3, 32, 32)),
    "depthwise_separable": (lambda: randomize_bn(SepNet()), (3, 32, 32)),
    "concat": (lambda: randomize_bn(ConcatNet()), (3, 16, 16)),
    "zoo_odd_sizes": (lambda: randomize_bn(ZooNet()), (3, 13, 11)),
    "vgg11_ceil_pool": (lambda: randomize_bn(create_model("vgg11", width=0.125)), (3, 32, 32)),
    "tinycnn1d": (lambda: randomize_bn(create_model("tinycnn1d", in_channels=2)), (2, 101)),
}


def _model(name):
    torch.manual_seed(0)
    build, shape = MODELS[name]
    return build(), shape


@needs_cc
@pytest.mark.parametrize("name", MODELS)
def test_float32_c_matches_pytorch(name, tmp_path):
    model, shape = _model(name)
    x = torch.randn(6, *shape) * 2
    result = export_c(model, x, tmp_path / "c")
    assert result.summary["verified"]["max_abs_diff_vs_pytorch"] <= 1e-4
    exe = compile_library(tmp_path / "c", opt="-O3")  # -O3 vectorises differently from the -O2 check
    fresh = torch.randn(5, *shape)
    with torch.no_grad():
        want = model(fresh).reshape(5, -1).numpy()
    got = run_library(exe, fresh.reshape(5, -1).numpy(), want.shape[1])
    assert np.abs(got - want).max() <= 1e-4
    source = (tmp_path / "c" / "model.c").read_text()
    assert "malloc(" not in source and "#include <stdlib.h>" not in source and "static const float n0_w" in source
    plan = result.plan
    assert plan.arena_bytes <= 1.10 * plan.lower_bound_bytes
    assert plan.arena_bytes < plan.naive_bytes


@needs_cc
@pytest.mark.parametrize("name", MODELS)
def test_int8_c_equals_integer_reference(name, tmp_path):
    model, shape = _model(name)
    calib = torch.randn(64, *shape)
    result = export_c(model, calib[:4], tmp_path / "q", int8=True, calib=calib)
    assert result.summary["verified"]["int8_matches_reference"] is True
    qg = result.qgraph
    x = torch.randn(12, *shape) * 3  # beyond the calibrated range too: saturation must agree
    xq = qg.qp(qg.graph.input).quantize(x.numpy()).reshape(12, -1)
    exe = compile_library(tmp_path / "q")
    got = run_library(exe, xq, int(np.prod(qg.graph.output_shape)), int8=True)
    want = run_int8(qg, xq.reshape(12, *shape)).reshape(12, -1)
    np.testing.assert_array_equal(got, want)
    float_out = run_library(exe, x.reshape(12, -1).numpy(), got.shape[1])  # float entry: quantise inside C
    np.testing.assert_array_equal(float_out, result.run_reference(x).reshape(12, -1))
    assert result.plan.arena_bytes <= 1.10 * result.plan.lower_bound_bytes


def test_int8_tracks_float_on_resnet20():
    """Quantisation error is small relative to the signal (a trained model's accuracy is checked in bench/)."""
    model, shape = _model("resnet20")
    calib = torch.randn(128, *shape)
    graph = lower(model, calib[:2])
    from lwdc.export.c.quant import calibrate, quantize, run_quantized
    qg = quantize(graph, calibrate(graph, [calib[:64], calib[64:]]))
    x = torch.randn(16, *shape)
    ref = run_float(graph, x).numpy()
    err = np.linalg.norm(run_quantized(qg, x.numpy()) - ref) / np.linalg.norm(ref)
    assert err < 0.1


def test_lowering_folds_batchnorm_and_fuses_relu():
    model, _ = _model("resnet20")
    graph = lower(model, torch.randn(1, 3, 32, 32))
    ops = [n.op for n in graph.nodes]
    assert ops.count("conv") == 22 and ops.count("add") == 9 and ops.count("gap") == 1  # 21 convs + the fc
    assert all(n.act == "relu" for n in graph.nodes if n.op == "add")
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert graph.params == sum(m.weight.numel() + m.weight.shape[0] for m in convs)  # one folded bias each
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(run_float(graph, x), model(x), atol=1e-5)


def test_lowering_accepts_a_saved_program_with_dynamic_batch(tmp_path):
    """Regression: a run's model.pt2 has a symbolic batch size (sym_size nodes), which lowering must skip."""
    model, shape = _model("concat")
    save_portable(model, torch.randn(2, *shape), tmp_path / "model.pt2")
    program = torch.export.load(str(tmp_path / "model.pt2"))
    graph = lower(program)
    x = torch.randn(3, *shape)
    assert torch.allclose(run_float(graph, x), model(x), atol=1e-5)


class Mish(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Mish(), nn.Conv2d(4, 2, 1))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("model, words", [
    (Mish(), ["'body.1'", "Mish", "mish"]),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Upsample(scale_factor=2, mode="bicubic")), ["'1'", "Upsample"]),
    (nn.Sequential(nn.ConvTranspose2d(3, 4, 3)), ["'0'", "ConvTranspose2d"]),
])
def test_unsupported_layer_is_named_and_nothing_is_written(model, words, tmp_path):
    with pytest.raises(UnsupportedLayerError) as err:
        export_c(model.eval(), torch.randn(1, 3, 8, 8), tmp_path / "out")
    for w in words:
        assert w in str(err.value)
    assert "supports" in str(err.value)
    assert os.listdir(tmp_path) == []


@needs_cc
def test_existing_folder_is_kept_unless_overwrite(tmp_path):
    model, shape = _model("concat")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_c(model, torch.randn(2, *shape), tmp_path / "c")
    assert (tmp_path / "c" / "mine.txt").exists()
    export_c(model, torch.randn(2, *shape), tmp_path / "c", overwrite=True, name="net")
    assert sorted(os.listdir(tmp_path / "c")) == ["deploy.json", "main.c", "net.c", "net.h"]
    assert sorted(os.listdir(tmp_path)) == ["c"]


def test_int8_without_calibration_is_refused(tmp_path):
    model, shape = _model("concat")
    with pytest.raises(ValueError, match="calibration"):
        export_c(model, torch.randn(2, *shape), tmp_path / "q", int8=True)
    assert not (tmp_path / "q").exists()


@needs_cc
def test_failed_verification_leaves_nothing(tmp_path, monkeypatch):
    import lwdc.export.c as c
    model, shape = _model("concat")
    monkeypatch.setattr(c, "run_library", lambda exe, x, n, int8=False: np.full((len(x), n), 99.0, np.float32))
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_c(model, torch.randn(2, *shape), tmp_path / "c")
    assert os.listdir(tmp_path) == []


# -- fixed point and the memory planner, on hand-worked cases ---------------------------------------------------

def test_round_shift_rounds_half_up_like_the_c_helper():
    v = np.array([-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5], np.int64)
    np.testing.assert_array_equal(round_shift(v, 1), np.floor((v + 1) / 2).astype(np.int64))
    np.testing.assert_array_equal(round_shift(v, 2), [-1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1])


@given(st.floats(min_value=1e-9, max_value=1e6, allow_nan=False))
@settings(max_examples=200, deadline=None)
def test_fixed_point_multiplier_is_accurate(multiplier):
    m, n = fixed_point(multiplier)
    assert 1 <= n <= 62 and 0 <= m < 2 ** 31
    approx = m / 2 ** n
    assert abs(approx - multiplier) <= max(multiplier * 2 ** -30, 2 ** -62)


def _chain_graph(sizes, ops=None):
    """A hand-made graph: t0 -> t1 -> ... with the given element counts (shape (n, 1, 1))."""
    tensors = {f"t{i}": Tensor(f"t{i}", (s, 1, 1), f"t{i}") for i, s in enumerate(sizes)}
    nodes = [Node((ops or {}).get(i, "conv"), [f"t{i}"], f"t{i + 1}", f"l{i}") for i in range(len(sizes) - 1)]
    return Graph(tensors, nodes, "t0", f"t{len(sizes) - 1}", (sizes[0],), (sizes[-1],))


def test_planner_on_a_chain_reaches_the_hand_worked_peak():
    g = _chain_graph([100, 200, 50, 10])
    plan = plan_memory(g, 4, align=4)
    # live pairs: (t0, t1) = 300, (t1, t2) = 250, (t2, t3) = 60 values
    assert plan.lower_bound_bytes == 300 * 4 and plan.arena_bytes == 300 * 4
    assert plan.naive_bytes == 360 * 4


def test_planner_keeps_a_residual_alive_and_works_in_place():
    # t0 -> t1 (conv) -> t2 (conv) ; t3 = add(t2, t1) ; t4 = act(t3)
    tensors = {f"t{i}": Tensor(f"t{i}", (64, 1, 1), f"t{i}") for i in range(5)}
    nodes = [Node("conv", ["t0"], "t1", "a"), Node("conv", ["t1"], "t2", "b"), Node("add", ["t2", "t1"], "t3", "c"),
             Node("act", ["t3"], "t4", "d", act="sigmoid")]
    g = Graph(tensors, nodes, "t0", "t4", (64,), (64,))
    plan = plan_memory(g, 1, align=1)
    assert plan.buffer_of["t3"] in ("t1", "t2")  # the add overwrites an input that dies with it
    assert plan.lower_bound_bytes == 128 and plan.arena_bytes == 128  # never three 64-byte buffers at once
    no_reuse = plan_memory(g, 1, align=1, in_place=False)
    assert no_reuse.lower_bound_bytes == 192


@given(st.lists(st.integers(1, 300), min_size=2, max_size=12), st.lists(st.integers(0, 10), max_size=12),
       st.sampled_from([1, 4, 16]))
@settings(max_examples=200, deadline=None)
def test_planner_never_overlaps_live_buffers(sizes, skips, align):
    """Random chains with extra long-range inputs: buffers alive at the same step never share bytes."""
    g = _chain_graph(sizes)
    for i, s in enumerate(skips):
        if i < len(g.nodes) and s < i:
            g.nodes[i].inputs.append(f"t{s}")  # a long-lived input, like a residual
    plan = plan_memory(g, 4, align=align)
    steps = {}
    for step, node in enumerate(g.nodes, 1):
        for t in [*node.inputs, node.output]:
            steps.setdefault(plan.buffer_of[t], set()).add(step)
    steps[plan.buffer_of["t0"]].add(0)
    live = {b: (min(s), max(s)) for b, s in steps.items()}
    for a in live:
        for b in live:
            if a < b and live[a][0] <= live[b][1] and live[b][0] <= live[a][1]:
                oa, ob = plan.offsets[a], plan.offsets[b]
                assert oa + plan.sizes[a] <= ob or ob + plan.sizes[b] <= oa
    assert plan.lower_bound_bytes <= plan.arena_bytes <= plan.naive_bytes + align * len(sizes)
    assert all(o % align == 0 for o in plan.offsets.values())


def test_bias_correction_removes_the_mean_shift_of_every_output_channel():
    """Empirical bias correction: on the calibration inputs, the largest mean int8 error of an output channel of
    this ResNet-20 falls from about one output step (0.98) to under a quarter (0.08 measured), and the error it
    leaves is smaller overall."""
    from lwdc.export.c.quant import calibrate, correct_biases, quantize, run_quantized
    model, shape = _model("resnet20")
    torch.manual_seed(0)
    calib = torch.randn(64, *shape)
    graph = lower(model, calib[:2])
    ranges = calibrate(graph, [calib])
    ref = run_float(graph, calib).numpy()
    plain, fixed = quantize(graph, ranges), quantize(graph, ranges)
    changed = correct_biases(fixed, [calib])
    assert len(changed) == sum(n.op == "conv" for n in graph.nodes) and max(changed.values()) > 0
    shift_before = np.abs((run_quantized(plain, calib.numpy()) - ref).mean(axis=0))
    shift_after = np.abs((run_quantized(fixed, calib.numpy()) - ref).mean(axis=0))
    step = fixed.qp(graph.output).scale
    assert shift_after.max() < 0.25 * step and shift_before.max() > 0.5 * step
    assert np.abs(run_quantized(fixed, calib.numpy()) - ref).mean() < np.abs(run_quantized(plain, calib.numpy()) - ref).mean()


@needs_cc
def test_bias_corrected_int8_c_still_equals_its_reference(tmp_path):
    model, shape = _model("resnet20")
    calib = torch.randn(32, *shape)
    result = export_c(model, calib[:2], tmp_path / "q", int8=True, calib=calib, bias_correction=True)
    assert result.summary["verified"]["int8_matches_reference"] is True
    assert result.summary["bias_correction"]["convs"] > 0
    with pytest.raises(ValueError, match="int8"):
        export_c(model, calib[:2], tmp_path / "f", bias_correction=True)
    assert not (tmp_path / "f").exists()


def test_mse_calibration_clips_a_heavy_tail_and_lowers_the_error():
    """Heavy-tailed activations: min/max spends the 8-bit range on rare extremes; the MSE range clips them and
    quantises the bulk with a finer step, so its quantise-dequantise error is lower."""
    from lwdc.export.c.quant import QParams, calibrate
    model = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))
    torch.manual_seed(0)
    x = torch.distributions.Laplace(0.0, 1.0).sample((32, 2, 16, 16))
    graph = lower(model, x[:1])
    out = graph.tensors[graph.output].storage
    lo, hi = calibrate(graph, [x])[out]
    assert (lo, hi) == (pytest.approx(float(x.min())), pytest.approx(float(x.max())))
    mlo, mhi = calibrate(graph, [x], method="mse")[out]
    assert lo < mlo < 0.0 < mhi < hi
    v = x.reshape(-1).numpy()
    def err(r):
        qp = QParams.from_range(*r)
        return float(((qp.dequantize(qp.quantize(v)) - v) ** 2).mean())
    assert err((mlo, mhi)) < err((lo, hi))
    with pytest.raises(ValueError, match="minmax"):
        calibrate(graph, [x], method="kl")
