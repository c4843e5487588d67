"""Failures the exporters must meet with one clear line and no litter: models returning several tensors or
holding float64 weights, a compiler that fails (no lwdc-c-* folder left in the temp dir), private files."""
import os
import stat
import tempfile

import pytest
import torch
from torch import nn

from lwdc.export.c import CompilerError, compile_library, export_c, find_compiler, lower, run_float

needs_cc = pytest.mark.skipif(find_compiler() is None, reason="no C compiler")


class Returns(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return {"tuple": lambda: (y, y.mean()), "dict": lambda: {"out": y}, "list": lambda: [y],
                "tuple1": lambda: (y,)}[self.kind]()


def _export_onnx(model, x, path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from lwdc.export.onnx import export_onnx
    return export_onnx(model, x, path)


EXPORTERS = {"c": lambda m, x, p: export_c(m, x, p, verify=False), "onnx": _export_onnx}
BAD_MODELS = {
    "tuple": (lambda: Returns("tuple"), "returns a tuple of 2"),
    "dict": (lambda: Returns("dict"), "returns a dict of 1"),
    "list": (lambda: Returns("list"), "returns a list of 1"),
    "tuple1": (lambda: Returns("tuple1"), "returns a tuple of 1"),
    "float64": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3)).double(), "float64 weights"),
    "float16": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3)).half(), "float16 weights"),
}


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("case", BAD_MODELS)
def test_models_an_exporter_cannot_take_fail_with_one_clear_line(exporter, case, tmp_path):
    build, words = BAD_MODELS[case]
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64 if case == "float64" else torch.float32)
    with pytest.raises(ValueError) as err:
        EXPORTERS[exporter](build().eval(), x, tmp_path / "out")
    message = str(err.value)
    assert words in message and "\n" not in message
    assert ("one tensor output" in message) or ("model.float()" in message)
    assert os.listdir(tmp_path) == []


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The process temp dir pointed at an empty folder, so only this test's leftovers are counted."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _scratch(tmp) -> list[str]:
    return sorted(p for p in os.listdir(tmp) if p.startswith("lwdc-"))


@needs_cc
def test_a_failed_compile_leaves_no_temporary_folder(private_tmp, tmp_path, monkeypatch):
    export_c(nn.Sequential(nn.Conv2d(3, 4, 3)).eval(), torch.randn(2, 3, 8, 8), tmp_path / "c", verify=False)
    (tmp_path / "c" / "model.c").write_text("this is not C\n")
    with pytest.raises(CompilerError, match="failed"):
        compile_library(tmp_path / "c")
    assert _scratch(private_tmp) == []

    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    with pytest.raises(CompilerError):
        export_c(nn.Sequential(nn.Conv2d(3, 4, 3)).eval(), torch.randn(2, 3, 8, 8), tmp_path / "d")
    assert _scratch(private_tmp) == [] and not (tmp_path / "d").exists()
    assert sorted(os.listdir(tmp_path)) == ["c", "tmp"]


@needs_cc
def test_exported_files_are_private_and_temp_dirs_are_gone(private_tmp, tmp_path):
    x = torch.randn(4, 3, 8, 8)
    export_c(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(), x, tmp_path / "c", int8=True, calib=x)
    for f in os.listdir(tmp_path / "c"):
        assert stat.S_IMODE(os.stat(tmp_path / "c" / f).st_mode) == 0o600, f
    assert _scratch(private_tmp) == []


class _CloneReadTwice(nn.Module):
    """conv -> y; BatchNorm of a clone of y, added to y itself: the BatchNorm must not fold into y's conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y.clone()) + y


def test_an_alias_does_not_hide_a_second_reader_from_folding():
    """Regression: fusion counted the readers of the latest alias only, so the BatchNorm folded into the conv
    and changed ``y`` for its other reader (the lowering differed from PyTorch by 2.5)."""
    model = _CloneReadTwice().eval()
    with torch.no_grad():
        model.bn.running_mean.fill_(0.5)
        model.bn.weight.fill_(2.0)
    x = torch.randn(2, 3, 8, 8)
    graph = lower(model, x[:1])
    assert [n.op for n in graph.nodes].count("conv") == 2  # the BatchNorm stays its own (depthwise 1x1) node
    assert torch.allclose(run_float(graph, x), model(x), atol=1e-5)
