"""LWDC's search as a training method: gates trained beside the weights under ``lam x expected cost``.

Search is plain training plus four things, each a hook of :class:`lwdc.methods.base.TrainingMethod`: a second
optimiser for the gates' alpha vectors, an annealed gate temperature and sampling noise, the resource term
``lam * expected cost ratio`` added to the task loss, and BatchNorm re-estimation before every evaluation.
Weights and gates are updated together on the same batch (single-level, "in one go"), as the LWDC paper trains
them. Gates: Adam (betas 0.5, 0.999, no weight decay) at ``arch_lr``, raised to ``gate_travel / search steps``
where the search is short: Adam moves a gate's logit by at most about its learning rate per step, so 300 steps at
0.01 cannot carry a gate from P(original) = 0.9 past its alternatives (a logit gap of ln(0.9 (N-1) / 0.1) = 4.4 for
ten operators); measured on P300 (288 steps): 0.01 left every gate where it started and the budget repair did the
compressing, 0.03 moved them to the target. Temperature: exponential decay from ``tau_start`` to
``tau_end`` over the search, and of the noise scale from 1 to ``noise_end`` (see lwdc.gate, docs/DESIGN.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from ..device import module_device, to_device
from ..gate import anneal_temperature
from ..modes import module_mode
from ..space import Supernet
from .base import TrainingMethod

__all__ = ["SearchSettings", "Search", "recalibrate_batchnorm", "MAX_RAISED_LR", "GATE_OPTIMIZERS", "SharedScaleAdam"]

MAX_RAISED_LR = 0.1     # measured on P300 (288 steps): 0.1 already overshot a 0.5x target to 0.30x
GATE_OPTIMIZERS = ("shared-adam", "adam")


class SharedScaleAdam(torch.optim.Optimizer):
    """Adam whose second moment is one scalar shared by every gate logit, instead of one per logit.

    Plain Adam divides each logit's gradient by its own RMS, so every gate whose cost gradient points one way
    moves at about ``lr`` per step, whatever the cost it saves: on a network whose layers cost alike (ResNet-20's
    convolutions) that is harmless; on a depthwise-separable one it is not (a DS-CNN's depthwise layers hold 2.6%
    of the MACs each, its pointwise ones 19%), and the search dropped every depthwise layer as fast as every
    pointwise one. A shared scale keeps the step invariant to the loss's scale, as Adam does, and keeps the
    gradients' relative sizes across layers, so a logit moves in proportion to what it changes.
    """

    def __init__(self, params, lr: float = 0.01, betas: tuple[float, float] = (0.5, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self.state["shared"] = {"step": 0, "v": 0.0}

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["state"] = {**state["state"], "shared": dict(self.state["shared"])}    # a copy, not the live dict
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.state["shared"] = dict(self.state.get("shared") or {"step": 0, "v": 0.0})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return loss
        shared = self.state["shared"]
        beta1, beta2 = self.param_groups[0]["betas"]
        shared["step"] += 1
        t = shared["step"]
        mean_square = float(sum(float(p.grad.pow(2).sum()) for p in params) / sum(p.numel() for p in params))
        shared["v"] = beta2 * shared["v"] + (1 - beta2) * mean_square
        scale = (shared["v"] / (1 - beta2 ** t)) ** 0.5
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("m", torch.zeros_like(p))
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                p.add_(m / (1 - beta1 ** t), alpha=-group["lr"] / (scale + group["eps"]))
        return loss


@dataclass
class SearchSettings:
    lam: float = 0.0
    arch_lr: float = 0.01
    gate_travel: float | None = None    # the gates' Adam rate is at least gate_travel / steps (None: arch_lr only)
    gate_optimizer: str = "adam"        # "shared-adam": one second moment for all gates (SharedScaleAdam)
    tau_start: float = 5.0
    tau_end: float = 0.5
    noise_end: float = 0.25             # Gumbel noise scale at the end of the search (from 1 at its start)
    bn_batches: int = 20                # BatchNorm re-estimation before the supernet is evaluated
    budget_rate: float = 2.0            # dual ascent: a budget missed by 1x over the whole search adds this to mu
    budget_stiffness: float = 20.0      # quadratic pull toward a target (augmented Lagrangian), see lwdc.budgets
    budget_ramp: float = 0.5            # fraction of the search over which each limit falls from 1.0x to its value

    def validate(self) -> None:
        if not self.lam >= 0 or self.lam == float("inf"):
            raise ValueError(f"lambda must be a finite number >= 0 (it weighs the resource cost), got {self.lam}")
        if self.gate_optimizer not in GATE_OPTIMIZERS:
            raise ValueError(f"gate_optimizer must be one of {', '.join(GATE_OPTIMIZERS)}, got {self.gate_optimizer!r}")
        if self.gate_travel is not None and not 0 < self.gate_travel < float("inf"):
            raise ValueError(f"gate_travel must be a positive number (logit units over the search), got "
                             f"{self.gate_travel}")

    def gate_lr(self, steps: int) -> float:
        """The gates' learning rate for a search of ``steps`` steps: raised for short searches, to at most
        ``MAX_RAISED_LR`` (a few dozen steps are a quick look, where fast gates would follow batch noise)."""
        if self.gate_travel is None:
            return self.arch_lr
        return max(self.arch_lr, min(self.gate_travel / max(steps, 1), MAX_RAISED_LR))


class Search(TrainingMethod):
    """Train a :class:`Supernet`'s weights and gates together; ``cost_table`` prices the search (needed when
    ``lam > 0``), ``report_tables`` only add their argmax ratio to each epoch's log."""

    name = "search"

    def __init__(self, settings: SearchSettings, cost_table=None, report_tables: tuple = (), budgets=()):
        settings.validate()
        if settings.lam > 0 and cost_table is None:
            raise ValueError("a search with lam > 0 needs a cost_table")
        self.settings, self.cost_table, self.budgets = settings, cost_table, list(budgets)
        tables = ((cost_table,) if cost_table is not None else ()) + tuple(report_tables)
        self.tables = tables + tuple(b.table for b in self.budgets if b.table.name not in {t.name for t in tables})
        self.total_steps = 1
        self.arch_optimizer: torch.optim.Optimizer | None = None
        self.supernet: Supernet | None = None

    def setup(self, model: nn.Module, total_steps: int) -> None:
        if not isinstance(model, Supernet):
            raise TypeError(f"the search trains a Supernet (lwdc.expand), got {type(model).__name__}")
        self.supernet, self.total_steps = model, max(total_steps, 1)
        kind = SharedScaleAdam if self.settings.gate_optimizer == "shared-adam" else torch.optim.Adam
        self.arch_optimizer = kind(model.arch_parameters(), lr=self.settings.gate_lr(self.total_steps),
                                   betas=(0.5, 0.999))

    def weight_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return model.weight_parameters()

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.arch_optimizer]

    def before_step(self, model: nn.Module, global_step: int, total_steps: int) -> None:
        s = self.settings
        model.gate.tau = anneal_temperature(global_step / total_steps, s.tau_start, s.tau_end)
        model.gate.noise = anneal_temperature(global_step / total_steps, 1.0, s.noise_end)
        with torch.no_grad():
            for term in self.budgets:
                term.temperature = model.gate.noise
                term.ramp(global_step / total_steps, s.budget_ramp)
                term.update(model, float(term.estimate(model)), s.budget_rate / self.total_steps)

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        terms = [term.penalty(model, self.settings.budget_stiffness) for term in self.budgets]
        if self.settings.lam > 0:
            terms.insert(0, self.settings.lam * self.cost_table.expected_ratio(model))
        return sum(terms[1:], terms[0]) if terms else None

    def before_eval(self, model: nn.Module, train_loader: Iterable) -> None:
        recalibrate_batchnorm(model, train_loader, self.settings.bn_batches)

    def epoch_fields(self, model: nn.Module) -> dict:
        return {"cost_ratios": {t.name: t.chosen_ratio(model) for t in self.tables}, "tau": model.gate.tau,
                "extra": {"arch_lr": round(self.arch_optimizer.param_groups[0]["lr"], 5),
                          **{f"mu_{b.table.name}": round(b.multiplier, 4) for b in self.budgets}},
                "probabilities": {n: [round(float(p), 5) for p in layer.probabilities().detach()]
                                  for n, layer in model.choice_layers().items()}}

    def state_dict(self) -> dict:
        state = {"arch_optimizer": self.arch_optimizer.state_dict(), "gate": self.supernet.gate.state_dict()}
        if self.budgets:
            state["budget_multipliers"] = [b.multiplier for b in self.budgets]
        return state

    def load_state_dict(self, state: dict) -> None:
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.supernet.gate.load_state_dict(state["gate"])
        for b, mu in zip(self.budgets, state.get("budget_multipliers") or []):
            b.multiplier = float(mu)


def _first_batches(loader: Iterable, n: int):
    for i, batch in enumerate(loader):
        if i >= n:
            return
        yield batch


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: Iterable, batches: int) -> None:
    """Re-estimate BatchNorm running statistics for the network as it is now.

    In a supernet the BatchNorm after a choice layer has averaged statistics over whichever branches were
    sampled, so eval-mode numbers would describe no real network. Before the supernet is evaluated (and so
    before it is derived) the statistics are recomputed as a plain average over ``batches`` training batches
    of its current argmax network.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or batches <= 0:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                      # cumulative average
    layers = list(model.choice_layers().values()) if isinstance(model, Supernet) else []
    forced = [layer.fixed for layer in layers]
    for layer in layers:
        layer.fixed = layer.chosen
    device = module_device(model)
    try:
        with module_mode(model, True):
            for x, _ in _first_batches(loader, batches):
                model(to_device(x, device))
    finally:
        for layer, fixed in zip(layers, forced):
            layer.fixed = fixed
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
