"""Latency-aware against FLOPs-aware search (issue 5): ResNet-20 on the shipped CIFAR-10 subset, one thread.

Trains one baseline, times how long the latency table of its search space takes to build (fresh and from the
cache, eager and onnxruntime), then compresses it with each cost model at each lambda (lambda is normalised by
the original's cost, so the same value asks for the same share of each cost). Every derived model is timed at
batch 1 in PyTorch eager and onnxruntime, in alternating rounds with the original, and evaluated on the test split.
Writes bench/results/cost_latency_vs_flops.json.
Run: python -m bench.cost_latency_vs_flops [--costs flops latency] [--lams 1 2] [--width 0.5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lwdc import compress
from lwdc.costs import build_cost_table, get_cost_model
from lwdc.data import BatchLoader, load_data, random_crop_flip
from lwdc.models import create_model
from lwdc.profiling import count_macs, count_params, measure_latency
from lwdc.space import expand
from lwdc.tasks import Classification
from lwdc.runs import write_json
from lwdc.train import TrainConfig, evaluate, fit

from .measure import git_info, machine_info

CACHE = Path.home() / ".cache" / "lwdc" / "bench"


def table_build_times(width: float, example: torch.Tensor) -> dict:
    """Seconds to price every branch of the ResNet-20 search space: fresh, then again from the cache."""
    model = create_model("resnet20", width=width)
    supernet = expand(model, example, "default")
    out = {"layers": len(supernet.choice_layers()),
           "branches": sum(len(l.branches) for l in supernet.choice_layers().values())}
    for spec in ("latency", "latency:onnxruntime"):
        for attempt in ("first", "cached"):
            cost = get_cost_model(spec)
            t0 = time.perf_counter()
            table = build_cost_table(cost, supernet, model, example)
            out[f"{spec}_{attempt}"] = {"seconds": round(time.perf_counter() - t0, 3), "measured": cost.measurements,
                                        "cache_hits": cost.cache_hits, "reference_ms": table.reference,
                                        "fixed_ms": table.fixed}
    return out


def latencies(models: dict, example: torch.Tensor, rounds: int = 3) -> dict:
    """Median over alternating rounds of each model's median batch-1 latency (ms), eager and onnxruntime."""
    out = {}
    for backend in ("eager", "onnxruntime"):
        runs: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(rounds):
            for name, model in models.items():
                runs[name].append(measure_latency(model, example, repeats=50, min_seconds=0.3, backend=backend, threads=1))
        out[backend] = {name: statistics.median(v) for name, v in runs.items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--costs", nargs="+", default=["flops", "latency"])
    p.add_argument("--lams", type=float, nargs="+", default=[1.0, 2.0])
    p.add_argument("--pretrain-epochs", type=int, default=15)
    p.add_argument("--search-epochs", type=int, default=6)
    p.add_argument("--finetune-epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "cost_latency_vs_flops.json"))
    a = p.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    os.environ["LWDC_CACHE_DIR"] = tempfile.mkdtemp(prefix="lwdc-latency-bench-")   # a fresh table, timed
    data = load_data("cifar10-subset")
    example = data.test.normalize(data.test.x[:1])
    build = {f"width_{w}": table_build_times(w, example) for w in sorted({1.0, a.width})}
    print("latency table build:", json.dumps(build, indent=1))

    torch.manual_seed(a.seed)
    train = BatchLoader(data.train, 64, shuffle=True, augment=random_crop_flip(4), seed=a.seed, drop_last=True)
    test = BatchLoader(data.test, 256)
    task, quiet = Classification(), (lambda s: None)
    model = create_model("resnet20", width=a.width)
    weights = CACHE / f"resnet20_w{a.width}_subset_e{a.pretrain_epochs}_s{a.seed}.pt"
    if weights.exists():
        model.load_state_dict(torch.load(weights, weights_only=True))
    else:
        fit(model, task, train, test, TrainConfig(epochs=a.pretrain_epochs, lr=0.1, progress=False), log=quiet)
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), weights)
    baseline = {"accuracy": evaluate(model, task, test)["accuracy"], "params": count_params(model),
                "macs": count_macs(model, example)}
    print(f"baseline {baseline['accuracy']:.2f}%")

    points, derived = [], {"original": model}
    for cost in a.costs:
        for lam in a.lams:
            torch.manual_seed(a.seed)
            r = compress(model, train, test, lam=lam, cost=cost, search_epochs=a.search_epochs,
                         finetune_epochs=a.finetune_epochs, finetune_lr=0.05, seed=a.seed, progress=False, log=quiet)
            name = f"{cost}@{lam:g}"
            derived[name] = r.model
            points.append({"name": name, "cost": cost, "lambda": lam, "accuracy": r.report["after"]["accuracy"],
                           "macs_ratio": r.report["ratios"]["macs"], "params_ratio": r.report["ratios"]["params"],
                           "expected_cost_ratio": r.report["expected_cost_ratio"], "choices": r.choices,
                           "wall_time_s": r.report["wall_time_s"]})
            print(f"{name}: accuracy {points[-1]['accuracy']:.2f}% MACs {points[-1]['macs_ratio']:.3f}x "
                  f"({r.report['wall_time_s']['total']:.0f}s)")
    lat = latencies(derived, example)
    baseline["latency_ms"] = {b: lat[b]["original"] for b in lat}
    for point in points:
        point["latency_ms"] = {b: lat[b][point["name"]] for b in lat}
        point["latency_ratio"] = {b: lat[b][point["name"]] / lat[b]["original"] for b in lat}
        print(f"{point['name']}: eager {point['latency_ratio']['eager']:.3f}x, "
              f"onnxruntime {point['latency_ratio']['onnxruntime']:.3f}x, accuracy {point['accuracy']:.2f}%")
    result = {"data": "cifar10-subset (5,000 train / 1,000 test)", "model": "resnet20", "width": a.width,
              "seed": a.seed, "schedule": {"pretrain": a.pretrain_epochs, "warmup": 1, "search": a.search_epochs,
                                           "finetune": a.finetune_epochs, "batch_size": 64},
              "latency_table_build": build, "baseline": baseline, "points": points,
              "machine": machine_info(), "wall_time_s": time.perf_counter() - started, "git": git_info()}
    write_json(Path(a.out), result)
    print(f"-> {a.out} ({result['wall_time_s']:.0f}s)")


if __name__ == "__main__":
    main()
