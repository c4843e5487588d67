"""Data movement in the C exporter: channel split/chunk/slice/narrow as views (no copy, no buffer), spatial slices,
padding of every mode, nearest and bilinear upsampling, mean over any dims. Each op sits between convs in a small
net that is exported as float32 C (against PyTorch), int8 C (bit for bit against the integer reference) and, all
together, ONNX; the memory plan is checked on views."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lwdc.export.c import calibrate, export_c, find_compiler, lower, plan_memory, quantize, run_float
from lwdc.export.c.graph import Graph, Node, Tensor
from lwdc.export.c.quant import run_node_int8
from lwdc.export.c.reference import run_node

needs_cc = pytest.mark.skipif(find_compiler() is None, reason="no C compiler")


class Chain(nn.Module):
    """conv -> op -> conv -> op ... -> flatten -> linear: every output position of every op reaches the result."""

    def __init__(self, *fns, shape=(3, 8, 10)):
        super().__init__()
        self.fns, convs = fns, []
        y = torch.zeros(1, *shape)
        for fn in fns:
            convs.append(nn.Conv2d(y.shape[1], 8, 3, padding=1))
            y = fn(convs[-1](y))
        self.convs, self.last = nn.ModuleList(convs), nn.Conv2d(y.shape[1], 4, 1)
        self.fc = nn.Linear(4 * y.shape[2:].numel(), 3)

    def forward(self, x):
        for conv, fn in zip(self.convs, self.fns):
            x = fn(conv(x))
        return self.fc(torch.flatten(self.last(x), 1))


class SplitNet(nn.Module):
    """The split of a ShuffleNet/GhostNet-style block: channel parts through their own convs, then concat."""

    def __init__(self, split=lambda x: torch.split(x, [6, 10], dim=1), split_input=False):
        super().__init__()
        self.split, self.split_input = split, split_input
        self.c1 = nn.Identity() if split_input else nn.Conv2d(3, 16, 3, padding=1)
        parts = split(torch.zeros(1, 16, 4, 4))
        self.branch = nn.ModuleList(nn.Conv2d(p.shape[1], 4, 3, padding=1) for p in parts)
        self.out = nn.Conv2d(4 * len(parts), 2, 1)
        self.fc = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        y = torch.cat([torch.relu(b(p)) for b, p in zip(self.branch, self.split(self.c1(x)))], dim=1)
        return self.fc(torch.flatten(self.out(y), 1))


CASES = {
    "split": lambda: SplitNet(),
    "chunk_swapped_slice_narrow_select": lambda: SplitNet(lambda x: (
        *torch.chunk(x, 2, dim=1)[::-1], x[:, 3:9], x.narrow(1, 9, 7), x[:, 2].unsqueeze(1))),
    "split_input": lambda: SplitNet(lambda x: torch.split(x, [2, 14], dim=1), split_input=True),
    "spatial_slices": lambda: Chain(lambda x: x[:, 1:7, 1:7:2, 3:], lambda x: x[:, :, 2].unsqueeze(2),
                                    lambda x: x[:, ::3]),
    "nearest": lambda: Chain(nn.Upsample(scale_factor=2), lambda x: F.interpolate(x, size=(11, 13)),
                             lambda x: F.interpolate(x, scale_factor=1.5)),
    "bilinear": lambda: Chain(nn.Upsample(scale_factor=2, mode="bilinear"),
                              lambda x: F.interpolate(x, size=(13, 7), mode="bilinear", align_corners=True),
                              lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear"),
                              lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)),
    "pads": lambda: Chain(nn.ZeroPad2d((1, 2, 0, 3)), lambda x: F.pad(x, (2, 1, 1, 1), value=0.5),
                          lambda x: F.pad(x, (1, 0, 0, 1, 2, 1), value=-1.0), lambda x: F.pad(x, (-1, -2, 0, -1)),
                          nn.ReflectionPad2d((2, 1, 1, 2)), nn.ReplicationPad2d((1, 2, 2, 0)),
                          lambda x: F.pad(x, (1, 1, 2, 0), mode="circular")),
    "means": lambda: Chain(lambda x: x.mean(1, keepdim=True), lambda x: x.mean(2, keepdim=True),
                           lambda x: x.mean(-1).unsqueeze(-1), lambda x: x.mean((1, 2, 3), keepdim=True)),
}


def _inputs(model, n=8):
    torch.manual_seed(1)
    c = 16 if getattr(model, "split_input", False) else 3
    return torch.randn(n, c, 8, 8) if isinstance(model, SplitNet) else torch.randn(n, c, 8, 10)


@needs_cc
@pytest.mark.parametrize("case", CASES)
def test_movement_ops_export_to_c_float_and_int8(case, tmp_path):
    torch.manual_seed(0)
    model = CASES[case]().eval()
    x = _inputs(model)
    if isinstance(model, SplitNet):
        assert "slice" not in [n.op for n in lower(model, x[:1]).nodes]  # channel ranges are views
    fp = export_c(model, x, tmp_path / "f32")
    assert fp.summary["verified"]["max_abs_diff_vs_pytorch"] <= fp.summary["verified"]["limit"]
    q8 = export_c(model, x[:4], tmp_path / "q8", int8=True, calib=x)
    assert q8.summary["verified"]["int8_matches_reference"] is True


@pytest.mark.parametrize("case", ["bilinear", "pads", "means", "spatial_slices", "nearest"])
def test_int8_rules_stay_within_half_a_step_of_float(case):
    """Each op's integer rule against its float reference on the dequantised input: the result keeps the input's
    step and is off by at most half of it (rounding), plus 1/8 step for bilinear's Q11 weights; values outside
    the int8 range (a pad constant) saturate."""
    torch.manual_seed(0)
    model = CASES[case]().eval()
    x = _inputs(model)
    graph = lower(model, x[:1])
    qg = quantize(graph, calibrate(graph, [x]))
    rng = np.random.default_rng(0)
    checked = set()
    for i, node in enumerate(graph.nodes):
        if node.op in ("conv", "act"):
            continue
        qp, shape = qg.qp(node.inputs[0]), graph.tensors[node.inputs[0]].shape
        xq = rng.integers(-128, 128, (4, *shape)).astype(np.int8)
        got = qp.dequantize(run_node_int8(qg, i, [xq]))
        want = run_node(node, [torch.from_numpy(qp.dequantize(xq))]).numpy().reshape(got.shape)
        want = np.clip(want, qp.dequantize(np.int8(-128)), qp.dequantize(np.int8(127)))
        assert qg.qp(node.output) == qp and np.abs(got - want).max() <= 0.63 * qp.scale, node.op
        checked.add(node.op)
    assert checked


@pytest.mark.parametrize("fn, gathers", [
    (lambda x: x[:, :, 1:-1, 1:-1], 1),  # a crop is two slices: one pass
    (lambda x: F.pad(x, (2, 2, 1, 1), mode="reflect")[:, :, :, 1:], 1),
    (lambda x: F.interpolate(F.pad(x, (1, 1, 1, 1), value=0.5), scale_factor=2)[:, 2:5], 1),  # and a view
    (lambda x: F.pad(F.pad(x, (1, 1), value=0.5), (0, 0, 1, 1), value=0.25), 2),  # two fill values: two passes
    (lambda x: F.pad(F.pad(x, (1, 1), value=0.5), (0, 0, 1, 1), value=0.5), 1),
])
def test_consecutive_gathers_fuse_into_one_node(fn, gathers):
    torch.manual_seed(0)
    model, x = Chain(fn).eval(), torch.randn(3, 3, 8, 10)
    graph = lower(model, x[:1])
    assert len([n for n in graph.nodes if n.op not in ("conv", "act")]) == gathers
    assert torch.allclose(run_float(graph, x), model(x), atol=1e-5)


def test_mean_over_the_spatial_dims_stays_a_global_average_pool():
    ops = [n.op for n in lower(Chain(lambda x: x.mean((-2, -1), keepdim=True)).eval(), torch.randn(1, 3, 8, 10)).nodes]
    assert "gap" in ops and "mean" not in ops


class OneD(nn.Module):
    """1-D signals (N, C, L): nearest and linear upsampling, reflection padding, a strided slice."""

    def __init__(self):
        super().__init__()
        self.fns = [lambda x: F.interpolate(x, scale_factor=2), lambda x: F.interpolate(x, size=29, mode="linear"),
                    lambda x: F.pad(x, (2, 1), mode="reflect"), lambda x: x[:, :, 1::2]]
        self.convs = nn.ModuleList(nn.Conv1d(6 if i else 2, 6, 3, padding=1) for i in range(4))
        self.fc = nn.Linear(6 * 16, 2)

    def forward(self, x):
        for conv, fn in zip(self.convs, self.fns):
            x = fn(conv(x))
        return self.fc(torch.flatten(x, 1))


@needs_cc
def test_one_d_movement_exports(tmp_path):
    torch.manual_seed(0)
    model, x = OneD().eval(), torch.randn(6, 2, 9)
    assert {"upsample_nearest", "bilinear", "slice"} <= {n.op for n in lower(model, x[:1]).nodes}
    assert export_c(model, x, tmp_path / "f").summary["verified"]
    assert export_c(model, x, tmp_path / "q", int8=True, calib=x).summary["verified"]["int8_matches_reference"]


class OutputView(nn.Module):
    """The model's output is a view at an offset into the last layer's buffer."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 7))

    def forward(self, x):
        return self.body(x)[:, 2:5]


@needs_cc
@pytest.mark.parametrize("int8", [False, True])
def test_output_that_is_a_view_is_read_from_its_offset(int8, tmp_path):
    torch.manual_seed(0)
    model, x = OutputView().eval(), torch.randn(6, 3, 8, 8)
    graph = lower(model, x[:1])
    out = graph.tensors[graph.output]
    assert out.offset == 2 and out.storage != graph.output and [n.op for n in graph.nodes] == ["conv", "conv"]
    assert torch.allclose(run_float(graph, x), model(x), atol=1e-5)
    result = export_c(model, x, tmp_path / "c", int8=int8, calib=x)
    assert result.summary["verified"] is not None and "model.c" in {p.name for p in (tmp_path / "c").iterdir()}


def _materialised(graph: Graph) -> Graph:
    """The same graph with every view copied into a buffer of its own right after its source is written."""
    sizes = graph.storage_sizes()
    views = [t.name for t in graph.tensors.values() if t.size != sizes[t.storage]]
    tensors = {**graph.tensors, **{f"{v}_copy": Tensor(f"{v}_copy", graph.tensors[v].shape, f"{v}_copy")
                                   for v in views}}
    nodes = []
    for node in graph.nodes:
        nodes.append(Node(node.op, [f"{i}_copy" if i in views else i for i in node.inputs], node.output, node.where))
        nodes += [Node("slice", [v], f"{v}_copy", "copy") for v in views if graph.tensors[v].storage == node.output]
    return Graph(tensors, nodes, graph.input, graph.output, graph.input_shape, graph.output_shape)


def test_split_takes_no_buffer_and_the_plan_reaches_the_liveness_bound():
    """conv -> split -> two convs -> concat: the halves are views of the conv's buffer, so at no step is more live
    than that buffer, the branch outputs and the concat; the greedy placement reaches that bound exactly. Copying
    the halves out (what a split kernel would do) keeps the source and both copies alive at once: more RAM."""
    torch.manual_seed(0)
    model = SplitNet().eval()
    graph = lower(model, torch.randn(1, 3, 8, 8))
    assert [n.op for n in graph.nodes].count("slice") == 0
    views = [t for t in graph.tensors.values() if t.offset]
    assert len(views) == 1 and views[0].offset == 6 * 64  # the second half starts 6 channel planes in
    plan = plan_memory(graph, 1, align=1)
    assert plan.arena_bytes == plan.lower_bound_bytes
    assert set(plan.offsets) == {t.storage for t in graph.tensors.values()}  # no buffer for a view
    # live at the second branch: the conv output (16 planes), both branch outputs (4 planes each)
    assert plan.lower_bound_bytes == (16 + 4 + 4) * 64
    copied = plan_memory(_materialised(graph), 1, align=1)
    assert copied.lower_bound_bytes == copied.arena_bytes == (16 + 6 + 10) * 64
    assert plan.arena_bytes < copied.arena_bytes


def test_view_keeps_its_storage_alive_until_its_last_reader():
    """A view read late keeps its whole storage live; buffers never overlap while live, views included."""
    t = {"x": Tensor("x", (4, 1, 1), "x"), "a": Tensor("a", (8, 1, 1), "a"), "lo": Tensor("lo", (4, 1, 1), "a"),
         "hi": Tensor("hi", (4, 1, 1), "a", offset=4), "b": Tensor("b", (4, 1, 1), "b"),
         "c": Tensor("c", (4, 1, 1), "c"), "y": Tensor("y", (8, 1, 1), "y")}
    nodes = [Node("conv", ["x"], "a", "1"), Node("conv", ["lo"], "b", "2"), Node("act", ["b"], "c", "3", act="relu"),
             Node("concat", ["c", "hi"], "y", "4")]
    g = Graph(t, nodes, "x", "y", (4,), (8,))
    plan = plan_memory(g, 1, align=1)
    assert set(plan.offsets) == {"x", "a", "b", "y"} and plan.sizes["a"] == 8  # the views take no buffer
    assert plan.buffer_of["c"] == "b"  # the ReLU works in place over 'b', which dies there
    a, b = (set(range(plan.offsets[s], plan.offsets[s] + plan.sizes[s])) for s in "ab")
    assert not a & b  # 'a' stays live until the concat reads its upper half, after 'c' is written


def test_in_place_ops_never_write_over_a_part_view():
    """add(a view of half of s, b): s dies at the add and has the output's size, but the add reads the view while
    writing; it may only work in place over b, a whole buffer."""
    t = {"x": Tensor("x", (8, 1, 1), "x"), "s": Tensor("s", (8, 1, 1), "s"), "a": Tensor("a", (4, 1, 1), "s"),
         "b": Tensor("b", (8, 1, 1), "b"), "o": Tensor("o", (8, 1, 1), "o"), "y": Tensor("y", (2, 1, 1), "y")}
    nodes = [Node("conv", ["x"], "s", "1"), Node("conv", ["x"], "b", "2"), Node("add", ["a", "b"], "o", "3"),
             Node("conv", ["o"], "y", "4")]
    plan = plan_memory(Graph(t, nodes, "x", "y", (8,), (2,)), 1, align=1)
    assert plan.buffer_of["o"] == "b"


class Zoo(nn.Module):
    """Every op of this file in one net, for ONNX (and once more for C)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(5, 4, 1)
        self.c2 = nn.Conv2d(9, 4, 3)
        self.fc = nn.LazyLinear(3)
        self(torch.zeros(1, 3, 8, 10))  # sizes the Linear

    def forward(self, x):
        lo, hi = torch.split(self.c1(x), [3, 5], dim=1)
        y = torch.cat([self.a(lo)[..., :9], self.b(hi[..., 1:]).narrow(3, 0, 9)[..., ::1]], dim=1)
        y = F.pad(F.interpolate(y, scale_factor=2), (1, 0, 0, 1), mode="reflect")[:, :, 1:, :]
        y = F.interpolate(F.pad(y, (0, 1, 1, 0), mode="replicate"), size=(16, 20), mode="bilinear")
        y = self.c2(torch.cat([F.pad(y, (1, 1), value=0.25)[..., :20], y.mean(1, keepdim=True)], dim=1))
        return self.fc(torch.cat([y.flatten(1), y.mean((1, 3)), y.mean((2, 3))], 1))


def test_all_of_them_export_to_onnx_too(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from lwdc.export.onnx import export_onnx
    torch.manual_seed(0)
    model, x = Zoo().eval(), torch.randn(4, 3, 8, 10)
    assert export_onnx(model, x, tmp_path / "zoo.onnx")["max_abs_diff_vs_pytorch"] < 1e-3
    graph = lower(model, x[:1])
    assert torch.allclose(run_float(graph, x), model(x), atol=1e-4)
    assert {"upsample_nearest", "bilinear", "pad", "slice", "mean"} <= {n.op for n in graph.nodes}
    if find_compiler():
        export_c(model, x, tmp_path / "f")
        assert export_c(model, x, tmp_path / "q", int8=True, calib=x).summary["verified"]["int8_matches_reference"]
