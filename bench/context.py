"""What every benchmark run shares: its settings and data (``Context``), its names and folders, its fingerprints.

Kept apart from bench/cifar.py (the command) and bench/runners.py (the methods) so that both, bench.remeasure and
bench.report name runs and folders the same way.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lwdc.data import BatchLoader
from lwdc.models import create_model
from lwdc.stages import config_fingerprint
from lwdc.train import TrainConfig

from .configs import Schedule

__all__ = ["Context", "run_name", "cost_label", "folder_name", "result_stem", "stage_fingerprint", "epoch_seconds",
           "DEFAULT_CACHE", "DEFAULT_OUT"]

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "cifar"
DEFAULT_CACHE = Path.home() / ".cache" / "lwdc" / "bench" / "cifar"


@dataclass
class Context:
    """Everything a run needs: settings, data loaders, the folder of this (model, schedule, seed)."""
    args: argparse.Namespace
    schedule: Schedule
    train: BatchLoader
    test: BatchLoader
    example: torch.Tensor
    num_classes: int
    data_name: str
    folder: Path
    baseline_dir: Path
    log: callable

    def new_model(self, seed: int | None = None) -> nn.Module:
        torch.manual_seed(self.args.seed if seed is None else seed)
        return create_model(self.args.model, num_classes=self.num_classes, width=self.args.width)

    def train_cfg(self, epochs: int, lr: float, desc: str) -> TrainConfig:
        return TrainConfig(epochs=epochs, lr=lr, max_batches=self.args.max_batches, progress=False, desc=desc,
                           device=self.args.device, channels_last=self.schedule.channels_last)


def cost_label(cost: str) -> str:
    """A search cost as a run-name part ('' for MACs, the cost of every run named before costs were options)."""
    return "" if cost == "macs" else "-" + cost.replace(":", "_")


def budget_label(budgets) -> str:
    """LWDC budgets as a run-name part: ``--budget flash=75000 --budget ram=75000`` -> '-flash75000-ram75000'."""
    return "".join("-" + b.replace("=", "").replace(":", "_").replace(".", "p") for b in sorted(budgets or ()))


def run_name(method: str, lam: float | None, ops: str, target: float | None,
             finetune_epochs: int | None = None, noise_end: float = 1.0, cost: str = "macs", budgets=(),
             draw: int | None = None, match: str = "macs", ablations=(), variants=(), distill: float = 0.0,
             start: str = "supernet") -> str:
    if method in ("baseline", "baseline-extended"):
        return method
    kd = distill_label(distill)
    point = (f"{ops}-lam{lam:g}" + (f"-noise{noise_end:g}" if noise_end != 1 else "") + cost_label(cost)
             + budget_label(budgets)) if lam is not None else f"macs{target:g}"
    if method == "random":          # draw k of an LWDC point, matched on its MACs (or another cost)
        return (f"random-{point}" + ("" if match == "macs" else "-match_" + match.replace(":", "_"))
                + ("" if start == "supernet" else f"-from_{start}") + f"-d{draw}")
    if method != "lwdc":
        return f"{method}-{point}{kd}"
    return (f"lwdc-{point}" + (f"-ft{finetune_epochs}" if finetune_epochs else "")
            + "".join(f"-abl_{x}" for x in sorted(ablations or ())) + "".join(f"-{x}" for x in sorted(variants or ()))
            + kd)


def distill_label(weight: float) -> str:
    """Fine-tuning distilled from the baseline as a run-name part: '-kd1' for weight 1, '' without."""
    return f"-kd{weight:g}" if weight else ""


def args_run_name(a, method: str | None = None) -> str:
    """The run name of a parsed bench.cifar command line (its method, or ``method``)."""
    return run_name(method or a.method, a.lam, a.ops, a.target, a.finetune_epochs, a.noise_end, a.cost, a.budget,
                    a.draw, a.match, a.ablate, a.variant, getattr(a, "distill", 0.0), getattr(a, "start", "supernet"))


def folder_name(model: str, schedule: str, seed: int, width: float = 1.0, max_batches: int | None = None) -> str:
    """The cache folder of one (model, schedule, seed): its runs live below it."""
    return f"{model}_{schedule}_s{seed}{_tag(width, max_batches)}"


def result_stem(model: str, schedule: str, name: str, seed: int, width: float = 1.0,
                max_batches: int | None = None) -> str:
    """The file name (without .json) of a run's result in the results folder."""
    return f"{model}_{schedule}{_tag(width, max_batches)}_{name}_s{seed}"


def _tag(width: float, max_batches: int | None) -> str:
    return (f"_w{width:g}" if width != 1 else "") + (f"_mb{max_batches}" if max_batches else "")


def stage_fingerprint(cfg: TrainConfig, **context) -> str:
    """A hash of the settings bench chooses, and only those: a new, unrelated ``TrainConfig`` field in lwdc must
    not orphan the cached baselines every later run starts from."""
    keys = ("epochs", "lr", "momentum", "weight_decay", "max_batches")
    return config_fingerprint({**{k: getattr(cfg, k) for k in keys}, **context})


def epoch_seconds(history: list) -> float | None:
    secs = [h.seconds for h in history]
    return sorted(secs)[len(secs) // 2] if secs else None
