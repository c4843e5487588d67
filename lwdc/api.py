"""The one-call pipeline: measure -> compress by a method -> fine-tune -> measure -> save, in a run folder.

With ``run_dir`` every stage checkpoints atomically after each epoch and a second call with the same folder
resumes where the first stopped (a finished stage is not run again); the folder is locked while the call runs.
The method (``CompressConfig.method``, default ``lwdc``) is looked up in :mod:`lwdc.methods`; everything here is
shared by all methods.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from . import distributed as dist
from .costs import get_cost_model
from .device import module_device, resolve_device
from .distill import Distillation, check_distillable
from .methods import get_method
from .profiling import compare_latency, profile
from .runs import Run
from .stages import StageContext, config_fingerprint
from .summary import format_summary
from .tasks import Classification, Task, higher_is_better
from .train import OPTIMIZERS, TrainConfig, evaluate

__all__ = ["CompressConfig", "CompressResult", "compress", "compress_fingerprint", "FINETUNE_ONLY",
           "LEGACY_DEFAULTS"]


@dataclass
class CompressConfig:
    method: str = "lwdc"           # the compression method (lwdc.methods); the fields below up to gate are LWDC's
    ops: str | list[str] = "default"
    lam: float | None = None       # weight of the cost term; None: 1 without budgets, 0 with them
    cost: str = "macs"
    budgets: dict | list | None = None  # targets the search keeps, {"macs": "0.5x", "flash": "200KiB"} (lwdc.budgets)
    budget_rate: float = 2.0       # dual-ascent rate of the budgets' multipliers over the whole search
    budget_stiffness: float = 20.0  # quadratic pull of each budget toward its limit (augmented Lagrangian)
    budget_ramp: float = 0.5       # each limit falls from 1.0x to its value over this fraction of the search
    budget_tolerance: float = 0.05  # a ratio target (0.5x) is met within this; absolute budgets exactly
    budget_signal: str = "argmax"  # a budget's pull is sized by the derivable network, or "expected" (lwdc.budgets)
    fill_limits: bool = False      # also fill an absolute budget left far under (use the board's flash, not a tenth)
    original_prob: float | None = 0.9  # initial P(original) of every gate (None: uniform)
    warmup_epochs: float = 1.0     # branch warm-up by local distillation, in epochs of the training data
    search_epochs: int = 10
    finetune_epochs: int = 10
    lr: float = 0.05               # weights, during search
    finetune_lr: float = 0.02
    distill: float = 0.0           # fine-tune with the original as teacher: weight of the distillation term (0: off)
    distill_temperature: float = 4.0  # softening of both models' logits in that term (lwdc.distill)
    distill_search: bool = False   # also distil LWDC's search: every sampled path learns toward the original
    weight_decay: float = 5e-4
    arch_lr: float = 0.01
    share: dict | None = None      # method "share": lwdc.methods.share.ShareSettings fields (sparsity, budget...)
    gate_optimizer: str = "adam"   # "shared-adam": one second moment for all gates (lwdc.methods.search)
    optimizer: str = "sgd"         # the weights' optimiser in search and fine-tuning: sgd or adamw (lwdc.train)
    gate_travel: float | None = None  # gates' rate at least gate_travel / search steps (short searches; None: off)
    tau_start: float = 5.0
    tau_end: float = 0.5
    noise_end: float = 0.25        # sampling noise at the search's end (from 1): < 1 trains the argmax network more
    gate: str = "gumbel"
    include_pooling: bool = False
    seed: int = 0
    max_batches: int | None = None
    checkpoint_every: int = 0      # batches between mid-epoch checkpoints (0: after each epoch only)
    progress: bool = True
    device: str = "auto"           # where warm-up, search and fine-tuning run (lwdc.device); the rest stays on CPU

    def validate(self) -> None:
        resolve_device(self.device)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        get_method(self.method)
        for name in ("lam", "lr", "finetune_lr", "weight_decay", "arch_lr", "tau_start", "tau_end", "noise_end",
                     "warmup_epochs", "budget_rate", "budget_tolerance", "budget_stiffness", "gate_travel", "budget_ramp",
                     "distill", "distill_temperature"):
            if getattr(self, name) is not None and not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        from .budgets import parse_budgets
        for budget in parse_budgets(self.budgets):
            get_cost_model(budget.cost)
        if self.effective_lam < 0:
            raise ValueError(f"lambda must be >= 0 (it weighs the resource cost), got {self.lam}")
        from .budgets import BUDGET_SIGNALS
        if self.budget_signal not in BUDGET_SIGNALS:
            raise ValueError(f"budget_signal {self.budget_signal!r}: choose one of {', '.join(BUDGET_SIGNALS)}")
        if not 0 <= self.budget_tolerance < 1 or self.budget_rate < 0 or not 0 <= self.budget_ramp <= 1:
            raise ValueError("budget_tolerance must be in [0, 1), budget_rate >= 0 and budget_ramp in [0, 1]")
        if self.max_batches is not None and self.max_batches < 1:
            raise ValueError(f"max_batches must be >= 1 (or unset for whole epochs), got {self.max_batches}")
        for name in ("warmup_epochs", "search_epochs", "finetune_epochs", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        get_cost_model(self.cost)
        if not 0 < self.noise_end <= 1:
            raise ValueError(f"noise_end must be in (0, 1] (1 keeps the sampling noise constant), got {self.noise_end}")
        if self.distill < 0 or not self.distill_temperature > 0:
            raise ValueError(f"distill must be >= 0 (0: plain fine-tuning) and distill_temperature > 0, got "
                             f"{self.distill} and {self.distill_temperature}")
        if self.distill_search and not self.distill:
            raise ValueError("distill_search distils the search with the distill weight: set distill > 0 (e.g. 1)")
        if self.original_prob is not None and not 0 < self.original_prob < 1:
            raise ValueError(f"original_prob must be in (0, 1) (or None for uniform gates), got {self.original_prob}")

    @property
    def effective_lam(self) -> float:
        """lambda as the search uses it: given, else 1 without budgets and 0 with them (the budgets size the model)."""
        return self.lam if self.lam is not None else (0.0 if self.budgets else 1.0)


@dataclass
class CompressResult:
    model: nn.Module                     # the derived, fine-tuned plain model
    supernet: Supernet
    choices: dict[str, str]
    report: dict = field(default_factory=dict)


#: Settings that only derivation and the fine-tuning stage read: a search checkpoint does not depend on them, so a
#: finished search can be derived again (``fill_limits``) or fine-tuned for longer or at another rate (copy
#: checkpoints/search.pt to a new run folder).
FINETUNE_ONLY = ("finetune_epochs", "finetune_lr", "fill_limits", "distill", "distill_temperature")
#: Settings added after checkpoints existed, with the value that reproduces the older behaviour: left out of the
#: fingerprint at that value, so older checkpoints still resume under it, and what a run folder's record that
#: lacks the setting is read as.
LEGACY_DEFAULTS = {"noise_end": 1.0, "method": "lwdc", "budgets": None, "budget_rate": 2.0, "budget_tolerance": 0.05,
                   "budget_stiffness": 20.0, "gate_travel": None,
                   "gate_optimizer": "adam", "budget_ramp": 0.0, "share": None, "optimizer": "sgd",
                   "fill_limits": False, "distill": 0.0, "distill_temperature": 4.0, "distill_search": False,
                   "budget_signal": "expected"}


def compress_fingerprint(cfg: CompressConfig, stage: str = "finetune") -> str:
    """The settings a ``stage`` ("search" or "finetune") checkpoint depends on: not the checkpoint interval, the
    progress bar or the device (checkpoints hold CPU tensors, so a run started on a GPU may resume on a CPU and
    back), and for the search not the fine-tuning settings."""
    finetune_only = FINETUNE_ONLY if not cfg.distill_search else \
        tuple(k for k in FINETUNE_ONLY if k not in ("distill", "distill_temperature"))   # then the search reads them
    ignored = ("checkpoint_every", "progress", "device") + (finetune_only if stage == "search" else ())
    if not cfg.budgets:
        ignored += ("budget_signal", "budget_ramp")   # read only by budgets: a lambda-only run does not depend on them
    settings = {**asdict(cfg), "lam": cfg.effective_lam}     # lam None means 1 (or 0 with budgets): same search
    return config_fingerprint({k: v for k, v in settings.items()
                               if k not in ignored and not (k in LEGACY_DEFAULTS and v == LEGACY_DEFAULTS[k])})


def _example_from(data: Iterable) -> torch.Tensor:
    x, _ = next(iter(data))
    return x[:1].clone()


def compress(model: nn.Module, train_data: Iterable, val_data: Iterable | None, *,
             example_input: torch.Tensor | None = None, task: Task | None = None,
             config: CompressConfig | None = None, run_dir: str | Path | Run | None = None, log=print,
             summary: bool = True, eval_sample: str = "stratified", **overrides) -> CompressResult:
    """Compress ``model``: the user names the method's knobs (for LWDC the operator set ``ops`` and the factor
    ``lam``), never a per-layer rate.

    ``train_data``/``val_data`` are iterables of ``(input, target)`` batches (a ``BatchLoader``, a torch
    ``DataLoader``...). Keyword overrides set fields of :class:`CompressConfig`. The user's model is not changed.
    Warm-up, search and fine-tuning run on ``cfg.device``; everything else (the derive check, profiling, the
    before/after evaluation, the saved models and the returned ones) stays on the CPU: each stage hands its
    model back there.

    Progress and, at the end, the before/after table (``lwdc.format_summary``, the one the command line prints)
    go through ``log``; ``summary=False`` leaves the table out and ``log=None`` silences everything. Latency is
    ``lwdc.profiling.compare_latency`` of the original against the compressed model (alternating rounds, eager
    and onnxruntime where installed), stored as ``report["latency"]``. With ``max_batches`` the before/after
    evaluation takes ``max_batches`` batches' worth of a seeded class-stratified sample of ``val_data``
    (``eval_sample="first"``: its first batches, as before).
    """
    cfg = CompressConfig(**{**(asdict(config) if config else {}), **overrides})
    cfg.validate()
    if module_device(model).type != "cpu":
        model = copy.deepcopy(model).cpu()      # expand, profile and the equivalence check take CPU models
    log = log if log is not None and dist.is_main() else (lambda _line: None)
    task = task or Classification()
    if cfg.distill:
        check_distillable(task)                  # before any work: the fine-tune would refuse it at the end
    example = example_input if example_input is not None else _example_from(train_data)
    run = run_dir if isinstance(run_dir, Run) or run_dir is None else Run(run_dir)
    if run is not None and dist.is_main():
        run.lock()                               # held until the caller releases it, or the process ends
        run.remove_stale_temporaries()          # left by a run killed while writing; its targets are intact
    started = time.perf_counter()

    before = profile(model, example, latency=False).as_dict()     # timed at the end, alternating with the result
    before.update(evaluate(model, task, val_data, cfg.max_batches, sample=eval_sample, seed=cfg.seed)
                  if val_data is not None else {})
    log(f"original: {before['params']:,} params, {before['macs']:,} MACs, "
        f"{task.primary} {before.get(task.primary, float('nan')):.2f}")

    ctx = StageContext(task, train_data, val_data, example, cfg, run, log,
                       fingerprint=lambda stage: compress_fingerprint(cfg, stage))
    method = get_method(cfg.method)()
    result = method.apply(model, ctx)
    derived = result.model

    t0 = time.perf_counter()
    tune_cfg = TrainConfig(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, weight_decay=cfg.weight_decay,
                           optimizer=cfg.optimizer, max_batches=cfg.max_batches, checkpoint_every=cfg.checkpoint_every,
                           progress=cfg.progress, desc="finetune", device=cfg.device)
    teacher = Distillation(model, cfg.distill, cfg.distill_temperature) if cfg.distill else None
    tune_log = ctx.train("finetune", derived, tune_cfg, ctx.fingerprint("finetune"), method=teacher)
    if hasattr(method, "finish"):
        derived = method.finish(derived)
    tune_time = time.perf_counter() - t0

    after = profile(derived, example, latency=False).as_dict()
    after.update(evaluate(derived, task, val_data, cfg.max_batches, sample=eval_sample, seed=cfg.seed)
                 if val_data is not None else {})
    log("timing the original against the compressed model (alternating rounds, batch 1, one thread)")
    latency = compare_latency(model, derived, example[:1])
    for side, key in ((before, "a"), (after, "b")):
        rounds = getattr(latency.eager, f"{key}_rounds")
        side.update(latency_ms=statistics.median(rounds), latency_range_ms=[min(rounds), max(rounds)])
        side.pop("latency", None)                       # the whole measurement is report["latency"]
    report = {
        "config": asdict(cfg), "method": cfg.method, "lambda": cfg.effective_lam, "cost": cfg.cost, "task": task.name,
        "primary_metric": task.primary,
        "primary_higher_is_better": higher_is_better(task), "example_input_shape": list(example.shape),
        "device": str(resolve_device(cfg.device)),
        "before": before, "after": after,
        "ratios": {**{k: after[k] / before[k] for k in ("params", "macs") if before.get(k)},
                   "latency_ms": latency.eager.ratio},      # median of per-round ratios, not of the medians
        "latency": latency.as_dict(), "eval_sample": eval_sample if cfg.max_batches else None,
        "choices": result.choices, **result.report,
        "history": {**{k: [asdict(h) for h in v] for k, v in result.history.items()},
                    "finetune": [asdict(h) for h in tune_log]},
        "wall_time_s": {**result.wall_time_s, "finetune": tune_time, "total": time.perf_counter() - started},
    }
    if run is not None and dist.is_main():
        log(f"saving both models to {run.folder} (state, architecture, torch.export programs)")
        run.save_model("model", derived, example, {"choices": result.choices})
        run.save_model("original", model, example)      # so a report compares both from the folder alone
        run.write_report(report)                         # written last: its presence marks a finished run
    if summary:
        log("\n" + format_summary(report))
    return CompressResult(derived, result.supernet, result.choices, report)
