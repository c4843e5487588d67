"""A training stage that checkpoints into a run folder and resumes from it, and what a method's stages share.

``train_stage`` is ``fit`` plus the run folder: after every epoch (and every ``checkpoint_every`` batches) the
state is written through :class:`lwdc.runs.Run`, and a second call resumes it, or loads it if it finished.
:class:`StageContext` is what the pipeline hands a compression method: task, data, example input, settings,
the run folder and the log, with ``train`` to run one checkpointed stage.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from . import distributed as dist
from .methods.base import TrainingMethod
from .runs import CheckpointError, Run, load_checkpoint
from .tasks import Task
from .train import EpochLog, TrainConfig, fit

__all__ = ["StageContext", "train_stage", "check_checkpoint", "config_fingerprint"]

_STATE_KEYS = ("fingerprint", "epoch", "model", "optimizer", "scheduler", "arch_optimizer", "gate", "torch_rng",
               "history")


def config_fingerprint(obj) -> str:
    """A short hash of a settings dict: a checkpoint resumes only under the settings that wrote it."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _as_run(run: Run | str | Path | None) -> Run | None:
    return run if isinstance(run, Run) or run is None else Run(run)


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


def train_stage(stage: str, model: nn.Module, task: Task, train_data: Iterable, val_data: Iterable | None,
                cfg: TrainConfig, run: Run | str | Path | None, fingerprint: str, log=print,
                method: TrainingMethod | None = None) -> list[EpochLog]:
    """``fit`` with atomic checkpoints of ``stage`` in the run folder after every epoch (and every
    ``cfg.checkpoint_every`` batches), resumed if present; only rank 0 writes."""
    run = _as_run(run)
    log = log if dist.is_main() else (lambda _line: None)
    state = None
    if run is not None and run.has_checkpoint(stage):
        path = run.checkpoint_path(stage)
        state = check_checkpoint(path, stage, fingerprint)
        _check_shapes(path, state["model"], model)
        if state["epoch"] >= cfg.epochs:
            log(f"{stage}: finished earlier, loaded from {path}")
        else:
            where = f", batch {state.get('step', 0)}" if state.get("step") else ""
            log(f"{stage}: resuming after epoch {state['epoch']}{where} from {path}")

    def save(full_state: dict, _entry=None) -> None:
        if run is not None and dist.is_main():
            run.save_stage(stage, {"fingerprint": fingerprint, **full_state})

    if state is not None and state["epoch"] >= cfg.epochs:
        model.load_state_dict(state["model"])
        if method is not None and state.get("gate"):
            method.setup(model, 1)
            method.load_state_dict(state)
        return [EpochLog(**h) for h in state["history"]]
    return fit(model, task, train_data, val_data, cfg, method=method, state=state, on_epoch=save, on_step=save,
               log=log)


@dataclass
class StageContext:
    """What the pipeline hands a compression method (see :mod:`lwdc.methods`)."""

    task: Task
    train_data: Iterable
    val_data: Iterable | None
    example: torch.Tensor
    config: Any                      # lwdc.api.CompressConfig
    run: Run | None
    log: Callable[[str], None]
    fingerprint: Callable[[str], str] = lambda stage: stage   # the settings a stage's checkpoint depends on

    def train(self, stage: str, model: nn.Module, cfg: TrainConfig, fingerprint: str,
              method: TrainingMethod | None = None) -> list[EpochLog]:
        """One checkpointed training stage in this run's folder."""
        return train_stage(stage, model, self.task, self.train_data, self.val_data, cfg, self.run, fingerprint,
                           log=self.log, method=method)

    def resuming(self, stage: str) -> bool:
        """Whether this run folder already holds a checkpoint of ``stage``."""
        return self.run is not None and self.run.has_checkpoint(stage)
