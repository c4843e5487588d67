"""CIFAR benchmark: one run of one method, resumable, writing one JSON result.

    python -m bench.cifar --model resnet20 --method baseline
    python -m bench.cifar --model resnet20 --method lwdc --lam 1.0 --ops default
    python -m bench.cifar --model resnet20 --method prune-l1-global --lam 1.0 --ops default   # at that point's MACs
    python -m bench.cifar --model resnet20 --method prune-l1 --target 0.5                     # at 50% of the MACs

Every method starts from the baseline of its (model, schedule, seed), trained once and cached; see
bench/configs.py for the schedules and the fairness rules. Runs live in ``--cache-dir`` (default
``~/.cache/lwdc/bench/cifar``): every stage checkpoints after each epoch, so the same command resumes an
interrupted run, and a finished run is not repeated (its result is copied to ``--out-dir`` again).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lwdc import CompressConfig, compress
from lwdc.api import compress_fingerprint
from lwdc.data import BatchLoader, load_data, random_crop_flip
from lwdc.models import create_model
from lwdc.profiling import count_macs, count_params
from lwdc.runs import CheckpointError, Run, write_json
from lwdc.stages import check_checkpoint, config_fingerprint, train_stage
from lwdc.tasks import Classification
from lwdc.train import TrainConfig, evaluate

from .configs import METHODS, PRUNE_METHODS, SCHEDULES, Schedule, baseline_schedule
from .measure import git_info, latency_pair, machine_info, memory_mb, speed_ratio

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "cifar"
DEFAULT_CACHE = Path.home() / ".cache" / "lwdc" / "bench" / "cifar"


@dataclass
class Context:
    """Everything a run needs: settings, data loaders, the folder of this (model, schedule, seed)."""
    args: argparse.Namespace
    schedule: Schedule
    train: BatchLoader
    test: BatchLoader
    example: torch.Tensor
    num_classes: int
    data_name: str
    folder: Path
    baseline_dir: Path
    log: callable

    def new_model(self) -> nn.Module:
        torch.manual_seed(self.args.seed)
        return create_model(self.args.model, num_classes=self.num_classes, width=self.args.width)

    def train_cfg(self, epochs: int, lr: float, desc: str) -> TrainConfig:
        return TrainConfig(epochs=epochs, lr=lr, max_batches=self.args.max_batches, progress=False, desc=desc,
                           device=self.args.device, channels_last=self.schedule.channels_last)


def run_name(method: str, lam: float | None, ops: str, target: float | None,
             finetune_epochs: int | None = None, noise_end: float = 1.0) -> str:
    if method in ("baseline", "baseline-extended"):
        return method
    point = (f"{ops}-lam{lam:g}" + (f"-noise{noise_end:g}" if noise_end != 1 else "")) if lam is not None \
        else f"macs{target:g}"
    if method != "lwdc":
        return f"{method}-{point}"
    return f"lwdc-{point}" + (f"-ft{finetune_epochs}" if finetune_epochs else "")


def stage_fingerprint(cfg: TrainConfig, **context) -> str:
    """A hash of the settings bench chooses, and only those: a new, unrelated ``TrainConfig`` field in lwdc must
    not orphan the cached baselines every later run starts from."""
    keys = ("epochs", "lr", "momentum", "weight_decay", "max_batches")
    return config_fingerprint({**{k: getattr(cfg, k) for k in keys}, **context})


def baseline(ctx: Context) -> tuple[nn.Module, list]:
    """The trained original model of this (model, schedule, seed): trained on first use, then loaded."""
    s = ctx.schedule
    model = ctx.new_model()
    cfg = ctx.train_cfg(s.baseline_epochs, s.lr, "baseline")
    cfg.lr_warmup_epochs = s.lr_warmup
    a = ctx.args
    recipe = {k: v for k, v in (("lr_warmup", s.lr_warmup), ("label_smoothing", s.label_smoothing)) if v}
    history = train_stage("train", model, Classification(label_smoothing=s.label_smoothing), ctx.train, ctx.test,
                          cfg, ctx.baseline_dir, stage_fingerprint(cfg, model=a.model, width=a.width, seed=a.seed,
                                                                   batch_size=s.batch_size, **recipe),
                          log=ctx.log)
    return model, history


def epoch_seconds(history: list) -> float | None:
    secs = [h.seconds for h in history]
    return sorted(secs)[len(secs) // 2] if secs else None


def run_baseline_extended(ctx: Context, base: nn.Module, run_dir: Path) -> tuple[nn.Module, dict]:
    s = ctx.schedule
    model = ctx.new_model()
    model.load_state_dict(base.state_dict())
    cfg = ctx.train_cfg(s.post_epochs, s.search_lr, "extended")
    t0 = time.perf_counter()
    history = train_stage("train", model, Classification(), ctx.train, ctx.test, cfg, run_dir,
                          stage_fingerprint(cfg, start="baseline", batch_size=s.batch_size), log=ctx.log)
    return model, {"wall_time_s": {"train": time.perf_counter() - t0}, "train_seconds": sum(h.seconds for h in history),
                   "epoch_seconds": epoch_seconds(history), "epochs": {"post": s.post_epochs}}


def reuse_search(ctx: Context, config: CompressConfig, run_dir: Path) -> str | None:
    """Start an LWDC run from a finished search of the same point, when one exists and its checkpoint fits: the
    point's own search for a longer fine-tune (``--finetune-epochs``), or the search of the schedule this one
    shares its searches with (``Schedule.search_from``). Returns the run folder it started from."""
    a, s = ctx.args, ctx.schedule
    run = Run(run_dir)
    mine, record = run.checkpoint_path("search"), "search_source.json"
    if mine.exists():
        return (run.read_file(record) or {}).get("run")
    searched = run_name("lwdc", a.lam, a.ops, None, noise_end=a.noise_end)
    candidates = [ctx.folder / searched] if a.finetune_epochs else []
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


def run_lwdc(ctx: Context, base: nn.Module, run_dir: Path) -> tuple[nn.Module, dict]:
    s, a = ctx.schedule, ctx.args
    config = CompressConfig(ops=a.ops, lam=a.lam, warmup_epochs=s.warmup_epochs, search_epochs=s.search_epochs,
                            finetune_epochs=a.finetune_epochs or s.finetune_epochs, lr=s.search_lr,
                            finetune_lr=s.finetune_lr, noise_end=a.noise_end, seed=a.seed, max_batches=a.max_batches,
                            progress=False, device=a.device)
    reused = reuse_search(ctx, config, run_dir)
    result = compress(base, ctx.train, ctx.test, example_input=ctx.example, config=config, run_dir=run_dir,
                      log=ctx.log)
    r = result.report
    search_secs = [h["seconds"] for h in r["history"]["search"]]
    return result.model, {
        "ops": a.ops, "lambda": a.lam, "noise_end": a.noise_end, "choices": r["choices"],
        "derive_max_abs_diff": r["derive_max_abs_diff"],
        "wall_time_s": r["wall_time_s"], "search_epoch_seconds": sorted(search_secs)[len(search_secs) // 2],
        "train_seconds": r["wall_time_s"]["warmup"] + sum(h["seconds"] for stage in ("search", "finetune")
                                                          for h in r["history"][stage]),
        "epochs": {"warmup": s.warmup_epochs, "search": s.search_epochs, "finetune": config.finetune_epochs},
        "search_reused_from": reused, "finetune_override": a.finetune_epochs,
        "search_of": run_name("lwdc", a.lam, a.ops, None, noise_end=a.noise_end),
        "search_history": [{"epoch": h["epoch"], "val": h["val"], "cost_ratios": h["cost_ratios"]}
                           for h in r["history"]["search"]],
    }


def matched_target(ctx: Context, base_macs: int) -> tuple[int, str | None, str]:
    """The MACs a pruning run must hit: a given fraction (--target) or the MACs of an LWDC point, from its result
    or, while it is still fine-tuning, from its finished search (the derived network is the search's argmax, so
    its MACs are known before fine-tuning starts; the report checks the pair against the final result)."""
    a = ctx.args
    if a.target is not None:
        return int(round(a.target * base_macs)), None, "target"
    source = lwdc_source(a, ctx.folder, ctx.schedule)
    if source.name == "result.json":
        return int(Run(source.parent).read_file(source.name)["macs"]), source.parent.name, "result"
    ratio = check_checkpoint(source, "search", None)["history"][-1]["cost_ratios"]["macs"]
    ctx.log(f"matching the finished search of {source.parents[1].name} ({ratio:.3f}x MACs); it is still fine-tuning")
    return int(round(ratio * base_macs)), source.parents[1].name, "search"


def lwdc_source(a: argparse.Namespace, folder: Path, schedule: Schedule) -> Path:
    """The result of the LWDC point a pruning run matches, else its finished search checkpoint; a clear error if
    neither exists."""
    run_dir = folder / run_name("lwdc", a.lam, a.ops, None, noise_end=a.noise_end)
    source, search = run_dir / "result.json", run_dir / "checkpoints" / "search.pt"
    if source.exists():
        return source
    if search.exists():
        try:
            if check_checkpoint(search, "search", None)["epoch"] >= schedule.search_epochs:
                return search
        except CheckpointError:
            pass
    noise = f" --noise-end {a.noise_end:g}" if a.noise_end != 1 else ""
    raise SystemExit(f"{a.method} at lambda {a.lam:g} ({a.ops}{noise}) matches an LWDC point whose search has not "
                     f"finished ({source} and a finished {search.name} are missing): run --method lwdc --lam "
                     f"{a.lam:g} --ops {a.ops}{noise} first, or give --target FRACTION")


def run_pruning(ctx: Context, base: nn.Module, run_dir: Path) -> tuple[nn.Module, dict]:
    from .pruning import prune, prune_to_macs, torch_pruning_version

    s, a = ctx.schedule, ctx.args
    global_pruning = a.method == "prune-l1-global"
    base_macs = count_macs(base, ctx.example)
    target, matches, target_from = matched_target(ctx, base_macs)
    run = Run(run_dir)
    t0 = time.perf_counter()
    plan = run.read_file("prune.json")
    if plan is not None:            # resume: rebuild the same architecture from the baseline and the ratio
        model = prune(base, ctx.example, plan["ratio"], global_pruning)
    else:
        model, ratio, macs = prune_to_macs(base, ctx.example, target, global_pruning)
        plan = {"ratio": ratio, "target_macs": target, "macs": macs, "matches": matches, "target_from": target_from}
        run.write_file("prune.json", plan)
    prune_time = time.perf_counter() - t0
    cfg = ctx.train_cfg(s.post_epochs, s.search_lr, "finetune")
    t0 = time.perf_counter()
    history = train_stage("finetune", model, Classification(), ctx.train, ctx.test, cfg, run_dir,
                          stage_fingerprint(cfg, plan=plan, method=a.method, batch_size=s.batch_size), log=ctx.log)
    macs = count_macs(model, ctx.example)
    return model, {
        "importance": "L1 filter magnitude (MagnitudeImportance p=1), Torch-Pruning dependency graph",
        "global_pruning": global_pruning, "pruning_ratio": plan["ratio"], "matches": plan["matches"],
        "target_from": plan.get("target_from", "result"),
        "target_macs": target, "macs_error": macs / target - 1, "matched_within_5pct": abs(macs / target - 1) <= 0.05,
        "torch_pruning": torch_pruning_version(), "epochs": {"finetune": s.post_epochs},
        "wall_time_s": {"prune": prune_time, "finetune": time.perf_counter() - t0},
        "epoch_seconds": epoch_seconds(history), "train_seconds": sum(h.seconds for h in history),
    }


RUNNERS = {"baseline-extended": run_baseline_extended, "lwdc": run_lwdc,
           **{m: run_pruning for m in PRUNE_METHODS}}


def finish(ctx: Context, method: str, model: nn.Module, base: nn.Module, base_history: list, extra: dict,
           started: float, memory: dict) -> dict:
    """Accuracy, size, paired latency and cost ratios of a finished model, as one result dict."""
    a, s = ctx.args, ctx.schedule
    task = Classification()
    macs, base_macs = count_macs(model, ctx.example), count_macs(base, ctx.example)
    params, base_params = count_params(model), count_params(base)
    ctx.log("measuring latency (one thread, original and compressed alternating)")
    lat = latency_pair(base, model, ctx.example, onnx=a.onnx, rounds=1 if a.quick_latency else 3)
    base_epoch = epoch_seconds(base_history)
    result = {
        "run": run_name(method, a.lam, a.ops, a.target, a.finetune_epochs, a.noise_end), "model": a.model,
        "width": a.width, "method": method,
        "ops": extra.pop("ops", None),
        "lambda": extra.pop("lambda", None),
        "target": a.target, "seed": a.seed, "schedule": a.schedule, "schedule_settings": s.as_dict(),
        "data": ctx.data_name, "max_batches": a.max_batches,
        "accuracy": evaluate(model, task, ctx.test)["accuracy"],
        "baseline_accuracy": evaluate(base, task, ctx.test)["accuracy"],
        "params": params, "macs": macs, "flops": 2 * macs, "params_ratio": params / base_params,
        "macs_ratio": macs / base_macs,
        "latency_ms": {k: v["compressed"] for k, v in lat.items()},
        "baseline_latency_ms": {k: v["original"] for k, v in lat.items()},
        "baseline_epoch_seconds": base_epoch, "memory": memory,
        "wall_time_total_s": time.perf_counter() - started, **extra,
        "machine": {**machine_info(), "train_device": a.device}, "git": git_info(),
        "notes": "latency: median ms, one thread, original and compressed alternating in one process; memory: "
                 "VmHWM/VmRSS of the process that finished the run, read right after training (before latency and "
                 "export), including the ~0.2 GB of data held in memory",
    }
    result["speed_ratio"] = {k: speed_ratio(result["baseline_latency_ms"][k], v, base_macs, macs)
                             for k, v in result["latency_ms"].items()}
    return result


def run(a: argparse.Namespace) -> dict:
    torch.set_num_threads(a.threads)
    schedule = SCHEDULES[a.schedule]
    name = run_name(a.method, a.lam, a.ops, a.target, a.finetune_epochs, a.noise_end)
    tag = (f"_w{a.width:g}" if a.width != 1 else "") + (f"_mb{a.max_batches}" if a.max_batches else "")
    cache = Path(a.cache_dir).expanduser()
    folder = cache / f"{a.model}_{a.schedule}_s{a.seed}{tag}"
    try:
        baseline_dir = cache / f"{a.model}_{baseline_schedule(a.schedule)}_s{a.seed}{tag}" / "baseline"
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    out = Path(a.out_dir) / f"{a.model}_{a.schedule}{tag}_{name}_s{a.seed}.json"
    run_dir = folder / name
    log = (lambda msg: print(f"[{time.strftime('%H:%M:%S')} {a.model} {name}] {msg}", flush=True))
    finished = Run(run_dir).read_file("result.json")
    if finished is not None:
        result = finished
        log(f"finished earlier: {run_dir / 'result.json'}")
        write_json(out, result)
        return result
    if a.method in PRUNE_METHODS and a.target is None:
        lwdc_source(a, folder, schedule)            # fail before any training, not after the baseline
    started = time.perf_counter()
    data = load_data(a.data, cache_dir=a.data_cache)
    ctx = Context(a, schedule,
                  BatchLoader(data.train, schedule.batch_size, shuffle=True, augment=random_crop_flip(4), seed=a.seed,
                              drop_last=True),
                  BatchLoader(data.test, 500), data.test.normalize(data.test.x[:1]), data.num_classes,
                  data.name if not Path(a.data).exists() else Path(a.data).name, folder, baseline_dir, log)
    log(f"data {ctx.data_name}: {len(data.train)} train / {len(data.test)} test; run folder {run_dir}")
    memory_start = memory_mb()
    base, base_history = baseline(ctx)
    if a.method == "baseline":
        model, extra = base, {"epochs": {"baseline": schedule.baseline_epochs},
                              "epoch_seconds": epoch_seconds(base_history),
                              "train_seconds": sum(h.seconds for h in base_history)}
    else:
        model, extra = RUNNERS[a.method](ctx, base, run_dir)
    memory = {**memory_mb(), "rss_before_training_mb": memory_start["rss_mb"],
              "measured_in": "one process; a resumed run reports its last process only"}
    result = finish(ctx, a.method, model, base, base_history, extra, started, memory)
    Run(run_dir).write_file("result.json", result)
    write_json(out, result)
    log(f"accuracy {result['accuracy']:.2f}% (baseline {result['baseline_accuracy']:.2f}%), MACs "
        f"{result['macs_ratio']:.3f}x, params {result['params_ratio']:.3f}x, eager b1 "
        f"{result['latency_ms']['eager_b1']:.2f} ms -> {out}")
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier of the model")
    p.add_argument("--method", choices=METHODS, default="baseline")
    p.add_argument("--lam", type=float, help="LWDC lambda (for prune-*: match the MACs of this LWDC point)")
    p.add_argument("--ops", default="default", help="LWDC operator set (default, paper, ...)")
    p.add_argument("--target", type=float, help="prune-*: MACs as a fraction of the baseline's, instead of --lam")
    p.add_argument("--finetune-epochs", type=int, help="lwdc: fine-tune this many epochs instead of the "
                   "schedule's (a separate run, labelled -ftN, outside the same-budget comparison; it starts from "
                   "the point's finished search when there is one)")
    p.add_argument("--noise-end", type=float, help="lwdc: Gumbel noise scale at the end of the search (default: "
                   f"CompressConfig's, {CompressConfig.noise_end:g}; runs other than 1 are labelled -noiseX); prune-* "
                   "--lam: match that LWDC point; the baselines ignore it (so bench.queue can pass it to every job)")
    p.add_argument("--schedule", choices=list(SCHEDULES), default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="a load_data source: cifar10-subset, cifar10, a "
                   "folder or a .tar.gz (default: ../shared/data/cifar10-jpeg.tar.gz)")
    p.add_argument("--data-cache", default=None,
                   help="where archives are unpacked (default $LWDC_DATA or ~/.cache/lwdc)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="run folders (checkpoints)")
    p.add_argument("--out-dir", default=str(DEFAULT_OUT), help="where result JSON files go")
    p.add_argument("--max-batches", type=int, help="cap batches per epoch (smoke tests)")
    p.add_argument("--device", default="auto", help="where training runs: auto (CUDA if visible), cpu, cuda[:N]; "
                   "latency is always measured on the CPU")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training (latency always uses one); "
                   "on a CPU shared with other jobs, more threads than free cores is several times slower")
    p.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip onnxruntime latency")
    p.add_argument("--quick-latency", action="store_true", help="one latency round instead of three")
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked: a clear error for combinations that name no run."""
    a = parser().parse_args(argv)
    if a.method == "lwdc" and a.lam is None:
        raise SystemExit("--method lwdc needs --lam")
    if a.method in PRUNE_METHODS and (a.lam is None) == (a.target is None):
        raise SystemExit(f"--method {a.method} needs exactly one of --lam (match that LWDC point) or --target")
    if a.finetune_epochs is not None and (a.method != "lwdc" or a.finetune_epochs < 1):
        raise SystemExit("--finetune-epochs takes a positive number of epochs and applies to --method lwdc only")
    if a.noise_end is not None and (not 0 < a.noise_end <= 1 or a.target is not None):
        raise SystemExit("--noise-end takes a value in (0, 1]; a prune-* run takes it with --lam (to match that "
                         "LWDC point), not with --target")
    if a.noise_end is None:
        a.noise_end = CompressConfig.noise_end
    if a.method not in PRUNE_METHODS and a.target is not None:
        raise SystemExit("--target only applies to prune-* methods")
    return a


def main(argv: list[str] | None = None) -> dict:
    return run(parse(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
