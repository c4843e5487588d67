"""Fine-tuning with the original model as teacher (knowledge distillation, Hinton et al. 2015).

Why: a compressed network starts close to the original's function and has a few epochs to recover. The original's
softened outputs say, for every training image, how it ranks all the classes, not only which one is right; that
is more to learn from per epoch than the label, and it pulls the student back toward the function it came from.
Both methods of the benchmark (LWDC and pruning) can fine-tune this way, so a comparison stays like for like.

The teacher is a frozen copy in eval mode (BatchNorm statistics fixed, no dropout). Its forward pass is not free:
a distilled fine-tuning epoch of the benchmark's ResNet-20 at 0.57x MACs took about 1.4x a plain one here. The
term is ``weight * T**2 * KL(teacher_T || student_T)``, added to the task loss (the ``T**2`` keeps its
gradient's scale independent of the temperature). On the converged CIFAR-10 benchmark, weight 1 and temperature 4
gave LWDC's fine-tuning +0.45 to +0.69 points and pruning's +0.27 and +0.42 (docs/RESULTS.md).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .device import module_device
from .methods.base import TrainingMethod
from .tasks import Classification, Task

__all__ = ["Distillation", "distillation_loss", "check_distillable"]


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T**2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    t = float(temperature)
    return F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="batchmean",
                    log_target=True) * t * t


def check_distillable(task: Task) -> None:
    """Distillation matches class distributions: refuse, with the reason, a task whose outputs are not logits."""
    if not isinstance(task, Classification):
        raise ValueError(f"distill applies to classification tasks (it matches the teacher's class probabilities); "
                         f"task {getattr(task, 'name', type(task).__name__)!r} has no class logits: set distill=0")


class Distillation(TrainingMethod):
    """``inner`` training (plain by default; LWDC's search with ``distill_search``) plus the distillation term
    against ``teacher`` (copied, frozen, on the training device). Every other hook, and the checkpointed state,
    are the inner method's."""

    name = "distill"

    def __init__(self, teacher: nn.Module, weight: float, temperature: float = 4.0,
                 inner: TrainingMethod | None = None):
        if not weight > 0 or not temperature > 0:
            raise ValueError(f"distillation needs weight > 0 and temperature > 0, got {weight} and {temperature}")
        self.source, self.weight, self.temperature = teacher, float(weight), float(temperature)
        self.inner = inner if inner is not None else TrainingMethod()
        self.state_keys = self.inner.state_keys
        self.teacher: nn.Module | None = None

    def setup(self, model: nn.Module, total_steps: int) -> None:
        self.inner.setup(model, total_steps)
        self.teacher = copy.deepcopy(self.source).to(module_device(model)).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def batch_loss(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher(x)
        term = self.weight * distillation_loss(output, target, self.temperature)
        own = self.inner.batch_loss(x, output)
        return term if own is None else term + own

    def weight_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return self.inner.weight_parameters(model)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return self.inner.optimizers()

    def before_step(self, model: nn.Module, global_step: int, total_steps: int) -> None:
        self.inner.before_step(model, global_step, total_steps)

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        return self.inner.extra_loss(model)

    def before_eval(self, model: nn.Module, train_loader) -> None:
        self.inner.before_eval(model, train_loader)

    def epoch_fields(self, model: nn.Module) -> dict:
        return self.inner.epoch_fields(model)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)
