"""Files from strangers are data: a hostile .pt2 never runs, run folders are locked, bad input is refused before
anything is written (issue 23). Each code-execution test plants a marker and asserts it was never created."""
from __future__ import annotations

import math
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lwdc.cli import main
from lwdc.runs import Run, RunError, RunLockedError, load_pt2

from hostile import hostile_pt2

QUICK = ["--model", "resnet8", "--width", "0.25", "--pretrain-epochs", "1", "--search-epochs", "1",
         "--finetune-epochs", "1", "--warmup-epochs", "0.5", "--max-batches", "2", "--batch-size", "32",
         "--no-progress"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    r = CliRunner().invoke(main, ["compress", *QUICK, "--run-dir", str(run)])
    assert r.exit_code == 0, r.output
    return run


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "MARKER"
    yield path
    path.unlink(missing_ok=True)


def test_the_hostile_pt2_really_runs_code_when_torch_loads_it(tmp_path, marker):
    """The control: without this the tests below could pass against a harmless file."""
    hostile_pt2(tmp_path / "x.pt2", marker)
    load_pt2(tmp_path / "x.pt2", trusted=True)
    assert marker.exists()


@pytest.mark.parametrize("command", [["export", "{pt2}", "--format", "onnx"], ["profile", "{pt2}"],
                                     ["export", "{pt2}", "--format", "c", "--eval-samples", "0"]])
def test_a_pt2_is_not_loaded_without_trust(tmp_path, marker, command):
    pt2 = hostile_pt2(tmp_path / "x.pt2", marker)
    r = CliRunner().invoke(main, [c.format(pt2=pt2) for c in command])
    assert r.exit_code != 0 and "--trust-pt2" in r.output and "Traceback" not in r.output
    assert not marker.exists()


@pytest.mark.parametrize("command", [["export", "{run}", "--format", "onnx", "--force"], ["profile", "{run}"],
                                     ["profile", "{run}", "--original"],
                                     ["report", "{run}", "--samples", "1", "--cka-samples", "0", "--probe-train", "0"]])
def test_a_run_folder_with_hostile_pt2_files_loads_only_its_safe_artefacts(finished_run, tmp_path, marker, command):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for name in ("model.pt2", "original.pt2"):
        hostile_pt2(run / name, marker)
    r = CliRunner().invoke(main, [c.format(run=run) for c in command])
    assert r.exit_code == 0, r.output
    assert not marker.exists()


def test_a_run_folder_names_no_code_to_rebuild_a_model(finished_run, tmp_path, marker):
    """An architecture file naming a function or layer outside lwdc's vocabulary is refused, not imported."""
    import json
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    arch = json.loads((run / "model_arch.json").read_text())
    arch["nodes"][1] = {"op": "call_function", "target": "os.system", "args": {"tuple": [f"touch {marker}"]},
                        "kwargs": {}}
    (run / "model_arch.json").write_text(json.dumps(arch))
    with pytest.raises(RunError, match="outside lwdc's vocabulary"):
        Run.open(run).load_model()
    arch["nodes"][1] = {"op": "call_module", "target": "evil", "args": {"tuple": []}, "kwargs": {}}
    arch["modules"]["evil"] = {"type": "subprocess.Popen", "init": {"args": ["touch", str(marker)]}}
    (run / "model_arch.json").write_text(json.dumps(arch))
    with pytest.raises(RunError, match="outside lwdc's vocabulary"):
        Run.open(run).load_model()
    assert not marker.exists()


def test_a_second_process_on_a_run_folder_is_refused(finished_run, tmp_path):
    run = tmp_path / "run"
    holder = Run.create(run, {"model_name": "resnet8"})          # holds the lock while referenced
    r = CliRunner().invoke(main, ["compress", "--resume", str(run)])
    assert r.exit_code != 0 and "in use by process" in r.output and "Traceback" not in r.output
    with pytest.raises(RunLockedError):
        Run.open(run).lock()
    holder.release()


def test_the_lock_is_released_when_its_process_dies(tmp_path):
    run = tmp_path / "run"
    code = f"import os, signal; from lwdc.runs import Run; Run.create({str(run)!r}, {{}}); os.kill(os.getpid(), 9)"
    subprocess.run([sys.executable, "-c", code], check=False)
    assert (run / "config.json").exists()
    Run.open(run).lock().release()                                # no RunLockedError: the OS dropped the lock


def test_run_files_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0o000)
    try:
        run = Run.create(tmp_path / "run", {"a": 1})
        run.write_report({"b": 2})
    finally:
        os.umask(old)
    for name in ("config.json", "report.json"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o600


@pytest.mark.parametrize("args, words", [
    (["--lam", "nan"], "lam must be a finite number"),
    (["--lam", "inf"], "lam must be a finite number"),
    (["--max-batches", "0"], "0 is not in the range x>=1"),
    (["--batch-size", "100000"], "larger than the 5000 training samples"),
    (["--weights", "{bad}"], "cannot load --weights"),
    (["--model", "{factory}:returns_tuple"], "returns a tuple"),
    (["--model", "{factory}:float64"], "torch.float64"),
    (["--data", "{images}"], "holds no images"),
])
def test_bad_input_is_refused_before_a_run_folder_exists(tmp_path, args, words):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not weights")
    factory = tmp_path / "factory.py"
    factory.write_text("import torch\nfrom torch import nn\n"
                       "class T(nn.Module):\n    def __init__(s):\n        super().__init__(); s.c = nn.Conv2d(3, 4, 3)\n"
                       "    def forward(s, x):\n        return s.c(x), s.c(x)\n"
                       "def returns_tuple(num_classes, in_channels):\n    return T()\n"
                       "def float64(num_classes, in_channels):\n    return T().double()\n")
    images = tmp_path / "images"
    from PIL import Image
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (images / split / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(images / split / "a" / "0.png")    # class b has no image
    run = tmp_path / "run"
    argv = [a.format(bad=bad, factory=factory, images=images) for a in args]
    r = CliRunner().invoke(main, ["compress", *QUICK, *argv, "--run-dir", str(run)])
    assert r.exit_code != 0 and words in r.output and "Traceback" not in r.output, r.output
    assert not run.exists()


def test_a_run_dir_below_a_file_is_refused_cleanly(tmp_path):
    (tmp_path / "file").write_text("x")
    r = CliRunner().invoke(main, ["compress", *QUICK, "--run-dir", str(tmp_path / "file" / "run")])
    assert r.exit_code != 0 and "is a file" in r.output and "Traceback" not in r.output


def test_profile_and_report_of_an_unloadable_run_say_why(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "model_state.pt").write_bytes(b"garbage")
    for command in (["profile", str(run)], ["export", str(run), "--format", "onnx", "--force"]):
        r = CliRunner().invoke(main, command)
        assert r.exit_code != 0 and "model_state.pt" in r.output and "Traceback" not in r.output, r.output


def test_a_static_batch_pt2_is_profiled_or_refused_cleanly(tmp_path):
    program = torch.export.export(torch.nn.Conv2d(3, 4, 3), (torch.randn(2, 3, 8, 8),))   # batch fixed at 2
    torch.export.save(program, tmp_path / "static.pt2")
    r = CliRunner().invoke(main, ["profile", str(tmp_path / "static.pt2"), "--trust-pt2"])
    assert "Traceback" not in r.output and (r.exit_code == 0 or "cannot run" in r.output), r.output


def test_a_folder_without_config_rebuilds_only_a_registered_model_the_caller_names(tmp_path, marker):
    """``lwdc.compress`` called from Python writes no config.json; a model outside the architecture vocabulary
    (logmel_dscnn's front end) is then rebuilt from the registered model the caller names, never from a name in
    the folder that is not registered."""
    import torch
    from lwdc.models import create_model
    model = create_model("logmel_dscnn", num_classes=10, in_channels=1).eval()
    run = Run(tmp_path / "run")
    run.save_model("original", model, torch.zeros(1, 1, 8000), portable=False)
    assert "unavailable" in run.read_file("original_arch.json")
    with pytest.raises(RunError, match="is not a registered lwdc model"):
        run.load_model("original")
    with pytest.raises(RunError, match="is not a registered lwdc model"):
        run.load_model("original", f"os.system('touch {marker}')")
    rebuilt = run.load_model("original", "logmel_dscnn")
    x = torch.randn(2, 1, 8000)
    assert torch.equal(rebuilt(x), model(x)) and not marker.exists()
