"""Run every experiment of a model one after another, each in its own process (so peak memory is its own).

    python -m bench.queue --model resnet20 [--schedule cpu] [--ops default paper] [--lams 2 1.2 3] [--seeds 0 1]
                          [--dry-run]

Order: the baseline (once, of ``--baseline-seed``); then, per seed, per operator set: the first lambda listed in
bench/configs.py with the pruning methods matched to it right after it (``PLANS``: global L1 and, on the newer
schedules, DepGraph's group-norm + sparse training) and the extended baseline (the most informative comparison
soonest), then the other lambdas, then the per-layer L1 matches; then the latency-cost sweep of the first operator
set, where the schedule's plan has one. Every seed starts from the same baseline, so a second seed costs the
post-baseline runs only.
Finished runs are skipped quickly and interrupted ones resume, so rerunning the command continues the queue.
A failed run is reported and the queue goes on; the exit status says whether any failed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from .configs import EXPERIMENTS, SCHEDULES, lambdas, operator_sets, plan_of

ROOT = Path(__file__).resolve().parents[1]


def plan(model: str, ops_sets: list[str], schedule: str = "cpu", lams: list[float] | None = None,
         seeds: list[int] = (0,), baseline_seed: int = 0, latency_lams: list[float] | None = None,
         random_draws: int = 0) -> list[list[str]]:
    """The ordered list of ``bench.cifar`` argument lists for ``model`` (``lams`` / ``latency_lams``: instead of
    the configured ones; ``random_draws``: that many random architectures per LWDC point of the first operator
    set, matched on its MACs, last)."""
    settings = plan_of(schedule)
    ordered = list(lams or lambdas(model, schedule))
    jobs = [["--method", "baseline", *(["--seed", str(baseline_seed)] if baseline_seed else [])]]
    for seed in seeds:
        opts = (["--seed", str(seed)] if seed else []) + (["--baseline-seed", str(baseline_seed)] if baseline_seed
                                                          else [])
        for n, ops in enumerate(ops_sets):
            def point(lam: float, cost: str = "macs") -> list[str]:
                return ["--lam", f"{lam:g}", "--ops", ops, *opts] + (["--cost", cost] if cost != "macs" else [])

            def with_matches(lam: float) -> list[list[str]]:
                return [["--method", "lwdc", *point(lam)]] + [["--method", m, *point(lam)] for m in settings["prune"]]

            jobs += with_matches(ordered[0])
            if n == 0:
                jobs.append(["--method", "baseline-extended", *opts])
            for lam in ordered[1:]:
                jobs += with_matches(lam)
            jobs += [["--method", m, *point(lam)] for m in settings["prune_late"] for lam in ordered]
            for cost in settings["costs"][1:] if n == 0 else ():
                jobs += [["--method", "lwdc", *point(lam, cost)]
                         for lam in latency_lams or lambdas(model, schedule, cost)]
            if n == 0:
                jobs += [["--method", "random", *point(lam), "--draw", str(k)]
                         for lam in ordered for k in range(random_draws)]
    return jobs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20", choices=list(EXPERIMENTS))
    p.add_argument("--schedule", default="cpu", choices=list(SCHEDULES))
    p.add_argument("--ops", nargs="+", help="operator sets (default: the model's for the schedule, bench/configs.py)")
    p.add_argument("--lams", nargs="+", type=float,
                   help="LWDC lambdas, first one first (default: the schedule's in bench/configs.py)")
    p.add_argument("--latency-lams", nargs="+", type=float,
                   help="lambdas of the latency-cost sweep (default: bench/configs.py's, twice the MACs ones)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of every post-baseline run")
    p.add_argument("--baseline-seed", type=int, default=0, help="the seed of the one baseline all seeds start from")
    p.add_argument("--random-draws", type=int, default=0,
                   help="random architectures per LWDC point, matched on its MACs (issue 26), after the rest")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    a, passthrough = p.parse_known_args()   # anything else (--data, --cache-dir, --threads...) goes to bench.cifar
    failed = []
    for job in plan(a.model, a.ops or list(operator_sets(a.model, a.schedule)), a.schedule, a.lams, a.seeds,
                    a.baseline_seed, a.latency_lams,
                    a.random_draws):
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
