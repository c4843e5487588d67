"""A fixed small run and a digest of what it produced, to prove a refactor kept behaviour bit for bit.

The run goes through the command line (data loading, augmentation, baseline training, warm-up, search, derive,
fine-tune): ResNet-20 at width 0.25 on the shipped subset, seed 0, three batches per epoch. The digest covers
the chosen operators, every weight of the final model (exact bytes) and every metric of the report (training and
validation per epoch, before and after); nothing measured in seconds. ``RECORDED`` holds, per CPU instruction
set torch dispatches to (its float kernels round differently under AVX2 and AVX-512), the digest written by the
code before the core redesign (issue 22, lwdc at 6772366); tests/test_behaviour.py asserts the one for this CPU.

    python tests/behaviour.py            # print the digest of a fresh run
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import torch

RECORDED = {   # torch.backends.cpu.get_cpu_capability() -> digest of lwdc at 6772366, before the redesign
    "AVX512": "74d3555f623da694ec234d76a8b6761b",
    "AVX2": "5979ed3bc13d0ed9889cc7b26bc4642a",   # 6772366 rerun on an AVX2 EPYC (same ARGS less --eval-sample)
}

ARGS = ["compress", "--model", "resnet20", "--width", "0.25", "--data", "cifar10-subset", "--pretrain-epochs", "1",
        "--warmup-epochs", "0.5", "--search-epochs", "2", "--finetune-epochs", "1", "--max-batches", "3",
        "--batch-size", "32", "--lam", "5", "--arch-lr", "0.3", "--seed", "0", "--no-progress",
        "--eval-sample", "first"]   # the quick-look sample the digest was recorded with (before issue 25)

METRIC_KEYS = ("loss", "accuracy")


def _metrics(report: dict) -> dict:
    keep = lambda d: {k: v for k, v in d.items() if k in METRIC_KEYS}  # noqa: E731
    return {
        "before": keep(report["before"]), "after": keep(report["after"]),
        "history": {stage: [{"train": keep(h["train"]), "val": keep(h["val"]), "cost_ratios": h["cost_ratios"],
                             "probabilities": h["probabilities"]} for h in entries]
                    for stage, entries in report["history"].items()},
    }


def digest(choices: dict, state_dict: dict, report: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(choices, sort_keys=True).encode())
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes())
    h.update(json.dumps(_metrics(report), sort_keys=True).encode())
    return h.hexdigest()[:32]


def run_and_digest(folder: Path) -> str:
    """Run ``ARGS`` into ``folder`` in this process and return the digest of what it wrote."""
    from click.testing import CliRunner

    from lwdc.cli import main
    from lwdc.runs import Run

    result = CliRunner().invoke(main, ARGS + ["--run-dir", str(folder)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = Run.open(folder)
    model = run.load_model("model")
    return digest(run.report()["choices"], model.state_dict(), run.report())


if __name__ == "__main__":
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        print(run_and_digest(Path(tmp) / "run"))
