"""Targets and budgets on ResNet-20 (shipped CIFAR-10 subset): does the search land where the user asks?

    python -m bench.targets [--seeds 0 1] [--quick]
    python -m bench.targets --targets ram=0.85 ram:plain=0.85 ram=0.6 --out bench/results/targets_ram.json

One baseline (trained once, cached), then for each target (MACs 0.7x / 0.5x / 0.3x; flash 50% / 35% / 25% of
the int8 original's weights; peak RAM as a share of the int8 original's planned peak, under the default
in-place plan or the ``plain`` one) and seed, an LWDC run with ``budgets=`` and no lambda. A budget refused
before training is recorded with its message and how long the refusal took. Each run records where the
search's argmax network ended before any repair (did the multipliers alone get there?), what was repaired, what
the derived model measures (MACs by an independent FLOP counter, flash as the C exporter counts it) and its
accuracy. Runs resume from their folders; results go to ``bench/results/targets.json``.
``bench/results/targets_integral.json`` holds the first control law's runs (multiplier only, rate 10): the
searches overshot below their targets (0.5x -> 0.39x/0.44x, 0.3x -> 0.08x/0.09x, flash 0.5 -> 0.18x), which is
why the penalty now has a quadratic part (``lwdc.budgets.BudgetTerm.penalty``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lwdc import compress
from lwdc.api import CompressConfig
from lwdc.budgets import BUDGET_SIGNALS, BudgetError
from lwdc.methods.search import GATE_OPTIMIZERS
from lwdc.costs import get_cost_model
from lwdc.costs.flash import flash_bytes
from lwdc.costs.ram import peak_ram_bytes
from lwdc.data import BatchLoader, load_data
from lwdc.models import create_model
from lwdc.profiling import count_macs
from lwdc.runs import write_json
from lwdc.stages import config_fingerprint, train_stage
from lwdc.tasks import Classification
from lwdc.train import TrainConfig, evaluate

from .measure import git_info, machine_info

OUT = Path(__file__).resolve().parent / "results" / "targets.json"
CACHE = Path.home() / ".cache" / "lwdc" / "bench" / "targets"
TARGETS = ("macs=0.7x", "macs=0.5x", "macs=0.3x", "flash=0.5", "flash=0.35", "flash=0.25")
OPTIONAL = ("ram=0.85", "ram:plain=0.85", "ram=0.6")      # absolute budgets: a share of the original's figure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--flash-seeds", type=int, nargs="+", default=[0])
    p.add_argument("--baseline-epochs", type=int, default=30)
    p.add_argument("--search-epochs", type=int, default=8)
    p.add_argument("--finetune-epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--targets", nargs="+", default=list(TARGETS), help=f"any of {', '.join(TARGETS + OPTIONAL)}")
    p.add_argument("--tag", default="", help="appended to run folder names (a rerun under new settings)")
    p.add_argument("--fill-limits", action="store_true", help="fill absolute budgets (flash=0.35) toward their "
                   "limits after the search (CompressConfig.fill_limits); name such runs apart with --tag")
    p.add_argument("--budget-signals", choices=BUDGET_SIGNALS, nargs="+", default=[CompressConfig.budget_signal],
                   help="what each target's pull is sized by during the search (lwdc.budgets); each target runs "
                        "under each, named -SIGNAL")
    p.add_argument("--gate-optimizer", default=CompressConfig.gate_optimizer, choices=GATE_OPTIMIZERS,
                   help="the gates' optimiser (lwdc.methods.search); a non-default one is named -shared-adam")
    p.add_argument("--budget-ramp", type=float, default=CompressConfig.budget_ramp,
                   help="each limit falls from 1.0x to its value over this share of the search; a ramped run is "
                        "named -rampR (runs named without were not ramped, the default before 0.5)")
    p.add_argument("--quick", action="store_true", help="a few batches per epoch (smoke)")
    p.add_argument("--cache-dir", default=str(CACHE))
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args()
    torch.set_num_threads(1)
    cache = Path(a.cache_dir) / ("quick" if a.quick else "full")
    max_batches = 3 if a.quick else None
    data = load_data("cifar10-subset")
    train = BatchLoader(data.train, a.batch_size, shuffle=True, augment=data.augment, drop_last=True)
    test = BatchLoader(data.test, 500)
    example = data.test.normalize(data.test.x[:1])
    task = Classification()
    torch.manual_seed(0)
    base = create_model("resnet20", num_classes=10)
    cfg = TrainConfig(epochs=a.baseline_epochs, lr=0.1, max_batches=max_batches, progress=False, desc="baseline",
                      channels_last=True)
    train_stage("train", base, task, train, test, cfg, cache / "baseline",
                config_fingerprint({"epochs": cfg.epochs, "batch": a.batch_size, "mb": max_batches}), log=print)
    base_acc = evaluate(base, task, test)["accuracy"]
    base_macs, base_flash = count_macs(base, example), flash_bytes(base, example_input=example)
    print(f"baseline: {base_acc:.2f}%, {base_macs:,} MACs, {base_flash:,} B int8 flash")
    rows = []

    def save() -> None:     # after every run, refusals included
        write_json(Path(a.out), {"baseline": {"accuracy": base_acc, "macs": base_macs, "flash_bytes": base_flash,
                                              "epochs": a.baseline_epochs},
                                 "settings": vars(a), "runs": rows, "machine": machine_info(), "git": git_info()})

    for target in a.targets:
        cost, value = target.split("=")
        absolute = not value.endswith("x")      # flash=0.35: 35% of the original's bytes, as a byte budget
        original = get_cost_model(cost).network_cost(base, example) if absolute else None
        limit = f"{int(float(value) * original)}" if absolute else value
        for seed, signal in ((s, g) for s in (a.flash_seeds if absolute else a.seeds) for g in a.budget_signals):
            name = f"{cost.replace(':', '-')}-{value}-s{seed}{a.tag}-{signal}" + \
                (f"-{a.gate_optimizer}" if a.gate_optimizer != CompressConfig.gate_optimizer else "") + \
                (f"-ramp{a.budget_ramp:g}" if a.budget_ramp else "")
            started = time.perf_counter()
            lines: list[str] = []
            try:
                result = compress(base, train, test, example_input=example, budgets={cost: limit}, ops="default",
                                  search_epochs=a.search_epochs, finetune_epochs=a.finetune_epochs, seed=seed,
                                  finetune_lr=0.05, fill_limits=a.fill_limits, budget_signal=signal, gate_optimizer=a.gate_optimizer,
                                  budget_ramp=a.budget_ramp, max_batches=max_batches,
                                  progress=False, run_dir=cache / name,
                                  log=lambda s: (lines.append(s), print(f"[{name}] {s}", flush=True)))
            except BudgetError as exc:
                rows.append({"run": name, "target": f"{cost}={value} ({limit} B of {original:,.0f})", "seed": seed,
                             "budget_signal": signal, "gate_optimizer": a.gate_optimizer, "budget_ramp": a.budget_ramp,
                             "refused": str(exc), "seconds": time.perf_counter() - started})
                print(f"[{name}] refused after {rows[-1]['seconds']:.1f} s: {exc}", flush=True)
                save()
                continue
            r = result.report
            (budget,) = r["budgets"]
            macs, flash = count_macs(result.model, example), flash_bytes(result.model, example_input=example)
            rows.append({
                "run": name, "target": f"{cost}={value}" + (f" ({limit} B)" if absolute else ""), "seed": seed,
                "budget_signal": signal, "gate_optimizer": a.gate_optimizer, "budget_ramp": a.budget_ramp,
                "search_argmax_ratio": [h["cost_ratios"].get(budget["cost"]) for h in r["history"]["search"]],
                "multipliers": [h.get("extra", {}).get(f"mu_{budget['cost']}") for h in r["history"]["search"]],
                "repaired_layers": budget["repaired_layers"], "filled_layers": budget.get("filled_layers", []),
                "fill_limits": a.fill_limits, "limit_ratio": budget["limit_ratio"],
                "achieved_ratio": budget["achieved_ratio"], "met": budget["met"],
                "macs_ratio": macs / base_macs, "flash_bytes": flash, "flash_ratio": flash / base_flash,
                "accuracy": r["after"]["accuracy"], "baseline_accuracy": base_acc,
                "choices": r["choices"], "seconds": time.perf_counter() - started,
                **({"ram_bytes_before": peak_ram_bytes(base, example),
                    "ram_bytes_after": peak_ram_bytes(result.model, example),
                    "ram_bytes_after_plain_plan": peak_ram_bytes(result.model, example, in_place=False)}
                   if cost.startswith("ram") else {}),
            })
            print(f"[{name}] {rows[-1]['achieved_ratio']:.3f}x against {budget['limit_ratio']:.3f}x "
                  f"(search alone {rows[-1]['search_argmax_ratio'][-1]:.3f}x, repaired {len(budget['repaired_layers'])}), "
                  f"accuracy {rows[-1]['accuracy']:.2f}%", flush=True)
            save()


if __name__ == "__main__":
    main()
