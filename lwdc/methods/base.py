"""What a method may add to the plain training loop, and the method that adds nothing.

``lwdc.train.fit`` is a loop over batches that knows nothing of supernets, gates or costs. A method plugs into
it through the hooks of :class:`TrainingMethod` (the pattern of Lightning's callbacks): which parameters the
weight optimiser gets, extra optimisers stepped beside it, a hook before each step (schedules), an extra loss
term (and one that sees the batch, e.g. distillation), a hook before evaluation, fields for the epoch's log, and its own state in the checkpoint. The base class
is plain training: every hook does nothing.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

__all__ = ["TrainingMethod", "PlainTraining"]


class TrainingMethod:
    """Plain training; subclasses override the hooks they need. One instance serves one ``fit`` call."""

    name = "train"
    #: checkpoint keys this method writes (kept at the top level of a checkpoint for older run folders)
    state_keys: tuple[str, ...] = ("arch_optimizer", "gate")

    def setup(self, model: nn.Module, total_steps: int) -> None:
        """Called once before training, on the training device; create optimisers here."""

    def weight_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters the loop's SGD optimiser trains."""
        return list(model.parameters())

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Extra optimisers, zeroed and stepped right after the weight optimiser."""
        return []

    def before_step(self, model: nn.Module, global_step: int, total_steps: int) -> None:
        """Before each training step's forward pass (annealing schedules)."""

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        """A term added to the task loss (e.g. lambda x resource cost), or None."""
        return None

    def batch_loss(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor | None:
        """A term that needs the batch's input and the model's output (e.g. a teacher's), or None."""
        return None

    def before_eval(self, model: nn.Module, train_loader: Iterable) -> None:
        """After each epoch's training, before the model is evaluated (e.g. BatchNorm re-estimation)."""

    def epoch_fields(self, model: nn.Module) -> dict:
        """Extra fields of the epoch's :class:`lwdc.train.EpochLog` (``cost_ratios``, ``tau``, ``probabilities``)."""
        return {}

    def state_dict(self) -> dict:
        return {key: None for key in self.state_keys}

    def load_state_dict(self, state: dict) -> None:
        """Restore from a checkpoint (the whole checkpoint dict; take your own keys)."""


PlainTraining = TrainingMethod
