"""A run killed with SIGKILL mid-epoch resumes to the uninterrupted result, and no checkpoint is ever torn.

Tolerance: the resumed run replays exactly the batches, augmentations and gate samples the uninterrupted run saw
(per-epoch seeded order, per-batch seeded augmentation, saved RNG states) in the same number of threads, so the
final weights agree to 1e-6 (measured: bit-identical).
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lwdc.runs import CheckpointError, load_checkpoint

ROOT = Path(__file__).parent.parent
ARGS = ["--model", "resnet8", "--width", "0.25", "--search-epochs", "2", "--finetune-epochs", "1",
        "--warmup-epochs", "0.25", "--max-batches", "8", "--batch-size", "32", "--checkpoint-every", "1",
        "--threads", "1", "--no-progress", "--seed", "3"]


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, "-m", "lwdc", "compress", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def _check_checkpoints(run: Path, seen: dict) -> None:
    """Every checkpoint file present loads completely (a torn file would raise CheckpointError)."""
    for path in (run / "checkpoints").glob("*.pt"):
        try:
            state = load_checkpoint(path, path.stem)
        except FileNotFoundError:       # listed, then replaced: the rename is atomic, the next poll sees it
            continue
        except CheckpointError as exc:
            pytest.fail(f"half-written checkpoint seen during the run: {exc}")
        seen[path.stem] = (state["epoch"], state["step"])


def _final_state(run: Path) -> dict:
    return torch.load(run / "model_state.pt", weights_only=True)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    ref_proc = _start(*ARGS, "--run-dir", str(reference))
    proc = _start(*ARGS, "--run-dir", str(killed))
    seen: dict = {}
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        _check_checkpoints(killed, seen)
        if seen.get("search", (0, 0))[1] >= 2:          # a mid-epoch checkpoint of the search exists
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=30)
    out = proc.stdout.read()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed ({seen}):\n{out[-2000:]}"
    assert not (killed / "report.json").exists()
    state = load_checkpoint(killed / "checkpoints" / "search.pt", "search")   # intact after the kill
    assert (state["epoch"], state["step"]) >= seen["search"]

    resumed = _start("--resume", str(killed))
    while resumed.poll() is None:
        _check_checkpoints(killed, {})
        _check_checkpoints(reference, {})
        time.sleep(0.1)
    log = resumed.stdout.read()
    assert resumed.returncode == 0, log[-3000:]
    assert "search: resuming after epoch" in log and ", batch " in log, log
    assert ref_proc.wait(timeout=240) == 0, ref_proc.stdout.read()[-3000:]

    a, b = _final_state(reference), _final_state(killed)
    assert a["choices"] == b["choices"]
    for key, value in a["state_dict"].items():
        assert torch.allclose(value.float(), b["state_dict"][key].float(), atol=1e-6, rtol=0), key
    assert not list(killed.rglob("*.tmp")), "a temporary file survived the resume"
