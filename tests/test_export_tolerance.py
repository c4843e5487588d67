"""One verification rule for ONNX and C that scales with the outputs: a deep random-weight network with large
outputs exports without a false "bug in lwdc", while a real lowering error is still caught."""
import numpy as np
import pytest
import torch
from torch import nn

import lwdc.export.c as export_c_module
from lwdc.export import export_c
from lwdc.export.c import ExportError, find_compiler, lower, run_float
from lwdc.export.onnx import export_onnx
from lwdc.export.tolerance import Tolerance, pytorch_rounding

needs_cc = pytest.mark.skipif(find_compiler() is None, reason="no C compiler")


def deep_loud_net(depth: int = 24, channels: int = 32, gain: float = 3.5) -> nn.Module:
    """Plain conv-ReLU stack whose weights are scaled up so activations grow layer by layer (outputs ~3000)."""
    torch.manual_seed(0)
    layers, c = [], 3
    for _ in range(depth):
        layers += [nn.Conv2d(c, channels, 3, padding=1), nn.ReLU()]
        c = channels
    net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * 16 * 16, 10))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(gain)
    return net.eval()


def test_limit_grows_with_the_reference_and_with_pytorch_rounding():
    tol = Tolerance(atol=1e-4, rtol=1e-3, rounding_factor=10)
    assert tol.limit(np.array([0.5, -2.0])) == pytest.approx(1e-4 + 2e-3)
    assert tol.limit(np.array([1.0]), rounding=1e-5) == pytest.approx(1e-4 + 1e-3 + 1e-4)
    v = tol.verdict(3e-3, np.array([2.0]))
    assert v["within"] is False and v["limit"] == pytest.approx(2.1e-3) and "max|reference|" in v["rule"]


@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf")])
def test_a_tolerance_must_be_finite_and_non_negative(bad):
    with pytest.raises(ValueError, match="rtol must be a finite number"):
        Tolerance(rtol=bad)


def test_the_deep_network_defeats_a_fixed_absolute_tolerance():
    """The control: this network's exact lowering differs from PyTorch by more than 1e-4 (float rounding)."""
    net, x = deep_loud_net(), torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    expected = net(x).detach()
    diff = float((run_float(lower(net, x[:1]), x) - expected).abs().max())
    assert float(expected.abs().max()) > 1000
    assert diff > 1e-3                                 # what the old fixed rule called "a bug in lwdc"
    rounding = pytorch_rounding(net, x, expected.numpy())
    assert rounding > 1e-5                             # PyTorch's own float32 output is that far from float64
    assert diff <= Tolerance().limit(expected.numpy(), rounding)


@needs_cc
def test_deep_network_exports_to_c_and_onnx_without_a_false_bug(tmp_path):
    net, x = deep_loud_net(), torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    result = export_c(net, x, tmp_path / "c")
    tol = result.summary["tolerance"]
    assert tol["within"] and tol["max_abs_diff"] > 1e-4 and tol["limit"] > tol["max_abs_diff"]
    assert "max|reference|" in tol["rule"]
    assert result.summary["verified"]["max_abs_diff_vs_pytorch"] <= result.summary["verified"]["limit"]
    info = export_onnx(net, x, tmp_path / "m.onnx")
    assert info["tolerance"]["within"] and info["tolerance"]["rule"] == tol["rule"]


def test_a_real_lowering_error_is_still_called_a_bug(tmp_path, monkeypatch):
    """A 1% error on outputs is far beyond rounding: still refused, nothing written."""
    net, x = deep_loud_net(depth=4, gain=1.0), torch.randn(2, 3, 16, 16)
    real = export_c_module.run_float
    monkeypatch.setattr(export_c_module, "run_float", lambda g, inp, **kw: real(g, inp, **kw) * 1.01 + 0.01)
    with pytest.raises(ExportError, match="beyond float rounding .* bug in lwdc's lowering"):
        export_c(net, x, tmp_path / "c", verify=False)
    assert not (tmp_path / "c").exists()
