"""Tasks: what the training loop optimises and measures, kept apart so the loop stays task-agnostic.

A task turns a batch's output and target into a loss, and into *sums* (not means) of statistics, so that
batches, epochs and distributed ranks combine by plain addition before ``summarize`` divides.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F

from .registry import Registry

__all__ = ["Task", "Classification", "balanced_class_weights", "register_task", "get_task", "list_tasks",
           "METRIC_SETS", "higher_is_better", "metric_drop"]

METRIC_SETS = ("basic", "clinical")


class Task(Protocol):
    name: str
    primary: str            # the headline metric ("accuracy")
    # Optional: ``higher_is_better`` (default True) says which way ``primary`` improves; a task whose headline is
    # an error (landmarks' NME) sets it False, and every comparison of two values goes through ``metric_drop``.

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def batch_stats(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]: ...

    def summarize(self, stats: dict[str, float]) -> dict[str, float]: ...

    # Optional: a task whose metrics need every output of the set at once (AUC, thresholds) sets
    # ``collects_outputs`` and gets them through ``output_metrics(outputs, targets)`` (``lwdc.train.evaluate``).


@dataclass
class Classification:
    """Cross-entropy (optionally label-smoothed and class-weighted); reports mean loss and top-1 accuracy in
    percent, and with ``metrics="clinical"`` also ROC AUC, balanced accuracy, sensitivity, specificity, precision,
    F1, Youden's J and the confusion matrix (``lwdc.metrics.clinical_metrics``), which need the whole set's
    outputs. ``class_weights`` (one per class, e.g. ``balanced_class_weights``) counter a class imbalance."""

    label_smoothing: float = 0.0
    metrics: str = "basic"
    class_weights: Sequence[float] | None = None
    name: str = "classification"
    primary: str = "accuracy"

    def __post_init__(self) -> None:
        if self.metrics not in METRIC_SETS:
            raise ValueError(f"metrics must be one of {', '.join(METRIC_SETS)}; got {self.metrics!r}")
        if self.class_weights is not None:
            weights = [float(w) for w in self.class_weights]
            if not weights or any(not w > 0 or w != w or w == float("inf") for w in weights):
                raise ValueError(f"class_weights must be positive finite numbers, one per class; got {weights}")
            self.class_weights = tuple(weights)

    @property
    def collects_outputs(self) -> bool:
        return self.metrics == "clinical"

    def _weight(self, output: torch.Tensor) -> torch.Tensor | None:
        if self.class_weights is None:
            return None
        if len(self.class_weights) != output.shape[1]:
            raise ValueError(f"class_weights has {len(self.class_weights)} values for a model with "
                             f"{output.shape[1]} outputs; give one weight per class")
        return torch.tensor(self.class_weights, dtype=output.dtype, device=output.device)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, weight=self._weight(output), label_smoothing=self.label_smoothing)

    def output_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict:
        """The clinical metrics of a whole set's outputs (logits) and labels."""
        from .metrics import clinical_metrics
        return clinical_metrics(outputs, targets)

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


def higher_is_better(task) -> bool:
    """Whether ``task.primary`` improves upward (accuracy) or downward (an error); True unless the task says."""
    return bool(getattr(task, "higher_is_better", True))


def metric_drop(task, reference: float, value: float) -> float:
    """How much worse ``value`` is than ``reference`` in ``task.primary`` (positive: worse), whichever way the
    metric points: a budget of "at most 1 point lost" reads the same for accuracy and for an error."""
    return reference - value if higher_is_better(task) else value - reference


def balanced_class_weights(labels, num_classes: int) -> torch.Tensor:
    """Inverse class frequencies, scaled to mean 1 (so the loss keeps its scale): a 1:5 set weighs its rare class
    five times the common one."""
    counts = torch.bincount(torch.as_tensor(labels).long().reshape(-1), minlength=num_classes).double()
    if len(counts) != num_classes:
        raise ValueError(f"labels reach class {len(counts) - 1}, beyond the {num_classes} classes")
    missing = [i for i, c in enumerate(counts.tolist()) if c == 0]
    if missing:
        raise ValueError(f"class(es) {missing} have no training samples, so they cannot be weighted by frequency; "
                         "give explicit class weights or fix the split")
    weights = 1.0 / counts
    return (weights * num_classes / weights.sum()).float()


_TASKS = Registry("task")


def register_task(name: str, cls: type | None = None):
    """Register a task class under ``name`` (the data set's default task, or ``--task NAME``); a decorator too."""
    return _TASKS.register(name, cls)


def list_tasks() -> list[str]:
    return sorted(_TASKS.entries)


def get_task(name: str, bundle=None, **options) -> Task:
    """A new task instance of the registered ``name``; with ``bundle`` (a ``DataBundle``), a task class that has
    ``for_data(bundle, **options)`` takes what it needs from the data (landmarks: input size, point names)."""
    cls = _TASKS.get(name)
    if bundle is not None and hasattr(cls, "for_data"):
        return cls.for_data(bundle, **options)
    return cls(**options)


register_task("classification", Classification)

from .landmarks.task import Landmarks  # noqa: E402  (imports only torch and its losses: no cycle)

register_task("landmarks", Landmarks)
