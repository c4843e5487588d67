"""The core takes a new task, a new method and a model of the user's own, each from one test-local file
(tests/plugins/), through the Python API and the CLI, with no change to lwdc's own files."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import lwdc
import lwdc.models
import lwdc.tasks
from lwdc.cli import main
from lwdc.cli.compress import settings_defaults
from lwdc.data import BatchLoader, load_data

from plugins import toy_method, toy_regression  # noqa: F401  (importing registers the task, data and method)
from plugins.toy_model import build_1d

PLUGINS = Path(__file__).parent / "plugins"
LWDC = Path(lwdc.__file__).parent
QUICK = ["--search-epochs", "1", "--finetune-epochs", "1", "--warmup-epochs", "0.5", "--batch-size", "32",
         "--no-progress"]


def _loaders(name: str):
    bundle = load_data(name)
    return bundle, BatchLoader(bundle.train, 32, shuffle=True, augment=bundle.augment, drop_last=True), \
        BatchLoader(bundle.test, 64)


def test_regression_task_compresses_through_the_api():
    bundle, train, test = _loaders("toy-signals")
    assert bundle.task == "toy-regression" and bundle.augment is None and bundle.num_classes is None
    torch.manual_seed(0)
    model = build_1d(num_classes=2, in_channels=2)
    result = lwdc.compress(model, train, test, task=lwdc.tasks.get_task("toy-regression"), ops="minimal",
                           warmup_epochs=0.5, search_epochs=1, finetune_epochs=2, progress=False, log=lambda s: None)
    report = result.report
    assert report["task"] == "toy-regression" and report["primary_metric"] == "neg_rmse"
    assert report["after"]["rmse"] > 0 and report["after"]["neg_rmse"] == -report["after"]["rmse"]
    assert report["history"]["finetune"][-1]["val"]["rmse"] < report["history"]["finetune"][0]["train"]["rmse"] * 5


def test_toy_method_runs_through_compress():
    bundle, train, test = _loaders("cifar10-subset")
    torch.manual_seed(0)
    model = lwdc.models.create_model("resnet8", width=0.25)
    result = lwdc.compress(model, train, test, method="random-choice", ops="default", finetune_epochs=1,
                           max_batches=2, progress=False, log=lambda s: None)
    assert result.report["method"] == "random-choice" and result.report["drawn_with_seed"] == 0
    assert set(result.choices) and "history" in result.report and "search" not in result.report["history"]
    assert result.report["after"]["macs"] <= result.report["before"]["macs"]


def test_cli_compresses_a_user_model_on_1d_data_with_a_plugin_task_and_method(tmp_path):
    run = tmp_path / "run"
    factory = f"{PLUGINS / 'toy_model.py'}:build_1d"
    r = CliRunner().invoke(main, ["compress", "--model", factory, "--data", "toy-signals", "--method", "random-choice",
                                  "--ops", "minimal", "--run-dir", str(run), *QUICK])
    assert r.exit_code == 0, r.output
    assert "task toy-regression; augmentation none" in r.output
    report = lwdc.Run.open(run).report()
    assert report["task"] == "toy-regression" and report["method"] == "random-choice"
    model = lwdc.Run.open(run).load_model()        # rebuilt from data: the factory file is not imported again
    assert model(torch.randn(3, 2, 64)).shape == (3, 2)


def test_cli_compresses_a_model_no_registry_knows(tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["compress", "--model", f"{PLUGINS / 'toy_model.py'}:build", "--max-batches", "2",
                                  "--run-dir", str(run), *QUICK])
    assert r.exit_code == 0, r.output
    assert "augmentation random_crop_flip(4)" in r.output
    assert lwdc.Run.open(run).report()["method"] == "lwdc"


def test_resuming_a_run_whose_model_is_code_needs_the_model_named_again(tmp_path):
    run = tmp_path / "run"
    factory = f"{PLUGINS / 'toy_model.py'}:build"
    settings = {**settings_defaults(), "model_name": factory}
    lwdc.Run.create(run, settings, lock=False).release()
    refused = CliRunner().invoke(main, ["compress", "--resume", str(run)])
    assert refused.exit_code != 0 and "pass --model" in refused.output and "Traceback" not in refused.output


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_training_loop_imports_no_search_machinery():
    assert not {m for m in _imports(LWDC / "train.py") if m.split(".")[-1] in ("space", "gate")}


def test_only_runs_py_names_the_files_of_a_run_folder():
    names = ('"config.json"', '"report.json"', '"checkpoints"', "_state.pt", "_arch.json", "read_json(")
    offenders = [f"{p.relative_to(LWDC)}: {n}" for p in LWDC.rglob("*.py") if p.name != "runs.py"
                 for n in names if n in p.read_text()]
    assert offenders == []


def test_cli_defaults_are_the_config_defaults():
    params = settings_defaults()
    config = lwdc.CompressConfig()
    for name in ("method", "search_epochs", "finetune_epochs", "lam", "noise_end", "warmup_epochs", "ops", "cost",
                 "lr", "finetune_lr", "arch_lr", "seed", "max_batches", "checkpoint_every", "device", "progress"):
        assert params[name] == getattr(config, name), name
    assert params["original_prob"] == config.original_prob
    assert params["download"] is False and params["weights"] is None   # flags resolved, not click sentinels


def test_package_functions_do_not_shadow_modules():
    import importlib
    for name in ("profile", "derive", "compress", "expand"):
        assert callable(getattr(lwdc, name))
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"lwdc.{name}")
