"""Search-step cost against a plain training step of the original model: time and peak memory, as ratios.

Each measurement runs in its own fresh process (so peak RSS belongs to one variant only), and the variants
alternate over several rounds so that machine noise hits both alike. Writes bench/results/search_cost.json.
Run: python -m bench.search_cost [--model resnet20] [--batch-size 128] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


VARIANTS = {"plain": None, "search": 0.9, "search-uniform": None}   # variant -> initial P(original)


def worker(variant: str, model_name: str, batch_size: int, steps: int, ops: str, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    from lwdc.costs import build_cost_table, get_cost_model
    from lwdc.models import create_model
    from lwdc.space import expand

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    model = create_model(model_name)
    extra = None
    if variant.startswith("search"):
        supernet = expand(model, x[:1], ops)
        supernet.init_gates(VARIANTS[variant])
        table = build_cost_table(get_cost_model("macs"), supernet, model, x[:1])
        model, extra = supernet, (lambda: 0.5 * table.expected_ratio(supernet))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(steps + 3):
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        if extra is not None:
            loss = loss + extra()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "step_ms": 1e3 * statistics.median(times), "peak_rss_mb": peak / 1024,
            "peak_rss_growth_mb": (peak - rss_before) / 1024, "saved_for_backward_mb": saved_mb(model, x, extra)}


def saved_mb(model, x, extra) -> float:
    """Bytes autograd keeps between forward and backward (distinct storages): the deterministic part of a
    training step's peak memory, free of allocator noise. Averaged over 5 forward passes (paths vary)."""
    import torch
    import torch.nn.functional as F

    totals = []
    for _ in range(5):
        seen: dict[int, int] = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(model(x), torch.zeros(x.shape[0], dtype=torch.long))
            if extra is not None:
                loss = loss + extra()
        loss.backward()
        model.zero_grad(set_to_none=True)
        totals.append(sum(seen.values()) / 2**20)
    return statistics.mean(totals)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ops", default="default")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", choices=list(VARIANTS))
    p.add_argument("--out", default=str(RESULTS / "search_cost.json"))
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.model, a.batch_size, a.steps, a.ops, a.threads)))
        return
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for _ in range(a.rounds):
        for variant in VARIANTS:
            cmd = [sys.executable, "-m", "bench.search_cost", "--worker", variant, "--model", a.model, "--batch-size",
                   str(a.batch_size), "--steps", str(a.steps), "--ops", a.ops, "--threads", str(a.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {v: {k: statistics.median(r[k] for r in rs)
               for k in ("step_ms", "peak_rss_mb", "peak_rss_growth_mb", "saved_for_backward_mb")}
           for v, rs in runs.items()}
    result = {
        "model": a.model, "batch_size": a.batch_size, "ops": a.ops, "threads": a.threads, "rounds": a.rounds,
        "median": med,
        "ratios": {v: {"time": med[v]["step_ms"] / med["plain"]["step_ms"],
                       "peak_rss": med[v]["peak_rss_mb"] / med["plain"]["peak_rss_mb"],
                       "peak_rss_growth": med[v]["peak_rss_growth_mb"] / max(med["plain"]["peak_rss_growth_mb"], 1e-9),
                       "saved_for_backward": med[v]["saved_for_backward_mb"] / med["plain"]["saved_for_backward_mb"]}
                   for v in VARIANTS if v != "plain"},
        "note": "search: gates at P(original)=0.9 as compress starts them; search-uniform: all operators equally "
                "likely, the most expensive start. peak_rss_growth: RSS growth from after model set-up to the peak.",
        "runs": runs, "machine": {"platform": platform.platform(), "processor": platform.processor(),
                                  "python": platform.python_version()},
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    for v, r in result["ratios"].items():
        print(f"{v}/plain: step time {r['time']:.2f}x, peak RSS {r['peak_rss']:.2f}x, "
              f"RSS growth during training {r['peak_rss_growth']:.2f}x, saved for backward {r['saved_for_backward']:.2f}x")
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
