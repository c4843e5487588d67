"""One model vocabulary for every command: run folders (also those the Python API writes), registered names,
file.py:factory, trusted .pt2 files; the same one-line error for the same mistake in export, profile and report."""
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import lwdc
from lwdc.cli import main
from lwdc.models import create_model
from lwdc.runs import save_portable

from conftest import TinyNet, batches, quadrant_data

FACTORY = str(Path(__file__).parent / "plugins" / "toy_model.py") + ":build"


def _error(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    return [line for line in result.output.splitlines() if line.startswith("Error:")][0]


@pytest.fixture(scope="module")
def pt2(tmp_path_factory):
    path = tmp_path_factory.mktemp("pt2") / "net.pt2"
    torch.manual_seed(0)
    save_portable(create_model("resnet8", width=0.25).eval(), torch.randn(1, 3, 32, 32), path)
    return path


def test_profile_accepts_a_pt2_file_with_trust_pt2(pt2):
    result = CliRunner().invoke(main, ["profile", str(pt2), "--trust-pt2", "--rounds", "2", "--json"])
    assert result.exit_code == 0, result.output
    numbers = json.loads(result.output)
    assert numbers["macs"] > 0 and numbers["latency_ms"] > 0 and numbers["latency"]["backends"]["eager"]["rounds"] == 2
    refused = _error(["profile", str(pt2)])
    assert "--trust-pt2" in refused and refused == _error(["export", str(pt2), "--format", "onnx"])


@pytest.mark.parametrize("make", [
    lambda tmp: str(tmp / "runs" / "missing"),                            # a run folder that is not there
    lambda tmp: "resnet21",                                                # a misspelt name
    lambda tmp: str(tmp / "model.onnx"),                                   # ONNX where a PyTorch model is needed
    lambda tmp: (tmp / "half").mkdir() or (tmp / "half" / "config.json").write_text("{}") and str(tmp / "half"),
    lambda tmp: (tmp / "notes.txt").write_text("hi") and str(tmp / "notes.txt"),
    lambda tmp: str(tmp / "gone.pt2"),
])
def test_the_same_mistake_gets_the_same_error_in_every_command(tmp_path, make):
    target = make(tmp_path)
    errors = {cmd: _error([cmd, target, *extra]) for cmd, extra in
              (("profile", []), ("export", ["--format", "onnx", "--out", str(tmp_path / "o.onnx")]), ("report", []))}
    assert len(set(errors.values())) == 1, errors
    assert not (tmp_path / "o.onnx").exists()


def test_report_names_what_a_valid_non_run_model_is():
    message = _error(["report", "resnet20"])
    assert "needs a finished run folder" in message and "registered model" in message


def test_profile_and_export_take_a_factory_with_an_input_shape(tmp_path):
    result = CliRunner().invoke(main, ["profile", FACTORY, "--input-shape", "3,16,16", "--rounds", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["params"] == sum(p.numel() for p in create_model(FACTORY).parameters())
    out = tmp_path / "toy.onnx"
    result = CliRunner().invoke(main, ["export", FACTORY, "--input-shape", "3,16,16", "--format", "onnx",
                                       "--out", str(out)])
    assert result.exit_code == 0 and out.is_file(), result.output


def test_a_run_folder_written_by_the_python_api_is_taken_by_every_command(tmp_path):
    x, y = quadrant_data(64)
    folder = tmp_path / "api"
    lwdc.compress(TinyNet(), batches(x, y), batches(*quadrant_data(32, seed=2)), ops="minimal", search_epochs=1,
                  finetune_epochs=1, warmup_epochs=0.5, progress=False, log=None, run_dir=folder)
    assert not (folder / "config.json").exists()
    result = CliRunner().invoke(main, ["profile", str(folder), "--rounds", "2"])
    assert result.exit_code == 0 and "alternating over 2 rounds" in result.output, result.output
    result = CliRunner().invoke(main, ["export", str(folder), "--format", "onnx"])
    assert result.exit_code == 0 and (folder / "model.onnx").is_file(), result.output
    result = CliRunner().invoke(main, ["report", str(folder), "--samples", "0", "--cka-samples", "0"])
    assert result.exit_code == 0 and (folder / "report" / "report.html").is_file(), result.output
