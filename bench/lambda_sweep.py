"""Lambda sweep on the shipped CIFAR-10 subset: one baseline, then compress at several lambdas.

Also trains the baseline for as many extra epochs as fine-tuning gets, so compressed models are compared with
an uncompressed model of the same training budget. Writes bench/results/lambda_sweep_subset.json.
Run: python -m bench.lambda_sweep [--lams 0.5 1 2 3] [--model resnet20 --width 0.5]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lwdc import compress
from lwdc.data import BatchLoader, load_data, random_crop_flip
from lwdc.models import create_model
from lwdc.profiling import count_macs, count_params
from lwdc.tasks import Classification
from lwdc.runs import write_json
from lwdc.train import TrainConfig, evaluate, fit

from .measure import git_info, machine_info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--lams", type=float, nargs="+", default=[0.5, 1.0, 2.0, 3.0])
    p.add_argument("--pretrain-epochs", type=int, default=15)
    p.add_argument("--search-epochs", type=int, default=8)
    p.add_argument("--finetune-epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "lambda_sweep_subset.json"))
    a = p.parse_args()
    torch.manual_seed(a.seed)
    data = load_data("cifar10-subset")
    train = BatchLoader(data.train, 64, shuffle=True, augment=random_crop_flip(4), seed=a.seed, drop_last=True)
    test = BatchLoader(data.test, 256)
    task, quiet = Classification(), (lambda s: None)
    model = create_model(a.model, width=a.width)
    t0 = time.perf_counter()
    fit(model, task, train, test, TrainConfig(epochs=a.pretrain_epochs, lr=0.1, progress=False), log=quiet)
    base_time = time.perf_counter() - t0
    example = data.test.normalize(data.test.x[:1])
    baseline = {"accuracy": evaluate(model, task, test)["accuracy"], "params": count_params(model),
                "macs": count_macs(model, example), "train_s": base_time}
    longer = create_model(a.model, width=a.width)
    longer.load_state_dict(model.state_dict())
    fit(longer, task, train, test, TrainConfig(epochs=a.finetune_epochs, lr=0.05, progress=False), log=quiet)
    baseline["accuracy_same_budget"] = evaluate(longer, task, test)["accuracy"]
    print(f"baseline {baseline['accuracy']:.2f}% (+{a.finetune_epochs} epochs: {baseline['accuracy_same_budget']:.2f}%)")
    points = []
    for lam in a.lams:
        torch.manual_seed(a.seed)
        r = compress(model, train, test, lam=lam, search_epochs=a.search_epochs, finetune_epochs=a.finetune_epochs,
                     finetune_lr=0.05, seed=a.seed, progress=False, log=quiet).report
        points.append({"lambda": lam, "accuracy": r["after"]["accuracy"], "params": r["after"]["params"],
                       "macs": r["after"]["macs"], "macs_ratio": r["ratios"]["macs"],
                       "params_ratio": r["ratios"]["params"], "latency_ratio_b1_eager": r["ratios"]["latency_ms"],
                       "choices": r["choices"], "wall_time_s": r["wall_time_s"]})
        print(f"lambda {lam}: MACs {r['ratios']['macs']:.3f}x params {r['ratios']['params']:.3f}x "
              f"accuracy {r['after']['accuracy']:.2f}%")
    result = {"data": "cifar10-subset (5,000 train / 1,000 test)", "model": a.model, "width": a.width,
              "seed": a.seed, "schedule": {"pretrain": a.pretrain_epochs, "warmup": 1, "search": a.search_epochs,
                                           "finetune": a.finetune_epochs, "batch_size": 64},
              "baseline": baseline, "points": points,
              "machine": machine_info(), "git": git_info()}
    write_json(Path(a.out), result)
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
