"""LWDC as a compression method: expand every layer into branches, warm them up, search the gates under
``task loss + lam x cost``, derive the chosen branches as a plain model (the pipeline fine-tunes it)."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict

import torch
from torch import nn

from ..binary import BINARY_CONVS
from ..budgets import BudgetError, BudgetTerm, budget_report, fill, parse_budgets, repair
from ..costs import build_cost_table, get_cost_model
from ..derivation import chain_cuts, derive, max_output_difference
from ..distill import Distillation
from ..ops import get_op
from ..space import Supernet, expand
from ..train import TrainConfig, batches_per_epoch
from ..warmup import warm_up_branches
from . import MethodResult, register_method
from .search import Search, SearchSettings

__all__ = ["LWDC", "layer_rows"]


def layer_rows(supernet: Supernet, choices: dict[str, str]) -> list[dict]:
    """One row per choice layer for the report: original and chosen operator, candidates, gate probabilities,
    params and MACs before and after (a layer cut for the width operator after it counts its kept channels)."""
    rows = []
    layers = supernet.choice_layers()
    cuts = chain_cuts(supernet, choices)
    cut = {supernet.chains[name].producer: len(keep) for name, keep in cuts.items() if keep is not None}
    reads_all = {name for name, keep in cuts.items() if keep is None}
    for name, layer in layers.items():
        original, chosen = get_op("original"), get_op("original" if name in reads_all else choices[name])
        spec = dataclasses.replace(layer.spec, out_ch=cut[name]) if name in cut else layer.spec
        rows.append({
            "name": name, "original": f"{layer.spec.kind}{'x'.join(map(str, layer.spec.kernel))}"
                                      f"{'_g%d' % layer.spec.groups if layer.spec.groups > 1 else ''} "
                                      f"{layer.spec.in_ch}->{layer.spec.out_ch} s{layer.spec.stride[0]}",
            "chosen": choices[name], "candidates": layer.op_names,
            "probabilities": [round(float(p), 4) for p in layer.probabilities().detach()],
            "params_before": original.params(layer.spec), "params_after": chosen.params(spec),
            "macs_before": original.macs(layer.spec), "macs_after": chosen.macs(spec),
        })
    return rows


@register_method("lwdc")
class LWDC:
    """Reads ``ops``, ``lam``, ``cost``, the gate and search settings of :class:`lwdc.api.CompressConfig`."""

    name = "lwdc"

    def expand(self, model: nn.Module, ctx) -> Supernet:
        cfg = ctx.config
        torch.manual_seed(cfg.seed)
        supernet = expand(model, ctx.example, cfg.ops, include_pooling=cfg.include_pooling, gate=cfg.gate,
                          seed=cfg.seed)
        supernet.init_gates(cfg.original_prob)
        for s in supernet.skipped:
            ctx.log(f"left as is: {s.name}: {s.reason}")
        return supernet

    def warm_up(self, supernet: Supernet, ctx) -> dict[str, float]:
        """The branch warm-up before the search (``warmup_epochs`` of local distillation; lwdc.warmup); also what a
        random architecture started from the uncompressed model gets instead of a search (bench.random_arch)."""
        cfg = ctx.config
        if cfg.warmup_epochs <= 0:
            return {}
        torch.manual_seed(cfg.seed)
        steps = batches_per_epoch(ctx.train_data, cfg.max_batches) or 100
        return warm_up_branches(supernet, ctx.train_data, max(1, round(steps * cfg.warmup_epochs)), log=ctx.log,
                                device=cfg.device)

    def budget_terms(self, supernet: Supernet, model: nn.Module, ctx) -> list[BudgetTerm]:
        """One priced term per budget; a budget no choice of operators can meet is refused at once."""
        terms = []
        for budget in parse_budgets(ctx.config.budgets):
            table = build_cost_table(get_cost_model(budget.cost), supernet, model, ctx.example)
            limit = budget.limit_ratio(table)
            floor = table.floor_ratio()
            if floor > limit:
                raise BudgetError(f"target {budget}: no choice of operators gets below {floor:.3f}x of the original "
                                  f"({floor * table.reference:,.0f} {table.unit}); the limit is {limit:.3f}x "
                                  f"({limit * table.reference:,.0f}). Relax it or widen the operator set (--ops)")
            ctx.log(f"target {budget}: {limit:.3f}x of the original's {table.reference:,.0f} {table.unit} "
                    f"(the lightest choice reaches {floor:.3f}x)")
            tolerance = ctx.config.budget_tolerance if budget.ratio is not None else 0.0
            terms.append(BudgetTerm(budget, table, limit, tolerance, signal=ctx.config.budget_signal))
        return terms

    def keep_budgets(self, supernet: Supernet, terms: list[BudgetTerm], ctx) -> tuple[dict, dict]:
        """After the search: repair (or refuse) a derivable network that misses a budget, fill one far under a
        ratio target (or, with ``fill_limits``, under a limit), and say which binds. Returns the layers repaired
        and filled."""
        if not terms:
            return {}, {}
        repaired = repair(supernet, terms)
        if repaired:
            ctx.log(f"budgets: {len(repaired)} layer(s) switched to cheaper operators after the search "
                    f"({', '.join(f'{n}->{op}' for n, op in repaired.items())})")
        filled = fill(supernet, terms, limits=ctx.config.fill_limits, band=ctx.config.budget_tolerance)
        if filled:
            ctx.log(f"budgets: {len(filled)} layer(s) switched to costlier operators to reach the target "
                    f"({', '.join(f'{n}->{op}' for n, op in filled.items())})")
        for t in terms:
            ctx.log(f"target {t.budget}: derived {t.chosen(supernet):.3f}x (limit {t.limit:.3f}x, multiplier "
                    f"{t.multiplier:.3g})")
        return repaired, filled

    def check_derived(self, supernet: Supernet, derived: nn.Module, terms: list[BudgetTerm], ctx) -> None:
        """Costs the search could only estimate (peak RAM) are measured on the derived network by the real
        planner; one over its budget is refused with the figures, never returned as if it fitted."""
        for t in terms:
            if not hasattr(t.table, "measure"):
                continue
            estimate = t.chosen(supernet)
            t.measured = t.table.measure(derived)
            ctx.log(f"target {t.budget}: the derived network's planned peak is {t.measured * t.table.reference:,.0f} "
                    f"{t.table.unit} ({t.measured:.3f}x of the original)")
            if t.measured > t.limit * (1 + t.tolerance):
                raise BudgetError(
                    f"target {t.budget}: the derived network needs {t.measured * t.table.reference:,.0f} "
                    f"{t.table.unit} by the memory planner, over the limit of {t.limit * t.table.reference:,.0f} "
                    f"(the search estimated {estimate:.3f}x); relax the "
                    f"budget or widen the operator set (--ops)")

    def apply(self, model: nn.Module, ctx) -> MethodResult:
        cfg = ctx.config
        supernet = self.expand(model, ctx)
        objective = build_cost_table(get_cost_model(cfg.cost), supernet, model, ctx.example)
        report_tables = tuple(build_cost_table(get_cost_model(c), supernet, model, ctx.example)
                              for c in ("params", "macs") if c != objective.name)
        ctx.log(f"search space: {len(supernet.choice_layers())} layers, "
                f"{sum(len(l.branches) for l in supernet.choice_layers().values())} branches; cost {objective.name}")
        budgets = self.budget_terms(supernet, model, ctx)
        if cfg.optimizer == "sgd" and any(isinstance(b, BINARY_CONVS) for layer in supernet.choice_layers().values()
                                          for br in layer.branches for b in br.modules()):
            ctx.log("note: binary operators train 8-10 points worse under SGD than AdamW in the same epochs "
                    "(docs/binary.md); consider optimizer='adamw' (--optimizer adamw) with lr about 1e-3")

        t0 = time.perf_counter()
        warmup = {} if ctx.resuming("search") else self.warm_up(supernet, ctx)  # a search checkpoint holds them
        warmup_time = time.perf_counter() - t0
        t0 = time.perf_counter()
        search_cfg = TrainConfig(epochs=cfg.search_epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 optimizer=cfg.optimizer, max_batches=cfg.max_batches, checkpoint_every=cfg.checkpoint_every,
                                 progress=cfg.progress, desc="search", device=cfg.device)
        search = Search(SearchSettings(lam=cfg.effective_lam, arch_lr=cfg.arch_lr, gate_travel=cfg.gate_travel,
                                       gate_optimizer=cfg.gate_optimizer, tau_start=cfg.tau_start,
                                       tau_end=cfg.tau_end, noise_end=cfg.noise_end, budget_rate=cfg.budget_rate,
                                       budget_stiffness=cfg.budget_stiffness, budget_ramp=cfg.budget_ramp),
                        objective, report_tables, budgets)
        if cfg.distill_search:      # in-place distillation: each sampled path is pulled toward the original
            search = Distillation(model, cfg.distill, cfg.distill_temperature, inner=search)
        search_log = ctx.train("search", supernet, search_cfg, ctx.fingerprint("search"), method=search)
        search_time = time.perf_counter() - t0

        repaired, filled = self.keep_budgets(supernet, budgets, ctx)
        choices = supernet.choices()
        if all(op == "original" for op in choices.values()):
            ctx.log("warning: the search kept every layer's original operator, so nothing was compressed; give a "
                    "target (--target macs=0.5x), raise lambda (--lam), search longer (--search-epochs), or, for a "
                    "short search, let the gates move farther (--gate-travel 10)")
        derived = derive(supernet)
        self.check_derived(supernet, derived, budgets, ctx)
        return MethodResult(
            model=derived, choices=choices, supernet=supernet,
            report={"lambda": cfg.effective_lam, "cost": objective.name,
                    "budgets": budget_report(budgets, supernet, repaired, filled),
                    "expected_cost_ratio": {t.name: t.chosen_ratio(supernet) for t in (objective, *report_tables)},
                    "layers": layer_rows(supernet, choices), "skipped": [asdict(s) for s in supernet.skipped],
                    "derive_max_abs_diff": max_output_difference(supernet, derived, ctx.example),
                    "warmup_error": warmup},
            history={"search": search_log}, wall_time_s={"warmup": warmup_time, "search": search_time})
