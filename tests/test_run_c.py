"""Running an exported C library as firmware would: INPUT.bin in main.c's layout (int8 inputs quantised with the
scale and zero point deploy.json records), the compiled program, OUTPUT.bin read back, compared with PyTorch;
through the Python helper and `lwdc run-c`, float32 and int8."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lwdc.cli import main
from lwdc.export.c import export_c, find_compiler, read_deploy, read_outputs, run_c, write_inputs
from lwdc.models import create_model

needs_cc = pytest.mark.skipif(find_compiler() is None, reason="no C compiler")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("runc")
    torch.manual_seed(0)
    model = create_model("resnet8", width=0.25).eval()
    x = torch.randn(6, 3, 32, 32)
    calib = torch.randn(64, 3, 32, 32)
    float_c = export_c(model, x[:2], root / "f32", verify=False)
    int8_c = export_c(model, x[:2], root / "i8", int8=True, calib=calib, verify=False)
    return model, x, float_c, int8_c


def test_input_file_has_main_c_layout_and_int8_quantisation(exported, tmp_path):
    _, x, float_c, int8_c = exported
    f32 = read_deploy(float_c.directory)
    assert write_inputs(tmp_path / "a.bin", x, f32).read_bytes() == x.numpy().astype("<f4").tobytes()
    assert write_inputs(tmp_path / "one.bin", x[0], f32).stat().st_size == x[0].numel() * 4
    i8 = read_deploy(int8_c.directory)
    q = i8["input_quant"]
    raw = np.fromfile(write_inputs(tmp_path / "q.bin", x, i8), np.int8)
    want = np.clip(np.rint(x.numpy().reshape(-1) / np.float32(q["scale"])) + q["zero_point"], -128, 127)
    assert np.array_equal(raw, want.astype(np.int8))
    with pytest.raises(ValueError, match="do not fit"):
        write_inputs(tmp_path / "bad.bin", torch.randn(2, 3, 16, 16), f32)


@needs_cc
def test_float_round_trip_matches_pytorch(exported, tmp_path):
    model, x, float_c, _ = exported
    res = run_c(float_c.directory, x, model, work_dir=tmp_path / "work")
    assert res.outputs.shape == (6, 10) and res.max_abs_diff <= 1e-4 and res.top1_agreement == 1.0
    assert (tmp_path / "work" / "INPUT.bin").is_file() and res.files["program"].is_file()
    assert np.array_equal(read_outputs(tmp_path / "work" / "OUTPUT.bin", read_deploy(float_c.directory)), res.outputs)


@needs_cc
def test_int8_round_trip_equals_the_integer_reference(exported):
    model, x, _, int8_c = exported
    res = run_c(int8_c.directory, x, model)
    assert res.precision == "int8" and "--int8" in res.command
    assert np.array_equal(res.outputs, int8_c.run_reference(x).reshape(res.outputs.shape))   # bit for bit
    spread = float(np.abs(res.pytorch).max())
    assert res.max_abs_diff < 0.25 * spread + 0.1       # int8 tracks float, coarsely


@needs_cc
@pytest.mark.parametrize("int8", [False, True])
def test_run_c_command_round_trip(tmp_path, int8):
    torch.manual_seed(0)
    torch.save(create_model("resnet8", width=0.25).state_dict(), tmp_path / "w.pt")
    out = tmp_path / ("i8" if int8 else "f32")
    args = ["export", "resnet8", "--width", "0.25", "--weights", str(tmp_path / "w.pt"), "--format", "c",
            "--out", str(out), "--eval-samples", "0", "--calib", "cifar10-subset", "--calib-samples", "64"]
    result = CliRunner().invoke(main, args + (["--int8"] if int8 else []))
    assert result.exit_code == 0, result.output
    assert "calibrating int8 ranges" in result.output if int8 else "lowering the model" in result.output
    deploy = json.loads((out / "deploy.json").read_text())
    assert deploy["source"]["kind"] == "registered" and deploy["source"]["data"] == "cifar10-subset"
    result = CliRunner().invoke(main, ["run-c", str(out), "--samples", "20", "--keep", str(tmp_path / "keep")])
    assert result.exit_code == 0, result.output
    assert f"./model {'--int8 ' if int8 else ''}INPUT.bin OUTPUT.bin" in result.output
    assert "C vs PyTorch: max |difference|" in result.output and "same top-1" in result.output
    assert (tmp_path / "keep" / "INPUT.bin").stat().st_size == 20 * 3 * 32 * 32 * (1 if int8 else 4)


def test_run_c_refuses_a_folder_without_deploy_json(tmp_path):
    result = CliRunner().invoke(main, ["run-c", str(tmp_path)])
    assert result.exit_code != 0 and "no deploy.json" in result.output
