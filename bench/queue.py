"""Run every experiment of a model one after another, each in its own process (so peak memory is its own).

    python -m bench.queue --model resnet20 [--schedule cpu] [--ops default paper] [--lams 2 1.2 3] [--dry-run]

Order: baseline; then per operator set, the first lambda listed in bench/configs.py with its global-pruning match
and the extended baseline (the most informative comparison soonest), then the other lambdas, then the per-layer
L1 matches.
Finished runs are skipped quickly and interrupted ones resume, so rerunning the command continues the queue.
A failed run is reported and the queue goes on; the exit status says whether any failed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from .configs import EXPERIMENTS, SCHEDULES, lambdas

ROOT = Path(__file__).resolve().parents[1]


def plan(model: str, ops_sets: list[str], schedule: str = "cpu", lams: list[float] | None = None) -> list[list[str]]:
    """The ordered list of ``bench.cifar`` argument lists for ``model`` (``lams``: instead of the configured ones)."""
    ordered = list(lams or lambdas(model, schedule))
    first = ordered[0]
    jobs = [["--method", "baseline"]]
    for n, ops in enumerate(ops_sets):
        point = lambda lam: ["--lam", f"{lam:g}", "--ops", ops]  # noqa: E731
        jobs += [["--method", "lwdc", *point(first)], ["--method", "prune-l1-global", *point(first)]]
        if n == 0:
            jobs.append(["--method", "baseline-extended"])
        for lam in ordered[1:]:
            jobs += [["--method", "lwdc", *point(lam)], ["--method", "prune-l1-global", *point(lam)]]
        jobs += [["--method", "prune-l1", *point(lam)] for lam in ordered]
    return jobs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20", choices=list(EXPERIMENTS))
    p.add_argument("--schedule", default="cpu", choices=list(SCHEDULES))
    p.add_argument("--ops", nargs="+", default=list(EXPERIMENTS["resnet20"]["ops"]))
    p.add_argument("--lams", nargs="+", type=float,
                   help="LWDC lambdas, first one first (default: the schedule's in bench/configs.py)")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    a, passthrough = p.parse_known_args()   # anything else (--data, --cache-dir, --threads...) goes to bench.cifar
    failed = []
    for job in plan(a.model, a.ops, a.schedule, a.lams):
        cmd = [sys.executable, "-m", "bench.cifar", "--model", a.model, "--schedule", a.schedule, *job, *passthrough]
        print(f"[{time.strftime('%H:%M:%S')} queue] {' '.join(cmd[1:])}", flush=True)
        if a.dry_run:
            continue
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            failed.append(" ".join(job))
            print(f"[{time.strftime('%H:%M:%S')} queue] FAILED: {' '.join(job)}", flush=True)
    summary = f"{len(failed)} failed" + (": " + "; ".join(failed) if failed else "")
    print(f"[{time.strftime('%H:%M:%S')} queue] done; {summary}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
