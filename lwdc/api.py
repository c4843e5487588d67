"""The one-call pipeline: expand -> search -> derive -> fine-tune -> profile, with an optional run folder.

With ``run_dir`` every stage checkpoints atomically after each epoch and a second call with the same folder
resumes where the first stopped (a finished stage is not run again). Everything else is a plain function call.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from . import distributed as dist
from .costs import build_cost_table, get_cost_model
from .derive import derive, max_output_difference
from .device import module_device, resolve_device
from .ops import get_op
from .profile import profile
from .runs import (CHECKPOINT_VERSION, CheckpointError, atomic_save, load_checkpoint, remove_stale_temporaries,
                   save_portable, write_json)
from .space import Supernet, expand
from .tasks import Classification, Task
from .warmup import warm_up_branches
from .train import EpochLog, TrainConfig, batches_per_epoch, evaluate, fit

__all__ = ["CompressConfig", "CompressResult", "compress", "train_stage", "config_fingerprint", "check_checkpoint"]


@dataclass
class CompressConfig:
    ops: str | list[str] = "default"
    lam: float = 1.0
    cost: str = "macs"
    original_prob: float | None = 0.9  # initial P(original) of every gate (None: uniform)
    warmup_epochs: float = 1.0     # branch warm-up by local distillation, in epochs of the training data
    search_epochs: int = 10
    finetune_epochs: int = 10
    lr: float = 0.05               # weights, during search
    finetune_lr: float = 0.02
    weight_decay: float = 5e-4
    arch_lr: float = 0.01
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
        if self.lam < 0:
            raise ValueError(f"lambda must be >= 0 (it weighs the resource cost), got {self.lam}")
        for name in ("warmup_epochs", "search_epochs", "finetune_epochs", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        get_cost_model(self.cost)
        if not 0 < self.noise_end <= 1:
            raise ValueError(f"noise_end must be in (0, 1] (1 keeps the sampling noise constant), got {self.noise_end}")
        if self.original_prob is not None and not 0 < self.original_prob < 1:
            raise ValueError(f"original_prob must be in (0, 1) (or None for uniform gates), got {self.original_prob}")


@dataclass
class CompressResult:
    model: nn.Module                     # the derived, fine-tuned plain model
    supernet: Supernet
    choices: dict[str, str]
    report: dict = field(default_factory=dict)


def config_fingerprint(obj) -> str:
    """A short hash of a settings dict: a checkpoint resumes only under the settings that wrote it."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_stage(stage: str, model: nn.Module, task: Task, train_data: Iterable, val_data: Iterable | None,
                cfg: TrainConfig, run_dir: Path | None, fingerprint: str, log=print, **fit_kwargs) -> list:
    """``fit`` with atomic checkpoints in ``run_dir/checkpoints/<stage>.pt`` after every epoch (and every
    ``cfg.checkpoint_every`` batches), resumed if present; only rank 0 writes."""
    path = Path(run_dir) / "checkpoints" / f"{stage}.pt" if run_dir is not None else None
    log = log if dist.is_main() else (lambda _line: None)
    state = None
    if path is not None and path.exists():
        state = check_checkpoint(path, stage, fingerprint)
        _check_shapes(path, state["model"], model)
        if state["epoch"] >= cfg.epochs:
            log(f"{stage}: finished earlier, loaded from {path}")
        else:
            where = f", batch {state.get('step', 0)}" if state.get("step") else ""
            log(f"{stage}: resuming after epoch {state['epoch']}{where} from {path}")

    def save(full_state: dict, _entry=None) -> None:
        if path is not None and dist.is_main():
            atomic_save({"lwdc_checkpoint": stage, "version": CHECKPOINT_VERSION, "fingerprint": fingerprint,
                         **full_state}, path)

    if state is not None and state["epoch"] >= cfg.epochs:
        model.load_state_dict(state["model"])
        if isinstance(model, Supernet) and state.get("gate"):
            model.gate.load_state_dict(state["gate"])
        return [EpochLog(**h) for h in state["history"]]
    return fit(model, task, train_data, val_data, cfg, state=state, on_epoch=save, on_step=save, log=log, **fit_kwargs)


_STATE_KEYS = ("fingerprint", "epoch", "model", "optimizer", "scheduler", "arch_optimizer", "gate", "torch_rng",
               "history")


def check_checkpoint(path: Path, stage: str, fingerprint: str | None) -> dict:
    """Load a stage checkpoint and refuse it, with the reason, unless this run can resume from it (also used to
    vet a run folder before any work starts; ``fingerprint`` None skips the settings check)."""
    state = load_checkpoint(path, stage, required=_STATE_KEYS)
    if fingerprint is not None and state.get("fingerprint") != fingerprint:
        raise CheckpointError(f"{path} was written by a run with another configuration; "
                              "use a new run folder or restore the original settings")
    if state.get("world_size", 1) != dist.world_size():
        raise CheckpointError(f"{path} was written by {state.get('world_size', 1)} process(es), this run has "
                              f"{dist.world_size()}; resume with torchrun --nproc_per_node="
                              f"{state.get('world_size', 1)} (a rank's batches depend on the number of ranks)")
    return state


def _check_shapes(path: Path, saved: dict, model: nn.Module) -> None:
    """Name the first mismatch instead of torch's list of every tensor."""
    own = model.state_dict()
    wrong = [k for k in own if k not in saved or tuple(saved[k].shape) != tuple(own[k].shape)]
    wrong += [k for k in saved if k not in own]
    if wrong:
        k = wrong[0]
        what = (f"{k} is {list(saved[k].shape)} there and {list(own[k].shape)} here" if k in saved and k in own
                else f"{k} is missing {'there' if k in own else 'here'}")
        raise CheckpointError(f"{path} holds weights of another model ({len(wrong)} tensor(s) differ; {what}); "
                              "use a new run folder or restore the original settings")


#: Settings that only the fine-tuning stage reads: a search checkpoint does not depend on them, so a finished
#: search can be fine-tuned again for longer or at another rate (copy checkpoints/search.pt to a new run folder).
FINETUNE_ONLY = ("finetune_epochs", "finetune_lr")
#: Settings added after checkpoints existed, with the value that reproduces the older behaviour: left out of the
#: fingerprint at that value, so older checkpoints still resume under it, and what a run folder's record that
#: lacks the setting is read as.
LEGACY_DEFAULTS = {"noise_end": 1.0}


def compress_fingerprint(cfg: CompressConfig, stage: str = "finetune") -> str:
    """The settings a ``stage`` ("search" or "finetune") checkpoint depends on: not the checkpoint interval, the
    progress bar or the device (checkpoints hold CPU tensors, so a run started on a GPU may resume on a CPU and
    back), and for the search not the fine-tuning settings."""
    ignored = ("checkpoint_every", "progress", "device") + (FINETUNE_ONLY if stage == "search" else ())
    return config_fingerprint({k: v for k, v in asdict(cfg).items()
                               if k not in ignored and not (k in LEGACY_DEFAULTS and v == LEGACY_DEFAULTS[k])})


def _example_from(data: Iterable) -> torch.Tensor:
    x, _ = next(iter(data))
    return x[:1].clone()


def _layer_rows(supernet: Supernet, choices: dict[str, str]) -> list[dict]:
    rows = []
    for name, layer in supernet.choice_layers().items():
        original, chosen = get_op("original"), get_op(choices[name])
        rows.append({
            "name": name, "original": f"{layer.spec.kind}{'x'.join(map(str, layer.spec.kernel))}"
                                      f"{'_g%d' % layer.spec.groups if layer.spec.groups > 1 else ''} "
                                      f"{layer.spec.in_ch}->{layer.spec.out_ch} s{layer.spec.stride[0]}",
            "chosen": choices[name], "candidates": layer.op_names,
            "probabilities": [round(float(p), 4) for p in layer.probabilities().detach()],
            "params_before": original.params(layer.spec), "params_after": chosen.params(layer.spec),
            "macs_before": original.macs(layer.spec), "macs_after": chosen.macs(layer.spec),
        })
    return rows


def compress(model: nn.Module, train_data: Iterable, val_data: Iterable | None, *,
             example_input: torch.Tensor | None = None, task: Task | None = None,
             config: CompressConfig | None = None, run_dir: str | Path | None = None, log=print,
             **overrides) -> CompressResult:
    """Compress ``model``: the user names the operator set (``ops``) and the factor (``lam``), nothing per layer.

    ``train_data``/``val_data`` are iterables of ``(input, target)`` batches (a ``BatchLoader``, a torch
    ``DataLoader``...). Keyword overrides set fields of :class:`CompressConfig`. The user's model is not changed.
    Warm-up, search and fine-tuning run on ``cfg.device``; everything else (the derive check, profiling, the
    before/after evaluation, the saved models and the returned ones) stays on the CPU: each stage hands its
    model back there.
    """
    cfg = CompressConfig(**{**(asdict(config) if config else {}), **overrides})
    cfg.validate()
    if module_device(model).type != "cpu":
        model = copy.deepcopy(model).cpu()      # expand, profile and the equivalence check take CPU models
    log = log if dist.is_main() else (lambda _line: None)
    task = task or Classification()
    example = example_input if example_input is not None else _example_from(train_data)
    run_dir = Path(run_dir) if run_dir is not None else None
    fingerprint = compress_fingerprint(cfg)
    search_fingerprint = compress_fingerprint(cfg, "search")
    if run_dir is not None and dist.is_main():
        remove_stale_temporaries(run_dir)       # left by a run killed while writing; its targets are intact
    started = time.perf_counter()

    before = profile(model, example).as_dict()
    before.update(evaluate(model, task, val_data, cfg.max_batches) if val_data is not None else {})
    log(f"original: {before['params']:,} params, {before['macs']:,} MACs, "
        f"{task.primary} {before.get(task.primary, float('nan')):.2f}")

    torch.manual_seed(cfg.seed)
    supernet = expand(model, example, cfg.ops, include_pooling=cfg.include_pooling, gate=cfg.gate, seed=cfg.seed)
    supernet.init_gates(cfg.original_prob)
    for s in supernet.skipped:
        log(f"left as is: {s.name}: {s.reason}")
    objective = build_cost_table(get_cost_model(cfg.cost), supernet, model, example)
    report_tables = tuple(build_cost_table(get_cost_model(c), supernet, model, example)
                          for c in ("params", "macs") if c != objective.name)
    log(f"search space: {len(supernet.choice_layers())} layers, "
        f"{sum(len(l.branches) for l in supernet.choice_layers().values())} branches; cost {objective.name}")

    t0 = time.perf_counter()
    resuming = run_dir is not None and (run_dir / "checkpoints" / "search.pt").exists()
    warmup = {}
    if cfg.warmup_epochs > 0 and not resuming:     # a search checkpoint already holds the warmed-up branches
        torch.manual_seed(cfg.seed)
        warmup = warm_up_branches(supernet, train_data, max(1, round((batches_per_epoch(train_data, cfg.max_batches) or 100) * cfg.warmup_epochs)),
                                  log=log, device=cfg.device)
    warmup_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    search_cfg = TrainConfig(epochs=cfg.search_epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                             arch_lr=cfg.arch_lr, lam=cfg.lam, tau_start=cfg.tau_start, tau_end=cfg.tau_end,
                             noise_end=cfg.noise_end,
                             max_batches=cfg.max_batches, checkpoint_every=cfg.checkpoint_every,
                             progress=cfg.progress, desc="search", device=cfg.device)
    search_log = train_stage("search", supernet, task, train_data, val_data, search_cfg, run_dir,
                             search_fingerprint, log=log, cost_table=objective, report_tables=report_tables)
    search_time = time.perf_counter() - t0

    choices = supernet.choices()
    derived = derive(supernet)
    derive_diff = max_output_difference(supernet, derived, example)

    t0 = time.perf_counter()
    tune_cfg = TrainConfig(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, weight_decay=cfg.weight_decay,
                           max_batches=cfg.max_batches, checkpoint_every=cfg.checkpoint_every,
                           progress=cfg.progress, desc="finetune", device=cfg.device)
    tune_log = train_stage("finetune", derived, task, train_data, val_data, tune_cfg, run_dir, fingerprint, log=log)
    tune_time = time.perf_counter() - t0

    after = profile(derived, example).as_dict()
    after.update(evaluate(derived, task, val_data, cfg.max_batches) if val_data is not None else {})
    report = {
        "config": asdict(cfg), "lambda": cfg.lam, "cost": objective.name, "task": task.name,
        "primary_metric": task.primary, "example_input_shape": list(example.shape),
        "device": str(resolve_device(cfg.device)),
        "before": before, "after": after,
        "ratios": {k: after[k] / before[k] for k in ("params", "macs", "latency_ms") if before.get(k)},
        "expected_cost_ratio": {t.name: t.chosen_ratio(supernet) for t in (objective, *report_tables)},
        "choices": choices, "layers": _layer_rows(supernet, choices),
        "skipped": [asdict(s) for s in supernet.skipped],
        "derive_max_abs_diff": derive_diff,
        "history": {"search": [asdict(h) for h in search_log], "finetune": [asdict(h) for h in tune_log]},
        "warmup_error": warmup,
        "wall_time_s": {"warmup": warmup_time, "search": search_time, "finetune": tune_time, "total": time.perf_counter() - started},
    }
    if run_dir is not None and dist.is_main():
        atomic_save({"lwdc_checkpoint": "model", "version": CHECKPOINT_VERSION, "choices": choices, "state_dict": derived.state_dict()},
                    run_dir / "model_state.pt")
        save_portable(derived, example, run_dir / "model.pt2")
        save_portable(model, example, run_dir / "original.pt2")   # so a report compares both from the folder alone
        write_json(run_dir / "report.json", report)      # written last: its presence marks a finished run
    return CompressResult(derived, supernet, choices, report)
