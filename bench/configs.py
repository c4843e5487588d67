"""Schedules and experiments of the CIFAR benchmark (``python -m bench.cifar``, ``python -m bench.queue``).

Every method starts from one cached baseline per (model, schedule, seed) and then gets the same number of
post-baseline passes over the training data, so differences come from the method, not from the budget:

* ``baseline``          the trained original model;
* ``baseline-extended`` the baseline trained ``post_epochs`` more (the "same-schedule baseline" for accuracy);
* ``lwdc``              branch warm-up + search + derive + fine-tune (warmup + search + finetune epochs);
* ``prune-l1`` / ``prune-l1-global``  Torch-Pruning one-shot L1 filter pruning at the MACs of an LWDC point,
  then ``post_epochs`` of fine-tuning;
* ``prune-group-sparse``  Torch-Pruning's strongest CIFAR configuration (DepGraph: group-norm importance after
  sparse training, global ranking): ``sparse_epochs`` of group-regularised training from the baseline, pruning to
  the MACs of an LWDC point, then ``post_epochs - sparse_epochs`` of fine-tuning, so its budget is the same.

Seeds: every run of seed ``s`` starts from the baseline of ``--baseline-seed`` (0 unless given), so a second seed of
a compressed point costs no second baseline; the seed changes the data order, augmentation, initial draws of the
new layers and LWDC's gate sampling.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["Schedule", "SCHEDULES", "EXPERIMENTS", "ABLATIONS", "VARIANTS", "METHODS", "PRUNE_METHODS", "PLANS",
           "baseline_schedule", "lambdas", "operator_sets", "plan_of"]

PRUNE_METHODS = ("prune-l1", "prune-l1-global", "prune-group-sparse")
METHODS = ("baseline", "baseline-extended", "lwdc") + PRUNE_METHODS + ("random",)   # random: issue 26
# Parts of the search an ablation switches off (issue 26): the CompressConfig settings each one overrides.
ABLATIONS = {"no-warmup": {"warmup_epochs": 0.0}, "constant-noise": {"noise_end": 1.0},
             "uniform-gates": {"original_prob": None}}
# Settings an LWDC point may change beyond its lambda/cost/budgets (issue 24), each labelled -NAME in the run name.
VARIANTS = {"fill-limits": {"fill_limits": True}, "ramp0.5": {"budget_ramp": 0.5},
            "distill-search": {"distill_search": True}}     # with --distill: the search is distilled too


@dataclass(frozen=True)
class Schedule:
    baseline_epochs: int
    warmup_epochs: float       # LWDC branch warm-up (local distillation), in passes over the training data
    search_epochs: int
    finetune_epochs: int
    batch_size: int = 128
    lr: float = 0.1            # baseline; SGD Nesterov, weight decay 5e-4, cosine decay per step (lwdc.train)
    search_lr: float = 0.05    # LWDC search weights; also the start of the baselines' post-baseline training
    finetune_lr: float = 0.02  # LWDC fine-tuning
    baseline_from: str | None = None  # reuse this schedule's cached baseline (same baseline settings required)
    search_from: str | None = None    # LWDC: start from this schedule's finished search of the same point, if any
    lr_warmup: float = 0.0            # baseline: epochs of linear learning-rate warm-up before the cosine decay
    label_smoothing: float = 0.0      # baseline: label smoothing of its cross-entropy
    channels_last: bool = False       # NHWC layout in training (ResNet-20 step 274 vs 369-442 ms on one thread here)
    # prune-group-sparse: the share of post_epochs spent in sparse training (the rest fine-tunes the pruned model;
    # Torch-Pruning's CIFAR benchmark gives both phases the same epochs, 100 + 100) and the regulariser's
    # coefficient (its ResNet-56 CIFAR-10 setting, `--reg 5e-4`)
    sparse_share: float = 0.5
    sparse_reg: float = 5e-4

    @property
    def post_epochs(self) -> int:
        """Post-baseline epochs of baseline-extended and of pruning + fine-tuning: LWDC's warm-up + search +
        fine-tune passes, rounded up (a fractional warm-up gives the comparison methods slightly more)."""
        return math.ceil(self.warmup_epochs + self.search_epochs + self.finetune_epochs)

    @property
    def sparse_epochs(self) -> int:
        """prune-group-sparse's sparse-training epochs: at least one, and at least one left for fine-tuning."""
        return min(max(round(self.post_epochs * self.sparse_share), 1), self.post_epochs - 1)

    def as_dict(self) -> dict:
        return {**asdict(self), "post_epochs": self.post_epochs, "sparse_epochs": self.sparse_epochs}


SCHEDULES: dict[str, Schedule] = {
    # Fits the shared 2-core development CPU: a ResNet-20 epoch on full CIFAR-10 takes 2-5 min on one thread
    # there, depending on the load; LWDC gets 0.25 + 1 + 2 passes, the other methods 4 post-baseline epochs.
    "cpu": Schedule(baseline_epochs=6, warmup_epochs=0.25, search_epochs=1, finetune_epochs=2),
    # 1.5x the post-baseline epochs of `cpu` (6, not 4) on the same cached baseline: LWDC gets 0.5 + 2 + 3 passes, and all
    # post-baseline training (LWDC fine-tuning included) starts from lr 0.05. With one search epoch the gates
    # decide before the new branches are trained (the 0.25-epoch warm-up leaves a normalised error of 0.2-0.6),
    # and a 2-epoch fine-tune from lr 0.02 did not recover the derived network (56.7% -> 75.0% at lambda 3).
    "cpu-long": Schedule(baseline_epochs=6, warmup_epochs=0.5, search_epochs=2, finetune_epochs=3,
                         finetune_lr=0.05, baseline_from="cpu"),
    # Twice `cpu-long`'s post-baseline budget, all of the extra going to fine-tuning: LWDC gets 0.5 + 2 + 9
    # passes, the other methods 12. Its searches are exactly `cpu-long`'s (same warm-up, search epochs, lr and
    # baseline), so an LWDC point starts from that schedule's finished search when it exists (the search
    # checkpoint's fingerprint is checked) and only fine-tunes; its search time is still counted.
    "cpu-xl": Schedule(baseline_epochs=6, warmup_epochs=0.5, search_epochs=2, finetune_epochs=9,
                       finetune_lr=0.05, baseline_from="cpu", search_from="cpu-long"),
    # Twice `cpu-xl`'s post-baseline budget, again all of it to fine-tuning: LWDC gets 0.5 + 2 + 21 passes, the
    # other methods 24. The gap between the compressed models and baseline-extended shrank from about 2.9 points
    # (6 post-baseline epochs) to 1.6 (12) at 0.47x MACs; this schedule measured whether it keeps shrinking (barely:
    # 1.5 at 0.46x, docs/RESULTS.md). A run takes 1-1.5 h of one core on the AVX-512 machine here, 1.5-2.5 h on an
    # AVX2 one, so its checkpoints travel in bench/state/ between sessions (bench.carry).
    # A search repeated on another CPU is not the same search: lambda 1 ended at 0.473x MACs on the AVX-512
    # machine of the `cpu-long` runs and at 0.516x on an AVX2 one (float rounding moves the argmax), hence
    # lambda 1.25 here for a point safely below 0.5x, and lambda 1.1 for one between it and 0.5x (searched on the
    # AVX-512 machine).
    "cpu-xxl": Schedule(baseline_epochs=6, warmup_epochs=0.5, search_epochs=2, finetune_epochs=21,
                        finetune_lr=0.05, baseline_from="cpu", search_from="cpu-long"),
    # A converged baseline on the CPU (issue 21): 40 epochs, 2 of linear warm-up to lr 0.1 then cosine to 0, label
    # smoothing 0.1, NHWC layout (ResNet-20 training steps 1.3-1.6x faster than NCHW on one AVX-512 thread here).
    # Measured: 87.93% after the 40 epochs (88.0% over the last three; 1.9-4.5 min an epoch, depending on the load),
    # short of ResNet-20's published 91.25%; baseline-extended's gain over the 12 post-baseline epochs says whether
    # it has converged. Post-baseline training starts from a small rate (0.02), as fits a trained model.
    "cpu-converged": Schedule(baseline_epochs=40, warmup_epochs=1, search_epochs=3, finetune_epochs=8,
                              search_lr=0.02, finetune_lr=0.02, lr_warmup=2, label_smoothing=0.1,
                              channels_last=True),
    # Paper-scale: 200 epochs of baseline training, as is usual for CIFAR ResNets. Meant for a GPU: training
    # runs on CUDA when one is visible (TrainConfig/CompressConfig device "auto"), else on the CPU (days here).
    "full": Schedule(baseline_epochs=200, warmup_epochs=1, search_epochs=50, finetune_epochs=100),
    # A few batches per stage: keeps the harness working (tests/test_bench_smoke.py).
    "smoke": Schedule(baseline_epochs=1, warmup_epochs=1, search_epochs=1, finetune_epochs=1, batch_size=32),
    # `smoke` with a longer fine-tune on its baseline and searches (keeps baseline_from/search_from working).
    "smoke-long": Schedule(baseline_epochs=1, warmup_epochs=1, search_epochs=1, finetune_epochs=2, batch_size=32,
                           baseline_from="smoke", search_from="smoke"),
}

# model -> the LWDC lambdas and operator sets to run; each LWDC point gets a pruning run per PRUNE_METHODS at
# its MACs. The queue runs the lambdas in the order listed, the first with its comparisons before the others.
# How far the gates move grows with lambda x search steps, so each schedule has its own lambdas: with `cpu`'s
# single search epoch (390 steps) lambda 1 left every ResNet-20 layer on its original operator (P(original)
# 0.52-0.95 at the end) and lambda 3 reached 0.40x MACs; with `cpu-long`'s two, lambda 2 reached 0.37x.
EXPERIMENTS: dict[str, dict] = {
    "resnet20": {"lams": (1.6, 3.0, 1.0), "lams_by_schedule": {"cpu-long": (1.5, 2.0, 1.0),
                                                                     "cpu-xl": (1.5, 2.0, 1.0),
                                                                     "cpu-xxl": (1.25, 1.0, 1.1, 1.5),
                                                                     "cpu-converged": (0.6, 1.6, 1.0)},
                 # the converged benchmark (issue 21) sweeps the default operators, the latency cost on its own
                 # lambdas: 1 lands beside MACs-cost 0.6, 3.2 far below it; 0.4 and 2 bring the latency front to the
                 # MACs front's ends (0.44 and 0.23 ms), where a verdict needs both
                 "cost_lams_by_schedule": {"cpu-converged": {"latency:onnxruntime": (1.0, 3.2, 0.4, 2.0)}},
                 "ops": ("default", "paper"), "ops_by_schedule": {"cpu-converged": ("default",)}},
    "resnet56": {"lams": (1.6, 3.0, 1.0), "ops": ("default", "paper")},
    "vgg16": {"lams": (1.6, 3.0, 1.0), "ops": ("default", "paper")},
}


# What the queue runs at each LWDC point, by schedule: ``prune`` right after the point, ``prune_late`` after all
# points, and the search costs swept (each cost over its own lambdas, the latency sweep for the first operator
# set only). Schedules that ran before a method existed keep the plan they ran, so their reports do not list the
# newer methods as missing.
DEFAULT_PLAN = {"prune": ("prune-l1-global",), "prune_late": ("prune-l1",), "costs": ("macs",)}
FULL_PLAN = {"prune": ("prune-group-sparse", "prune-l1-global"), "prune_late": ("prune-l1",),
             "costs": ("macs", "latency:onnxruntime")}
# the converged benchmark compares with the strongest pruning only: per-layer L1 trailed global L1 by 1.9 points on
# the 6-epoch baseline's schedules and ran once here as a check
CONVERGED_PLAN = {**FULL_PLAN, "prune_late": ()}
PLANS: dict[str, dict] = {"cpu-converged": CONVERGED_PLAN, "full": FULL_PLAN, "smoke": FULL_PLAN}


def plan_of(schedule: str) -> dict:
    return PLANS.get(schedule, DEFAULT_PLAN)


def baseline_schedule(name: str) -> str:
    """The schedule whose cached baseline ``name`` starts from: itself, or its ``baseline_from`` when that one
    trains the baseline identically (a different one would leave two schedules fighting over one checkpoint)."""
    schedule = SCHEDULES[name]
    if not schedule.baseline_from:
        return name
    shared = SCHEDULES[schedule.baseline_from]
    if (shared.baseline_epochs, shared.lr, shared.batch_size) != (schedule.baseline_epochs, schedule.lr,
                                                                   schedule.batch_size):
        raise ValueError(f"schedule {name} shares the baseline of {schedule.baseline_from} but trains it differently; "
                         "fix bench/configs.py")
    return schedule.baseline_from


def lambdas(model: str, schedule: str, cost: str = "macs") -> tuple[float, ...]:
    """The LWDC lambdas of ``model`` under ``schedule`` for the search ``cost``, first one first. A cost without
    lambdas of its own (``lams_by_cost``) gets twice the MACs ones: the latency term pushes about half as hard at
    equal lambda (docs/RESULTS.md, issue 5: the timed convolutions are about half of the network's latency)."""
    exp = EXPERIMENTS[model]
    macs = tuple(exp.get("lams_by_schedule", {}).get(schedule, exp["lams"]))
    if cost == "macs":
        return macs
    own = exp.get("cost_lams_by_schedule", {}).get(schedule, {}).get(cost)
    return tuple(own or exp.get("lams_by_cost", {}).get(cost, tuple(2 * lam for lam in macs)))


def operator_sets(model: str, schedule: str) -> tuple[str, ...]:
    """The operator sets the queue sweeps for ``model`` under ``schedule``, first one first."""
    exp = EXPERIMENTS[model]
    return tuple(exp.get("ops_by_schedule", {}).get(schedule, exp["ops"]))
