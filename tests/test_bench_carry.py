"""bench.carry: benchmark runs travel between machines through bench/state/ and resume there."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/ is not installed: import it from the checkout
carry = pytest.importorskip("bench.carry")
cifar = pytest.importorskip("bench.cifar")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_save_keeps_results_of_finished_runs_and_checkpoints_of_unfinished_ones(tmp_path):
    cache, state = tmp_path / "cache", tmp_path / "state"
    group = cache / "resnet20_cpu-xxl_s0"
    _write(group / "baseline" / "result.json", "{}")
    _write(group / "baseline" / "checkpoints" / "train.pt", "base weights")
    _write(group / "lwdc-a" / "result.json", '{"accuracy": 1}')
    _write(group / "lwdc-a" / "checkpoints" / "finetune.pt", "large, not needed to skip the run")
    _write(group / "lwdc-b" / "checkpoints" / "search.pt", "search")
    _write(group / "lwdc-b" / "checkpoints" / "finetune.pt", "epoch 3")
    _write(group / "lwdc-b" / "checkpoints" / ".finetune.pt.123.tmp", "half-written")
    _write(group / "prune-c" / "prune.json", '{"ratio": 0.3}')
    _write(cache / "resnet8_smoke_s0_mb2" / "baseline" / "result.json", "{}")     # capped smoke runs stay out

    carry.save(cache, state, log=lambda _: None)
    assert _files(state) == {
        "resnet20_cpu-xxl_s0/baseline/checkpoints/train.pt": "base weights",
        "resnet20_cpu-xxl_s0/baseline/result.json": "{}",
        "resnet20_cpu-xxl_s0/lwdc-a/result.json": '{"accuracy": 1}',
        "resnet20_cpu-xxl_s0/lwdc-b/checkpoints/finetune.pt": "epoch 3",
        "resnet20_cpu-xxl_s0/lwdc-b/checkpoints/search.pt": "search",
        "resnet20_cpu-xxl_s0/prune-c/prune.json": '{"ratio": 0.3}',
    }

    # lwdc-b finishes on this machine: the next save keeps the result and the search (random draws start from
    # its trained supernet, bench.random_arch) and drops the fine-tuning checkpoint
    _write(group / "lwdc-b" / "result.json", '{"accuracy": 2}')
    logs = []
    carry.save(cache, state, log=logs.append)
    assert sorted(p for p in _files(state) if "lwdc-b" in p) == ["resnet20_cpu-xxl_s0/lwdc-b/checkpoints/search.pt",
                                                                 "resnet20_cpu-xxl_s0/lwdc-b/result.json"]
    assert any("dropped" in line and "finetune.pt" in line for line in logs)


def test_a_finished_run_keeps_its_final_model_for_bench_remeasure(tmp_path):
    """The final model as data travels with the result (bench.remeasure times it on the next machine); the
    original model, the torch.export copy and the checkpoints do not."""
    cache, state = tmp_path / "cache", tmp_path / "state"
    run = cache / "resnet20_cpu-converged_s1" / "lwdc-a"
    for name in ("result.json", "model_state.pt", "model_arch.json", "model.pt2", "original_state.pt",
                 "original_arch.json", "report.json", "checkpoints/finetune.pt"):
        _write(run / name, name)
    carry.save(cache, state, log=lambda _: None)
    assert sorted(_files(state)) == [f"resnet20_cpu-converged_s1/lwdc-a/{name}"
                                     for name in ("model_arch.json", "model_state.pt", "result.json")]


def test_restore_fills_a_fresh_cache_and_never_replaces_a_copy_that_may_be_further_along(tmp_path):
    state, cache = tmp_path / "state", tmp_path / "cache"
    _write(state / "README.md", "not a run")
    _write(state / "g" / "lwdc-b" / "checkpoints" / "finetune.pt", "epoch 3")
    _write(state / "g" / "baseline" / "result.json", "{}")
    carry.restore(state, cache, log=lambda _: None)
    assert _files(cache) == {"g/baseline/result.json": "{}", "g/lwdc-b/checkpoints/finetune.pt": "epoch 3"}

    (cache / "g" / "lwdc-b" / "checkpoints" / "finetune.pt").write_text("epoch 7")
    logs = []
    assert carry.restore(state, cache, log=logs.append) == []
    assert (cache / "g" / "lwdc-b" / "checkpoints" / "finetune.pt").read_text() == "epoch 7"
    assert any("kept the cache's" in line for line in logs)
    carry.restore(state, cache, overwrite=True, log=lambda _: None)
    assert (cache / "g" / "lwdc-b" / "checkpoints" / "finetune.pt").read_text() == "epoch 3"


def test_an_unfinished_run_carried_to_a_fresh_cache_resumes_without_training_again(tmp_path, capsys):
    """End to end on the smoke schedule: a run whose stages all finished but whose result was not written (killed
    while measuring latency) is saved, the cache is wiped, restored, and the same command completes it from the
    carried checkpoints alone."""
    def run(cache, *args):
        return cifar.main(["--model", "resnet8", "--width", "0.25", "--schedule", "smoke", "--data", "cifar10-subset",
                           "--max-batches", "2", "--cache-dir", str(cache), "--out-dir", str(tmp_path / "out"),
                           "--no-onnx", "--quick-latency", *args])

    first_cache, state, fresh_cache = tmp_path / "machine1", tmp_path / "state", tmp_path / "machine2"
    first = run(first_cache, "--method", "lwdc", "--lam", "2", "--ops", "minimal")
    group = next(first_cache.iterdir()).name
    (first_cache / group / first["run"] / "result.json").unlink()
    carry.save(first_cache, state, include_capped=True, log=lambda _: None)
    carried = {p.relative_to(state).as_posix() for p in state.rglob("*") if p.is_file()}
    assert {f"{group}/baseline/checkpoints/train.pt", f"{group}/{first['run']}/checkpoints/search.pt",
            f"{group}/{first['run']}/checkpoints/finetune.pt"} <= carried

    carry.restore(state, fresh_cache, log=lambda _: None)
    capsys.readouterr()
    again = run(fresh_cache, "--method", "lwdc", "--lam", "2", "--ops", "minimal")
    out = capsys.readouterr().out
    assert "train: finished earlier" in out           # the baseline
    assert "search: finished earlier" in out and "finetune: finished earlier" in out
    assert again["accuracy"] == first["accuracy"] and again["choices"] == first["choices"]
    assert again["macs"] == first["macs"]
    assert (fresh_cache / group / first["run"] / "result.json").exists()



def test_the_share_area_is_restored_into_its_own_cache_not_the_cifar_one(tmp_path):
    from bench.carry import AREAS, restore

    state = tmp_path / "state"
    for rel in ("resnet20_cpu_s0/baseline/result.json", "share/cifar/baseline-share-1234/checkpoints/share.pt"):
        (state / rel).parent.mkdir(parents=True, exist_ok=True)
        (state / rel).write_text("x")
    cifar, share = tmp_path / "cifar", tmp_path / "share"
    assert "share" in AREAS
    restore(state, cifar, log=lambda m: None)
    restore(state / "share", share, log=lambda m: None)
    assert (cifar / "resnet20_cpu_s0/baseline/result.json").exists() and not (cifar / "share").exists()
    assert (share / "cifar/baseline-share-1234/checkpoints/share.pt").exists()


def test_signals_run_folders_are_carried_three_levels_down_with_lwdc_compress_markers(tmp_path):
    """bench.signals keeps lwdc.compress run folders under <set>/<model>_<split>/<run>: a finished one (report.json)
    keeps its model and, for a point, the search its random draws start from; a draw keeps no checkpoint; the
    baseline's checkpoint (no marker) is kept whole."""
    from bench.carry import AREAS, LAYOUT, save
    cache, state = tmp_path / "signals", tmp_path / "state"
    unit = cache / "fsdd" / "logmel_dscnn_seed0"
    _write(unit / "baseline" / "checkpoints" / "baseline.pt", "base")
    for run in ("lwdc-signal-macs0.5x", "lwdc-signal-macs0.5x-random-d0"):
        for name in ("report.json", "model_state.pt", "model_arch.json", "checkpoints/search.pt",
                     "checkpoints/finetune.pt", "original.pt2"):
            _write(unit / run / name, run)
    _write(unit / "lwdc-signal-macs0.3x" / "checkpoints" / "finetune.pt", "epoch 2")
    _write(unit / "lwdc-signal-macs0.3x" / ".lock", "")
    _write(cache / "fsdd" / "logmel_dscnn_seed0_mb2" / "baseline" / "checkpoints" / "baseline.pt", "smoke")
    assert AREAS["signals"].name == "signals" and LAYOUT["signals"] == (3, "report.json")
    save(cache, state, log=lambda _: None, layout=LAYOUT["signals"])
    unit_state = "fsdd/logmel_dscnn_seed0"
    assert sorted(_files(state)) == sorted([
        f"{unit_state}/baseline/checkpoints/baseline.pt",
        *(f"{unit_state}/lwdc-signal-macs0.5x/{n}" for n in ("report.json", "model_state.pt", "model_arch.json",
                                                             "checkpoints/search.pt")),
        *(f"{unit_state}/lwdc-signal-macs0.5x-random-d0/{n}" for n in ("report.json", "model_state.pt",
                                                                       "model_arch.json")),
        f"{unit_state}/lwdc-signal-macs0.3x/checkpoints/finetune.pt"])


def test_latency_tables_travel_with_the_state_and_stay_out_of_the_run_folders(tmp_path):
    """A table measured on an idle machine is carried (and kept apart from run folders); an older state copy is
    replaced on save, a cache copy is never replaced on restore."""
    from bench.carry import TABLES, restore, save_tables

    tables, state, fresh = tmp_path / "latency", tmp_path / "state", tmp_path / "fresh"
    _write(tables / "onnxruntime-abc.json", '{"entries": {"conv1x1|a": 0.01}}')
    _write(state / "resnet20_cpu_s0" / "baseline" / "result.json", "{}")
    assert [p.name for p in save_tables(tables, state / TABLES, log=lambda m: None)] == ["onnxruntime-abc.json"]
    assert save_tables(tables, state / TABLES, log=lambda m: None) == []          # unchanged: nothing written
    _write(tables / "onnxruntime-abc.json", '{"entries": {"conv1x1|a": 0.01, "skip|a": 0.0}}')
    assert len(save_tables(tables, state / TABLES, log=lambda m: None)) == 1
    restore(state, fresh / "cifar", log=lambda m: None)
    assert not (fresh / "cifar" / TABLES).exists()                                 # not mistaken for a run folder
    restore(state / TABLES, fresh / "latency", log=lambda m: None)
    assert _files(fresh / "latency") == _files(tables)
