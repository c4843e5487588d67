"""The methods of the CIFAR benchmark after the baseline: each takes the trained baseline and returns the finished
model with what its result records. Every stage is checkpointed in the run folder (``lwdc.stages.train_stage``), so
an interrupted run resumes; see bench/configs.py for the budgets.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from torch import nn

from lwdc import CompressConfig, compress
from lwdc.api import compress_fingerprint
from lwdc.distill import Distillation
from lwdc.profiling import count_macs
from lwdc.runs import CheckpointError, Run
from lwdc.stages import check_checkpoint, train_stage
from lwdc.tasks import Classification

from .configs import ABLATIONS, PRUNE_METHODS, VARIANTS, Schedule, baseline_schedule
from .context import Context, distill_label, epoch_seconds, run_name, stage_fingerprint

__all__ = ["RUNNERS", "lwdc_source"]


def start_label(ctx: Context) -> str:
    """What the post-baseline stages start from, for their fingerprints: a run of another seed than its baseline's
    says so (seed-0 runs keep the label their checkpoints were written with)."""
    a = ctx.args
    return "baseline" if a.baseline_seed == a.seed else f"baseline-s{a.baseline_seed}"


def run_baseline_extended(ctx: Context, base: nn.Module, run_dir: Path) -> tuple[nn.Module, dict]:
    s = ctx.schedule
    model = ctx.new_model()
    model.load_state_dict(base.state_dict())
    cfg = ctx.train_cfg(s.post_epochs, s.search_lr, "extended")
    t0 = time.perf_counter()
    history = train_stage("train", model, Classification(), ctx.train, ctx.test, cfg, run_dir,
                          stage_fingerprint(cfg, start=start_label(ctx), batch_size=s.batch_size), log=ctx.log)
    return model, {"wall_time_s": {"train": time.perf_counter() - t0}, "train_seconds": sum(h.seconds for h in history),
                   "epoch_seconds": epoch_seconds(history), "epochs": {"post": s.post_epochs}}


def lwdc_point(ctx: Context, distilled: bool = True) -> str:
    """The run name of the LWDC point this run is, or is matched to (its search, without a fine-tune override);
    with its distillation label, unless ``distilled`` is False (the plain point whose search it shares)."""
    a = ctx.args
    return run_name("lwdc", a.lam, a.ops, None, noise_end=a.noise_end, cost=a.cost, budgets=a.budget,
                    distill=getattr(a, "distill", 0.0) if distilled else 0.0)


def reuse_search(ctx: Context, config: CompressConfig, run_dir: Path) -> str | None:
    """Start an LWDC run from a finished search of the same point, when one exists and its checkpoint fits: the
    point's own search for a longer fine-tune (``--finetune-epochs``), a distilled one (``--distill``) or a variant
    its fingerprint allows (``--variant fill-limits``); for the point itself, a distilled twin's search that
    finished first; or the search of the schedule this one
    shares its searches with (``Schedule.search_from``). Returns the run folder it started from."""
    a, s = ctx.args, ctx.schedule
    run = Run(run_dir)
    mine, record = run.checkpoint_path("search"), "search_source.json"
    if mine.exists():
        return (run.read_file(record) or {}).get("run")
    searched = lwdc_point(ctx, distilled=False)
    own = a.finetune_epochs or getattr(a, "variant", ()) or getattr(a, "distill", 0.0)
    # the plain point itself may start from the search of a distilled twin that ran first (``-kd<w>``: the same
    # search, only the fine-tuning is distilled); the fingerprint check below refuses any other
    candidates = [ctx.folder / searched] if own else sorted(ctx.folder.glob(f"{searched}-kd*"))
    if s.search_from:
        if baseline_schedule(s.search_from) != baseline_schedule(a.schedule):
            raise SystemExit(f"schedule {a.schedule} takes its searches from {s.search_from}, which starts from "
                             "another baseline; fix bench/configs.py")
        candidates.append(ctx.folder.parent / ctx.folder.name.replace(f"_{a.schedule}_", f"_{s.search_from}_", 1)
                          / searched)
    for source in candidates:
        search = source / "checkpoints" / "search.pt"
        if not search.exists():
            continue
        try:
            check_checkpoint(search, "search", compress_fingerprint(config, "search"))
        except CheckpointError as exc:
            ctx.log(f"search: not reusing {search} ({exc})")
            continue
        mine.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(search, mine)
        ctx.log(f"search: starting from the finished search {search}")
        run.write_file(record, {"run": f"{source.parent.name}/{source.name}"})
        return f"{source.parent.name}/{source.name}"
    return None


def lwdc_config(ctx: Context) -> CompressConfig:
    """The compress settings of this run's LWDC point (the point itself, or what a random draw matches), with
    the parts an ablation switches off overridden (``configs.ABLATIONS``)."""
    s, a = ctx.schedule, ctx.args
    settings = dict(ops=a.ops, lam=a.lam, cost=a.cost, budgets=list(a.budget) or None,
                    warmup_epochs=s.warmup_epochs, search_epochs=s.search_epochs,
                    finetune_epochs=a.finetune_epochs or s.finetune_epochs, lr=s.search_lr,
                    finetune_lr=s.finetune_lr, noise_end=a.noise_end, seed=a.seed, max_batches=a.max_batches,
                    progress=False, device=a.device, distill=getattr(a, "distill", 0.0),
                    budget_ramp=0.0)   # as when these runs were named: the ramp is the ramp0.5 variant
    for ablation in getattr(a, "ablate", ()):
        settings.update(ABLATIONS[ablation])
    for variant in getattr(a, "variant", ()):
        settings.update(VARIANTS[variant])
    return CompressConfig(**settings)


def lwdc_extra(ctx: Context, result) -> dict:
    """What a result file records of an LWDC-style run beyond the common measurements."""
    s, a = ctx.schedule, ctx.args
    r = result.report
    search_secs = [h["seconds"] for h in r["history"]["search"]] or [0.0]
    return {
        "ops": a.ops, "lambda": a.lam, "noise_end": a.noise_end, "cost": a.cost, "choices": r["choices"],
        "budgets": r.get("budgets") or [], "ablations": sorted(getattr(a, "ablate", ())),
        "variants": sorted(getattr(a, "variant", ())),
        "derive_max_abs_diff": r["derive_max_abs_diff"],
        "wall_time_s": r["wall_time_s"], "search_epoch_seconds": sorted(search_secs)[len(search_secs) // 2],
        "train_seconds": r["wall_time_s"]["warmup"] + sum(h["seconds"] for stage in ("search", "finetune")
                                                          for h in r["history"][stage]),
        "epochs": {"warmup": s.warmup_epochs, "search": s.search_epochs,
                   "finetune": a.finetune_epochs or s.finetune_epochs},
        "finetune_override": a.finetune_epochs, "search_of": lwdc_point(ctx),
        "distill": getattr(a, "distill", 0.0),
        "search_history": [{"epoch": h["epoch"], "val": h["val"], "cost_ratios": h["cost_ratios"]}
                           for h in r["history"]["search"]],
        # how decided the gates were when the argmax network was taken: per layer, its operators' probabilities
        "final_probabilities": (r["history"]["search"] or [{}])[-1].get("probabilities"),
    }


def run_lwdc(ctx: Context, base: nn.Module, run_dir: Path) -> tuple[nn.Module, dict]:
    config = lwdc_config(ctx)
    reused = reuse_search(ctx, config, run_dir)
    result = compress(base, ctx.train, ctx.test, example_input=ctx.example, config=config, run_dir=run_dir,
                      log=ctx.log)
    return result.model, {**lwdc_extra(ctx, result), "search_reused_from": reused}


def matched_target(ctx: Context, base_macs: int) -> tuple[int, str | None, str]:
    """The MACs a pruning run must hit: a given fraction (--target) or the MACs of an LWDC point, from its result
    or, while it is still fine-tuning, from its finished search (the derived network is the search's argmax, so
    its MACs are known before fine-tuning starts; the report checks the pair against the final result). The name
    returned is the point's plain run name, whichever of its runs (plain or distilled) gave the figure."""
    a = ctx.args
    if a.target is not None:
        return int(round(a.target * base_macs)), None, "target"
    source, name = lwdc_source(a, ctx.folder, ctx.schedule), point_run_names(a)[-1]
    if source.name == "result.json":
        return int(Run(source.parent).read_file(source.name)["macs"]), name, "result"
    ratio = check_checkpoint(source, "search", None)["history"][-1]["cost_ratios"]["macs"]
    ctx.log(f"matching the finished search of {source.parents[1].name} ({ratio:.3f}x MACs); it is still fine-tuning")
    return int(round(ratio * base_macs)), name, "search"


def point_run_names(a) -> list[str]:
    """The run names of the LWDC point a pruning run matches: with the pruning run's own distillation first, the
    plain one last (one name when the pruning run is plain)."""
    weights = dict.fromkeys((getattr(a, "distill", 0.0), 0.0))
    return [run_name("lwdc", a.lam, a.ops, None, noise_end=a.noise_end, cost=a.cost, distill=d) for d in weights]


def lwdc_source(a, folder: Path, schedule: Schedule) -> Path:
    """The result of the LWDC point a pruning run matches, else its finished search checkpoint; a clear error if
    neither exists. The point's run with the pruning run's own distillation is looked at first, then its plain run:
    a distilled LWDC run searches for itself when no plain twin has (then only the ``-kdW`` folder exists), and
    reuses the twin's search otherwise (both derive the same network)."""
    names = point_run_names(a)
    for name in names:
        run_dir = folder / name
        source, search = run_dir / "result.json", run_dir / "checkpoints" / "search.pt"
        if source.exists():
            return source
        if search.exists():
            try:
                if check_checkpoint(search, "search", None)["epoch"] >= schedule.search_epochs:
                    return search
            except CheckpointError:
                pass
    opts = (f" --noise-end {a.noise_end:g}" if a.noise_end != 1 else "") + \
        (f" --cost {a.cost}" if a.cost != "macs" else "") + (f" --seed {a.seed}" if a.seed else "")
    missing = " or ".join(str(folder / n) for n in names)
    raise SystemExit(f"{a.method} at lambda {a.lam:g} ({a.ops}{opts}) matches an LWDC point whose search has not "
                     f"finished (no result.json or finished search.pt in {missing}): run --method lwdc --lam "
                     f"{a.lam:g} --ops {a.ops}{opts} first, or give --target FRACTION")


def sparse_train(ctx: Context, base: nn.Module, run_dir: Path) -> tuple[nn.Module, list]:
    """prune-group-sparse's first stage: the baseline trained on under Torch-Pruning's group regulariser (no weight
    decay), for ``Schedule.sparse_epochs``; checkpointed as stage ``sparsify``."""
    from .pruning import GroupSparsity

    s = ctx.schedule
    model = ctx.new_model()
    model.load_state_dict(base.state_dict())
    cfg = ctx.train_cfg(s.sparse_epochs, s.search_lr, "sparsify")
    cfg.weight_decay = 0.0
    history = train_stage("sparsify", model, Classification(), ctx.train, ctx.test, cfg, run_dir,
                          stage_fingerprint(cfg, start=start_label(ctx), reg=s.sparse_reg, batch_size=s.batch_size),
                          log=ctx.log, method=GroupSparsity(ctx.example, s.sparse_reg))
    return model, history


def run_pruning(ctx: Context, base: nn.Module, run_dir: Path) -> tuple[nn.Module, dict]:
    from .pruning import IMPORTANCE, prune, prune_to_macs, torch_pruning_version

    s, a = ctx.schedule, ctx.args
    global_pruning = a.method != "prune-l1"
    importance = "group" if a.method == "prune-group-sparse" else "l1"
    base_macs = count_macs(base, ctx.example)
    target, matches, target_from = matched_target(ctx, base_macs)
    run = Run(run_dir)
    t0 = time.perf_counter()
    source, sparse_history, epochs = base, [], {"finetune": s.post_epochs}
    if importance == "group":
        source, sparse_history = sparse_train(ctx, base, run_dir)
        epochs = {"sparse": s.sparse_epochs, "finetune": s.post_epochs - s.sparse_epochs}
    sparse_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = run.read_file("prune.json")
    if plan is not None:            # resume: rebuild the same architecture from the pruned weights and the ratio
        model = prune(source, ctx.example, plan["ratio"], global_pruning, importance)
    else:
        model, ratio, macs = prune_to_macs(source, ctx.example, target, global_pruning, importance=importance)
        plan = {"ratio": ratio, "target_macs": target, "macs": macs, "matches": matches, "target_from": target_from}
        run.write_file("prune.json", plan)
    prune_time = time.perf_counter() - t0
    cfg = ctx.train_cfg(epochs["finetune"], s.search_lr, "finetune")
    t0 = time.perf_counter()
    context = {} if importance == "l1" and a.baseline_seed == a.seed else {"start": start_label(ctx)}
    if a.distill:                   # the teacher is the baseline, as for LWDC (not the sparse-trained network)
        context["distill"] = [a.distill, CompressConfig.distill_temperature]
    history = train_stage("finetune", model, Classification(), ctx.train, ctx.test, cfg, run_dir,
                          stage_fingerprint(cfg, plan=plan, method=a.method, batch_size=s.batch_size, **context),
                          log=ctx.log,
                          method=Distillation(base, a.distill, CompressConfig.distill_temperature) if a.distill else None)
    macs = count_macs(model, ctx.example)
    wall = {"prune": prune_time, "finetune": time.perf_counter() - t0}
    return model, {
        "importance": IMPORTANCE[importance], "global_pruning": global_pruning, "pruning_ratio": plan["ratio"],
        "matches": plan["matches"] and plan["matches"] + distill_label(a.distill), "distill": a.distill,
        "target_from": plan.get("target_from", "result"), "cost": a.cost,
        "target_macs": target, "macs_error": macs / target - 1, "matched_within_5pct": abs(macs / target - 1) <= 0.05,
        "torch_pruning": torch_pruning_version(), "epochs": epochs,
        **({"sparse_reg": s.sparse_reg, "sparse_history": [{"epoch": h.epoch, "val": h.val} for h in sparse_history]}
           if importance == "group" else {}),
        "wall_time_s": {"sparse": sparse_time, **wall} if importance == "group" else wall,
        "epoch_seconds": epoch_seconds(sparse_history + history),
        "train_seconds": sum(h.seconds for h in sparse_history + history),
    }


RUNNERS = {"baseline-extended": run_baseline_extended, "lwdc": run_lwdc, **{m: run_pruning for m in PRUNE_METHODS}}
