"""The op table: an op registered from this file (no file of lwdc/export/c edited) exports, compiles and matches
PyTorch in float32 and the integer reference bit for bit in int8; clamp(min=0) lowers as ReLU; targets are a
registry too."""
import numpy as np
import pytest
import torch
from torch import nn

from lwdc.export.c import UnsupportedLayerError, export_c, find_compiler, lower, run_float
from lwdc.export.c.fixed import QNode, centred, fixed_point, round_shift
from lwdc.export.c.ops import Op, Unary, register_op, unregister_op
from lwdc.export.c.targets import Target, get_target, register_target, targets

needs_cc = pytest.mark.skipif(find_compiler() is None, reason="no C compiler")
A = torch.ops.aten

NEG_Q8 = """static void lw_neg_q8(const int8_t *x, int8_t *y, int n, int zx, int zy, int64_t m, int s)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = lw_sat(lw_round_shift(-((int64_t)x[i] - zx) * m, s) + zy, -128, 127);
}
"""


class Neg(Op):
    """``torch.neg`` written out in full, every part of an op entry: lowering, float reference, int8 constants and
    integer reference, and C for both builds with its own kernels (int8: one fixed-point rescale, no table)."""
    name = "neg"
    supports = ("torch.neg",)
    aten = (A.neg.default,)
    in_place = True
    kernels = {"neg_f32": "static void lw_neg_f32(const float *x, float *y, int n)\n{\n    int i;\n"
                          "    for (i = 0; i < n; ++i) y[i] = -x[i];\n}\n",
               "neg_q8": NEG_Q8}

    def lower(self, lw, node, a):
        lw.emit(node, self.name, [lw.tensor_of(a["self"], node)])

    def run(self, node, xs):
        return -xs[0]

    def quantize(self, node, qin, qout):
        m, n = fixed_point(qin[0].scale / qout.scale)
        return QNode(mult=np.array([m], np.int64), shift=np.array([n], np.int64))

    def run_int8(self, node, q, xs, qin, qout):
        return round_shift(-centred(xs, qin)[0] * q.mult[0], q.shift[0]) + qout.zero_point

    def emit(self, e, node):
        src, dst, n = e.at(node.inputs[0]), e.at(node.output), e.size(node.output)
        if e.int8:
            e.use("fixed", "neg_q8")
            e.call("neg_q8", src, dst, n, e.zp(node.inputs[0]), e.zp(node.output), f"{e.qnode.mult[0]}LL",
                   e.qnode.shift[0])
        else:
            e.use("neg_f32")
            e.call("neg_f32", src, dst, n)


class Abs(Unary):
    """The short form for an elementwise function: int8 is a table the base class builds."""
    name, supports, aten, c_expr = "abs", ("torch.abs",), (A.abs.default,), "v < 0.0f ? -v : v"

    def fn(self, node, x):
        return x.abs()


@pytest.fixture
def local_ops():
    register_op(Neg)
    register_op(Abs())
    yield
    unregister_op("neg")
    unregister_op("abs")


class NegAbsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.neg(self.c1(x))
        x = torch.abs(self.c2(x))
        return self.fc(torch.neg(x).mean(dim=(2, 3)))


@needs_cc
@pytest.mark.parametrize("int8", [False, True])
def test_an_op_registered_from_outside_exports_runs_in_c_and_matches(local_ops, int8, tmp_path):
    torch.manual_seed(0)
    model = NegAbsNet().eval()
    x = torch.randn(16, 3, 9, 9)
    graph = lower(model, x[:1])
    assert [n.op for n in graph.nodes].count("neg") == 2 and "abs" in [n.op for n in graph.nodes]
    assert torch.allclose(run_float(graph, x), model(x), atol=1e-5)
    result = export_c(model, x[:6], tmp_path / "c", int8=int8, calib=x if int8 else None)
    source = (tmp_path / "c" / "model.c").read_text()
    if int8:
        assert result.summary["verified"]["int8_matches_reference"] is True  # C == integer reference, every bit
        assert "lw_neg_q8(" in source and "lw_lut_q8(" in source
        assert result.summary["verified"]["max_abs_diff_vs_pytorch_float"] < 0.1
    else:
        assert result.summary["verified"]["max_abs_diff_vs_pytorch"] <= 1e-4
        assert "lw_neg_f32(" in source and "lw_abs_f32(" in source


def test_unregistered_op_is_refused_and_a_taken_target_cannot_be_registered_twice(local_ops):
    unregister_op("neg")
    with pytest.raises(UnsupportedLayerError, match="neg"):
        lower(nn.Sequential(nn.Conv2d(3, 3, 1), _Lambda(torch.neg)).eval(), torch.randn(1, 3, 4, 4))
    register_op(Neg)
    with pytest.raises(ValueError, match="already registered"):
        register_op(Neg)

    class BadName(Neg):
        name = "neg */ evil"
    with pytest.raises(ValueError, match="C identifier"):
        register_op(BadName)


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@needs_cc
@pytest.mark.parametrize("fn, fused", [
    (lambda x: torch.clamp(x, min=0), "relu"),
    (lambda x: x.clamp_min(0), "relu"),
    (lambda x: torch.clamp(x, 0, 6), "relu6"),
    (lambda x: torch.clamp(torch.sigmoid(x), min=0.0), None),  # after a sigmoid: a node of its own
])
def test_clamp_at_zero_lowers_as_relu(fn, fused, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _Lambda(fn), nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(8, 3, 8, 8) * 4
    graph = lower(model, x[:1])
    if fused:
        assert graph.nodes[0].act == fused and [n.op for n in graph.nodes] == ["conv", "conv"]
    else:
        assert [n.act for n in graph.nodes if n.op == "act"] == ["sigmoid", "relu"]
    for int8 in (False, True):
        result = export_c(model, x, tmp_path / f"c{int8}", int8=int8, calib=x)
        assert result.summary["verified"] is not None


def test_clamp_to_another_range_names_the_range():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _Lambda(lambda x: x.clamp(-1, 1))).eval()
    with pytest.raises(UnsupportedLayerError, match=r"clamping to \[-1, 1\]"):
        lower(model, torch.randn(1, 3, 8, 8))


def test_targets_are_a_registry_with_host():
    host = get_target("host")
    assert "host" in targets() and host.runner == () and "-Werror" in host.flags
    assert host.run_command("/x/model", "a") == ["/x/model", "a"]
    with pytest.raises(ValueError, match="host"):
        get_target("cortex-m99")
    with pytest.raises(ValueError, match="already"):
        register_target(Target("host", ("cc",)))
