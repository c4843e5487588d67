"""Targets and budgets the search keeps by itself: ``macs=0.5x``, ``flash=200KiB``, several at once.

A budget names a cost model and a limit, relative to the original network (``0.5x``) or absolute in the cost's
unit (``200KiB`` of flash, ``2M`` MACs). During the search each budget adds ``mu_b * E[cost_b] / limit_b`` to
the loss, where ``mu_b`` is a Lagrange multiplier raised by dual ascent while the network the gates would derive
now is over its limit and lowered while it is under (``lwdc.methods.search``): the user never touches lambda.
The cost a budget acts on is, by default, the *derivable* network's (its argmax choices), with the gradient of
the expected cost under the distribution the gate samples from (softmax(alpha / noise)), straight through: the
pull lasts until the network that will be derived meets the limit, not until an average over flat gates does.
Sized by the expectation under softmax(alpha) instead (``signal="expected"``, the first control law), a 0.5x
MACs target on ResNet-20 left the argmax network at 0.94x after an 8-epoch search, with the expectation on the
target (bench/results/targets.json), and the repair after the search did the compressing.
A ratio target is aimed at from both sides (its multiplier may turn negative, so the search does not overshoot
into a smaller, less accurate network than asked); an absolute budget is a limit only (multiplier >= 0). After
the search, the derived network is checked: a network still over a budget is repaired greedily (one layer at a
time, to the cheaper operator its gate ranks highest per unit of cost saved), or refused with the figures; it is
never returned as if it fitted. A network that lands well under a ratio target (each layer's argmax can fall on
its cheap side while the expected cost sits on the target) is filled back the same way, toward the costlier
operators its gates rank highest, as long as every budget still holds: measured on spoken digits, the search's
argmax kept 0.33x of a DS-CNN's MACs for a 0.5x target and lost 60 points.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from .costs import CostTable

__all__ = ["Budget", "BudgetError", "BUDGET_SIGNALS", "parse_budget", "parse_budgets", "BudgetTerm", "repair", "fill", "budget_report"]

_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "kb": 1e3, "mb": 1e6, "kib": 1024, "mib": 1024 ** 2, "b": 1}
_VALUE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


#: What a budget's pull is sized by: the derivable (argmax) network, or the expectation under softmax(alpha).
BUDGET_SIGNALS = ("argmax", "expected")


class BudgetError(ValueError):
    """A budget that cannot be parsed, or that the derived network cannot meet."""


@dataclass(frozen=True)
class Budget:
    cost: str                   # a cost-model spec (macs, params, flash, latency:onnxruntime, ...)
    ratio: float | None = None  # limit as a fraction of the original network's cost ("0.5x")
    absolute: float | None = None   # limit in the cost's unit ("200KiB", "2M")

    def limit_ratio(self, table: CostTable) -> float:
        return self.ratio if self.ratio is not None else self.absolute / table.reference

    def __str__(self) -> str:
        return f"{self.cost}={self.ratio:g}x" if self.ratio is not None else f"{self.cost}={self.absolute:g}"


def parse_budget(text: str) -> Budget:
    """``COST=VALUE``: VALUE ``0.5x`` (relative) or a number with an optional unit (k, M, G, KiB, MiB, KB, MB)."""
    cost, sep, value = str(text).partition("=")
    cost, value = cost.strip(), value.strip()
    if not sep or not cost or not value:
        raise BudgetError(f"target {text!r}: write COST=VALUE, e.g. macs=0.5x, flash=200KiB, params=0.3x")
    if value.lower().endswith("x"):
        try:
            ratio = float(value[:-1])
        except ValueError:
            raise BudgetError(f"target {text!r}: {value!r} is not a ratio like 0.5x") from None
        if not 0 < ratio <= 1 or not math.isfinite(ratio):
            raise BudgetError(f"target {text!r}: a ratio must be in (0, 1] of the original, got {ratio:g}x")
        return Budget(cost, ratio=ratio)
    match = _VALUE.match(value)
    if not match or match.group(2).lower() not in _UNITS:
        raise BudgetError(f"target {text!r}: {value!r} is neither a ratio (0.5x) nor a number with a unit "
                          f"({', '.join(u for u in _UNITS if u)})")
    absolute = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not absolute > 0 or not math.isfinite(absolute):
        raise BudgetError(f"target {text!r}: the limit must be a positive number")
    return Budget(cost, absolute=absolute)


def parse_budgets(budgets) -> tuple[Budget, ...]:
    """A dict ``{cost: value}``, a list of ``"cost=value"`` strings, or Budgets; one budget per cost."""
    if not budgets:
        return ()
    items = [f"{k}={v}" for k, v in budgets.items()] if isinstance(budgets, dict) else list(budgets)
    parsed = tuple(b if isinstance(b, Budget) else parse_budget(b) for b in items)
    costs = [b.cost for b in parsed]
    if len(set(costs)) != len(costs):
        raise BudgetError(f"one budget per cost, got {', '.join(map(str, parsed))}")
    return parsed


@dataclass
class BudgetTerm:
    """One budget in the search: its table, its limit as a ratio of the original, and its multiplier."""

    budget: Budget
    table: CostTable
    limit: float
    tolerance: float = 0.0      # how far over its limit the derived network may end (ratio targets: 5%)
    multiplier: float = 0.0
    measured: float | None = None   # the derived network's real ratio, where the table only estimates it (RAM)
    active: float | None = None     # the limit the search aims at now (ramped toward ``limit``); None: ``limit``
    signal: str = "argmax"          # what the pull is sized by (BUDGET_SIGNALS, module docstring)
    temperature: float = 1.0        # the gate's sampling noise now: the argmax signal's gradient follows its draws

    def __post_init__(self) -> None:
        if self.signal not in BUDGET_SIGNALS:
            raise ValueError(f"budget signal {self.signal!r}: choose one of {', '.join(BUDGET_SIGNALS)}")

    def ramp(self, progress: float, length: float) -> None:
        """Aim the search at a limit lowered linearly from the original (1.0x, or the limit if higher) at the
        search's start to ``limit`` at ``length`` of it (0: at once). Aimed at at once, a far target made the
        quadratic pull outweigh the task on the first steps: on spoken digits every DS-CNN gate jumped to its
        cheapest operator in the first epoch and the supernet fell from 100% to 11% (bench notes, issue 24)."""
        start = max(1.0, self.limit)
        left = max(0.0, 1.0 - progress / length) if length > 0 else 0.0
        self.active = self.limit + (start - self.limit) * left

    def chosen(self, supernet) -> float:
        return self.table.chosen_ratio(supernet)

    def estimate(self, supernet) -> torch.Tensor:
        """The cost ratio the penalty acts on and the multiplier reads (``BUDGET_SIGNALS``). ``argmax``: the value
        of the network that would be derived now, with the gradient of E[cost] under softmax(alpha / temperature),
        the distribution the gate draws from (straight through). ``expected``: E[cost] under softmax(alpha)."""
        if self.signal == "expected":
            return self.table.expected_ratio(supernet)
        soft = self.table.expected_ratio(supernet, self.temperature)
        return soft - soft.detach() + self.chosen(supernet)

    def penalty(self, supernet, stiffness: float = 0.0) -> torch.Tensor:
        """``mu * r + stiffness / 2 * d**2`` with ``r`` the cost (``estimate``) over the limit and ``d = r - 1``
        (for a budget only when over it): the quadratic part pushes back in proportion to the miss at once, so the
        multiplier, which integrates the miss, need not wind up and overshoot (measured: bench/results/targets.json)."""
        r = self.estimate(supernet) / (self.active or self.limit)
        miss = r - 1.0 if self.equality else torch.relu(r - 1.0)
        return self.multiplier * r + 0.5 * stiffness * miss * miss

    @property
    def equality(self) -> bool:
        """A ratio target (``0.5x``) is aimed at from both sides (landing far under it costs accuracy the user
        did not ask to give up); an absolute budget (``200KiB``) is a limit only."""
        return self.budget.ratio is not None

    def update(self, supernet, estimate: float, rate: float) -> None:
        """Dual ascent on ``estimate`` (the cost the penalty reads) and the derivable network (argmax): a budget on
        the larger violation of the two, with the multiplier kept >= 0; a target on their mean, with a multiplier
        of either sign (negative: the cost term rewards keeping more)."""
        chosen, limit = self.chosen(supernet), self.active or self.limit
        if self.equality:
            self.multiplier += rate * (0.5 * (estimate + chosen) / limit - 1.0)
        else:
            self.multiplier = max(0.0, self.multiplier + rate * (max(estimate, chosen) / limit - 1.0))


def _best_switch(supernet, term: BudgetTerm, sign: float, accept, clamp_gap: bool):
    """The (layer, operator) whose switch moves ``term``'s cost by ``sign`` (-1: saves, +1: adds) the most per
    unit of the gate's preference given up, ``step / (log p(current) - log p(op) + 1)``, among those ``accept(layer,
    op, step)`` takes; None if there is none. ``clamp_gap``: a preference gap below 0 counts as 0."""
    best, best_score = None, -math.inf
    for name, layer in supernet.choice_layers().items():
        current = layer.chosen
        now = term.table.ratio_if(supernet, name, current)
        logp = torch.log_softmax(layer.alpha.detach(), 0)
        for i in range(len(layer.op_names)):
            step = sign * (term.table.ratio_if(supernet, name, i) - now)
            if not accept(layer, i, step):
                continue
            gap = float(logp[current] - logp[i])
            score = step / ((max(gap, 0.0) if clamp_gap else gap) + 1.0)
            if score > best_score:
                best, best_score = (name, i), score
    return best


def repair(supernet, terms: list[BudgetTerm]) -> dict[str, str]:
    """Force the fewest, most-probable switches to cheaper operators until every budget is met; returns the
    layers changed (name -> new op). Raises :class:`BudgetError` with the figures when no switch helps."""
    changed: dict[str, str] = {}
    layers = supernet.choice_layers()
    for _ in range(10 * max(1, len(layers))):
        over = [t for t in terms if t.chosen(supernet) > t.limit * (1 + t.tolerance)]
        if not over:
            return changed
        term = max(over, key=lambda t: t.chosen(supernet) / t.limit)
        best = _best_switch(supernet, term, -1.0, lambda layer, i, saved: saved > 1e-12, clamp_gap=False)
        if best is None:
            break
        name, i = best
        layers[name].fixed = i
        changed[name] = layers[name].op_names[i]
    figures = "; ".join(f"{t.budget}: derived {t.chosen(supernet):.3f}x against a limit of {t.limit:.3f}x"
                        for t in terms)
    raise BudgetError(f"no choice of operators meets the budget ({figures}); relax it or widen the operator set")


#: A fill switch must add at least this share of the target: smaller ones only override the gates' ranking
#: (measured: on P300 fill swapped two sep3x3 for conv3x3_g2, 0.315x -> 0.318x, and AUC fell 0.781 -> 0.777).
FILL_MIN_STEP = 0.02


def fill(supernet, terms: list[BudgetTerm], limits: bool = False, band: float = 0.05) -> dict[str, str]:
    """After :func:`repair`: while a ratio target is undershot by more than its tolerance, switch one layer to the
    costlier operator its gate ranks highest per unit of cost added (at least ``FILL_MIN_STEP`` of the target),
    keeping every budget within its limit (and tolerance); returns the layers changed (name -> new op).
    ``limits``: absolute budgets are filled too, up to ``band`` under their limit, never over it (measured: a
    flash limit of 75,000 B on ResNet-20 left 33,962 B used, at 67.8% against the baseline's 87.9%; issue 24)."""
    changed: dict[str, str] = {}
    layers = supernet.choice_layers()
    targets = [t for t in terms if t.equality or limits]

    def floor_of(t: BudgetTerm) -> float:
        return t.limit * (1 - (t.tolerance if t.equality else band))

    def fits() -> bool:
        return all(t.chosen(supernet) <= t.limit * (1 + t.tolerance) for t in terms)

    for _ in range(10 * max(1, len(layers))):
        under = [t for t in targets if t.chosen(supernet) < floor_of(t)]
        if not under:
            break
        best = None
        for term in sorted(under, key=lambda t: t.chosen(supernet) / t.limit):   # a term no switch can raise
            def fits_after(layer, i: int, added: float, term=term) -> bool:       # (ResNet's peak RAM) yields
                if added < FILL_MIN_STEP * term.limit:
                    return False
                saved, layer.fixed = layer.fixed, i
                ok = fits()
                layer.fixed = saved
                return ok

            best = _best_switch(supernet, term, 1.0, fits_after, clamp_gap=True)
            if best is not None:
                break
        if best is None:
            break
        name, i = best
        layers[name].fixed = i
        changed[name] = layers[name].op_names[i]
    return changed


def budget_report(terms: list[BudgetTerm], supernet, repaired: dict[str, str],
                  filled: dict[str, str] | None = None) -> list[dict]:
    """Per budget: the limit, what the derived network reaches, whether it binds (meets the limit within the
    tolerance from above, or its multiplier is still pushing), and the final multiplier."""
    rows = []
    for t in terms:
        achieved = t.measured if t.measured is not None else t.chosen(supernet)
        rows.append({"budget": str(t.budget), "cost": t.table.name, "unit": t.table.unit,
                     "limit_ratio": t.limit, "limit": t.limit * t.table.reference,
                     "achieved_ratio": achieved, "achieved": achieved * t.table.reference,
                     "met": achieved <= t.limit * (1 + t.tolerance), "tolerance": t.tolerance,
                     "binding": t.multiplier > 0 and achieved >= t.limit * (1 - max(t.tolerance, 0.05)),
                     "multiplier": t.multiplier, "signal": t.signal, "repaired_layers": sorted(repaired),
                     "filled_layers": sorted(filled or {}),
                     "measured_by": "memory planner" if t.measured is not None else "cost table"})
    return rows
