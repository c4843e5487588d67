"""Distributed search under torchrun (2 CPU processes, gloo): ranks agree, and match one process with the same
global batch.

Tolerances: without BatchNorm every op is per-sample, so averaging the two ranks' gradients gives the global
batch's gradient and the only difference from one process is the order of float additions: weights and gates
within 1e-5 (measured 2.4e-7 after 16 steps). With BatchNorm each rank normalises by its own half-batch's
statistics (standard DDP behaviour), so the trajectories differ; there only the epoch metrics are compared,
training loss within 2% (measured 0.12%).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))


def _torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    proc = _torchrun(str(HERE / "dist_search.py"), str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.fixture(scope="module")
def one_process():
    from dist_search import search

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {"none": search(norm=False), "bn": search(norm=True)}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", ["none", "bn"])
def test_ranks_end_with_identical_gates_and_weights(two_ranks, kind):
    a, b = two_ranks[0][kind], two_ranks[1][kind]
    assert a["world_size"] == b["world_size"] == 2
    assert a["state"].keys() == b["state"].keys()
    for key in a["state"]:
        assert torch.equal(a["state"][key], b["state"][key]), key   # BatchNorm buffers included (averaged)
    for name in a["gates"]:
        assert torch.equal(a["gates"][name], b["gates"][name]), name
    assert a["train"] == b["train"]          # metrics were reduced over ranks, so both report the same numbers


def test_two_ranks_match_one_process_with_the_same_global_batch(two_ranks, one_process):
    dist_run, single = two_ranks[0]["none"], one_process["none"]
    for key, value in single["state"].items():
        assert torch.allclose(dist_run["state"][key].float(), value.float(), atol=1e-5, rtol=0), key
    for name, alpha in single["gates"].items():
        assert torch.allclose(dist_run["gates"][name], alpha, atol=1e-5, rtol=0), name
    for d, s in zip(dist_run["train"], single["train"]):
        assert d["accuracy"] == s["accuracy"] and d["loss"] == pytest.approx(s["loss"], rel=1e-5)
    # With BatchNorm the per-rank batch statistics change the trajectory; the metrics stay close.
    for d, s in zip(two_ranks[0]["bn"]["train"], one_process["bn"]["train"]):
        assert d["loss"] == pytest.approx(s["loss"], rel=0.02)


@pytest.mark.slow
def test_torchrun_compress_cli_writes_one_run_folder(tmp_path):
    """The documented command: `torchrun --nproc_per_node=2 -m lwdc compress ...`; only rank 0 writes."""
    run = tmp_path / "run"
    proc = _torchrun("-m", "lwdc", "compress", "--model", "resnet8", "--width", "0.25", "--search-epochs", "1",
                     "--finetune-epochs", "1", "--warmup-epochs", "0.5", "--max-batches", "3", "--batch-size", "32",
                     "--checkpoint-every", "1", "--no-progress", "--run-dir", str(run))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run folder:") == 1, proc.stdout          # rank 1 logs nothing
    assert "2 processes, 16 samples each per step" in proc.stdout
    report = json.loads((run / "report.json").read_text())
    assert report["derive_max_abs_diff"] <= 1e-5
    assert not list(run.rglob("*.tmp"))
    state = torch.load(run / "checkpoints" / "search.pt", weights_only=True)
    assert state["world_size"] == 2 and state["epoch"] == 1
