"""Tasks: what the training loop optimises and measures, kept apart so the loop stays task-agnostic.

A task turns a batch's output and target into a loss, and into *sums* (not means) of statistics, so that
batches, epochs and distributed ranks combine by plain addition before ``summarize`` divides.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from .registry import Registry

__all__ = ["Task", "Classification", "register_task", "get_task", "list_tasks"]


class Task(Protocol):
    name: str
    primary: str            # the headline metric ("accuracy"), higher is better

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def batch_stats(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]: ...

    def summarize(self, stats: dict[str, float]) -> dict[str, float]: ...


@dataclass
class Classification:
    """Cross-entropy (optionally label-smoothed); reports mean loss and top-1 accuracy in percent."""

    label_smoothing: float = 0.0
    name: str = "classification"
    primary: str = "accuracy"

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def batch_stats(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        n = target.shape[0]
        return {
            "loss_sum": float(F.cross_entropy(output, target, reduction="sum")),
            "correct": float((output.argmax(dim=1) == target).sum()),
            "count": float(n),
        }

    def summarize(self, stats: dict[str, float]) -> dict[str, float]:
        count = max(stats.get("count", 0.0), 1.0)
        return {"loss": stats.get("loss_sum", 0.0) / count, "accuracy": 100.0 * stats.get("correct", 0.0) / count}


_TASKS = Registry("task")


def register_task(name: str, cls: type | None = None):
    """Register a task class under ``name`` (the data set's default task, or ``--task NAME``); a decorator too."""
    return _TASKS.register(name, cls)


def list_tasks() -> list[str]:
    return sorted(_TASKS.entries)


def get_task(name: str, **options) -> Task:
    """A new task instance of the registered ``name``."""
    return _TASKS.get(name)(**options)


register_task("classification", Classification)
