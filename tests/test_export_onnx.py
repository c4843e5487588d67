"""ONNX export and the `lwdc export` command."""
import json
import os

import pytest
import torch
from click.testing import CliRunner

from lwdc.cli import main
from lwdc.export import OnnxExportError, export_onnx
from lwdc.export.c import find_compiler
from lwdc.models import create_model
from lwdc.runs import Run, save_portable

from test_export_c import ConcatNet, lwdc_derived, lwdc_ghost, lwdc_width, randomize_bn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("build, shape", [(lambda: randomize_bn(create_model("resnet20")), (3, 32, 32)),
                                          (lwdc_derived, (3, 32, 32)), (lwdc_ghost, (3, 32, 32)),
                                          (lwdc_width, (3, 32, 32)),
                                          (lambda: randomize_bn(ConcatNet()), (3, 16, 16))])
def test_onnx_matches_pytorch_for_any_batch(build, shape, tmp_path):
    torch.manual_seed(0)
    model = build()
    info = export_onnx(model, torch.randn(3, *shape), tmp_path / "m.onnx")
    assert info["max_abs_diff_vs_pytorch"] <= 1e-4 and info["dynamic_batch"]
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(7, *shape)  # a batch size never seen at export
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert abs(got - model(x).numpy()).max() <= 1e-4
    assert model.training is False


def test_onnx_that_does_not_reproduce_is_not_kept(tmp_path, monkeypatch):
    from lwdc.export.tolerance import Tolerance
    model = randomize_bn(ConcatNet())
    monkeypatch.setattr(Tolerance, "limit", lambda self, reference, rounding=0.0: -1.0)  # no result can pass
    with pytest.raises(OnnxExportError, match="differs from PyTorch"):
        export_onnx(model, torch.randn(2, 3, 16, 16), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


@pytest.fixture
def run_folder(tmp_path):
    """What `lwdc compress` leaves behind, reduced to what export reads: the saved model, config.json, a report."""
    torch.manual_seed(0)
    model = randomize_bn(create_model("resnet8", width=0.25))
    run = Run.create(tmp_path / "run", {"data": "cifar10-subset"}, lock=False)
    run.save_model("model", model, torch.randn(2, 3, 32, 32), portable=False)
    run.write_report({"example_input_shape": [1, 3, 32, 32]})
    return tmp_path / "run"


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler")
def test_cli_exports_int8_c_with_the_deployment_summary(run_folder, tmp_path):
    out = tmp_path / "c8"
    r = CliRunner().invoke(main, ["export", str(run_folder), "--format", "c", "--int8", "--out", str(out),
                                  "--calib-samples", "64", "--eval-samples", "40", "--calibration", "mse"])
    assert r.exit_code == 0, r.output
    assert "peak RAM" in r.output and "lower bound" in r.output and "int8 output equals" in r.output
    summary = json.loads((out / "deploy.json").read_text())
    for key in ("macs", "flash_bytes", "peak_ram_bytes", "naive_bytes", "lower_bound_bytes", "accuracy_c",
                "accuracy_c_float", "accuracy_pytorch"):
        assert key in summary
    assert summary["eval_samples"] == 40 and summary["precision"] == "int8" and summary["calibration"] == "mse"
    again = CliRunner().invoke(main, ["export", str(run_folder), "--format", "c", "--out", str(out)])
    assert again.exit_code != 0 and "--force" in again.output


def test_cli_exports_onnx_from_a_run_folder(run_folder):
    r = CliRunner().invoke(main, ["export", str(run_folder), "--format", "onnx"])
    assert r.exit_code == 0, r.output
    assert (run_folder / "model.onnx").exists() and "onnxruntime matches" in r.output


@pytest.mark.parametrize("args, words", [
    (["no_such_model"], ["neither a run folder", "resnet20"]),
    (["resnet8", "--format", "onnx", "--int8"], ["--int8 applies to --format c"]),
    (["resnet8", "--input-shape", "3,x"], ["--input-shape"]),
])
def test_cli_export_bad_input(args, words, tmp_path):
    r = CliRunner().invoke(main, ["export", *args, "--out", str(tmp_path / "o")])
    assert r.exit_code != 0
    for w in words:
        assert w in r.output
    assert not (tmp_path / "o").exists()
