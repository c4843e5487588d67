"""CIFAR benchmark: one run of one method, resumable, writing one JSON result.

    python -m bench.cifar --model resnet20 --method baseline
    python -m bench.cifar --model resnet20 --method lwdc --lam 1.0 --ops default
    python -m bench.cifar --model resnet20 --method lwdc --lam 2.0 --cost latency:onnxruntime  # latency-cost search
    python -m bench.cifar --model resnet20 --method prune-l1-global --lam 1.0 --ops default   # at that point's MACs
    python -m bench.cifar --model resnet20 --method prune-group-sparse --lam 1.0 --seed 1     # second seed
    python -m bench.cifar --model resnet20 --method prune-l1 --target 0.5                     # at 50% of the MACs

Every method starts from the baseline of its (model, schedule) trained with seed ``--baseline-seed`` (0), trained
once and cached; see bench/configs.py for the schedules and the fairness rules. Runs live in ``--cache-dir``
(default ``~/.cache/lwdc/bench/cifar``): every stage checkpoints after each epoch, so the same command resumes an
interrupted run, and a finished run is not repeated (its result is copied to ``--out-dir`` again). A finished
run also keeps its final model as data (``model_state.pt`` + ``model_arch.json``, ``lwdc.runs.Run.save_model``),
which ``python -m bench.remeasure`` times again beside the others.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

from lwdc import CompressConfig
from lwdc.budgets import BudgetError, parse_budgets
from lwdc.costs import get_cost_model
from lwdc.data import BatchLoader, load_data, random_crop_flip
from lwdc.profiling import count_macs, count_params
from lwdc.runs import CheckpointError, Run, write_json
from lwdc.stages import check_checkpoint, train_stage
from lwdc.tasks import Classification
from lwdc.train import evaluate

from .configs import ABLATIONS, METHODS, PRUNE_METHODS, SCHEDULES, VARIANTS, baseline_schedule
from .context import (DEFAULT_CACHE, DEFAULT_OUT, Context, args_run_name, epoch_seconds, folder_name, result_stem,
                      run_name, stage_fingerprint)
from .measure import git_info, int8_c_figures, latency_pair, machine_info, memory_mb, speed_ratio
from .random_arch import run_random
from .runners import RUNNERS as METHOD_RUNNERS, lwdc_source

RUNNERS = {**METHOD_RUNNERS, "random": run_random}   # random draws build on the LWDC runner

__all__ = ["main", "parse", "run", "run_name"]

#: budgets counted at the int8 export's precision: a run that keeps one is also measured as the int8 C it is
#: sized for (uNAS and MCUNet report their quantised networks' accuracy)
INT8_BUDGETS = ("flash", "ram")
CALIBRATION_SAMPLES = 512

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def baseline(ctx: Context) -> tuple[nn.Module, list]:
    """The trained original model of this (model, schedule, baseline seed): trained on first use, then loaded. A
    run of another seed only loads it: training it is the job of ``--method baseline --seed B`` (two processes
    must not train one checkpoint)."""
    s, a = ctx.schedule, ctx.args
    model = ctx.new_model(a.baseline_seed)
    cfg = ctx.train_cfg(s.baseline_epochs, s.lr, "baseline")
    cfg.lr_warmup_epochs = s.lr_warmup
    recipe = {k: v for k, v in (("lr_warmup", s.lr_warmup), ("label_smoothing", s.label_smoothing)) if v}
    if a.baseline_seed != a.seed and not _finished(ctx.baseline_dir, "train", s.baseline_epochs):
        raise SystemExit(f"seed {a.seed} starts from the seed-{a.baseline_seed} baseline, which has not finished "
                         f"({ctx.baseline_dir}): run --method baseline --seed {a.baseline_seed} first")
    history = train_stage("train", model, Classification(label_smoothing=s.label_smoothing), ctx.train, ctx.test,
                          cfg, ctx.baseline_dir, stage_fingerprint(cfg, model=a.model, width=a.width,
                                                                   seed=a.baseline_seed, batch_size=s.batch_size,
                                                                   **recipe),
                          log=ctx.log)
    return model, history


def _finished(run_dir: Path, stage: str, epochs: int) -> bool:
    path = Run(run_dir).checkpoint_path(stage)
    try:
        return path.exists() and check_checkpoint(path, stage, None)["epoch"] >= epochs
    except CheckpointError:
        return False


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
        "run": args_run_name(a, method), "model": a.model,
        "width": a.width, "method": method,
        "ops": extra.pop("ops", None),
        "lambda": extra.pop("lambda", None),
        "target": a.target, "seed": a.seed, "baseline_seed": a.baseline_seed,
        "baseline_run": f"{ctx.baseline_dir.parent.name}/{ctx.baseline_dir.name}",
        "schedule": a.schedule, "schedule_settings": s.as_dict(),
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
    name = args_run_name(a)
    cache = Path(a.cache_dir).expanduser()
    folder = cache / folder_name(a.model, a.schedule, a.seed, a.width, a.max_batches)
    try:
        baseline_dir = cache / folder_name(a.model, baseline_schedule(a.schedule), a.baseline_seed, a.width,
                                           a.max_batches) / "baseline"
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    out = Path(a.out_dir) / f"{result_stem(a.model, a.schedule, name, a.seed, a.width, a.max_batches)}.json"
    run_dir = folder / name
    log = (lambda msg: print(f"[{time.strftime('%H:%M:%S')} {a.model} {name}] {msg}", flush=True))
    finished = Run(run_dir).read_file("result.json")
    if finished is not None:
        result = finished
        log(f"finished earlier: {run_dir / 'result.json'}")
        if _wants_int8(a) and "int8_c" not in result:      # a run that predates the measurement gets it now
            log("measuring its int8 C (this result predates the measurement)")
            result["int8_c"] = _int8_c(Run(run_dir).load_model("model"), load_data(a.data, cache_dir=a.data_cache))
            Run(run_dir).write_file("result.json", result)
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
    if a.method not in ("lwdc", "random"):     # their run folders hold their models already (lwdc.compress)
        Run(run_dir).save_model("model", model, ctx.example, portable=False)
    if _wants_int8(a):
        log("measuring the int8 C on the whole test set")
        result["int8_c"] = _int8_c(model, data)
    Run(run_dir).write_file("result.json", result)
    write_json(out, result)
    log(f"accuracy {result['accuracy']:.2f}% (baseline {result['baseline_accuracy']:.2f}%), MACs "
        f"{result['macs_ratio']:.3f}x, params {result['params_ratio']:.3f}x, eager b1 "
        f"{result['latency_ms']['eager_b1']:.2f} ms -> {out}")
    return result


def _wants_int8(a: argparse.Namespace) -> bool:
    """Whether the run keeps a budget counted at int8 (parsed as lwdc parses it, so `` flash = 75000`` counts)."""
    return any(b.cost in INT8_BUDGETS for b in getattr(a, "budgets", None) or parse_budgets(a.budget))


def _int8_c(model: nn.Module, data) -> dict:
    """The int8 C figures of a model sized at int8 (calibrated on the first training images, scored on the whole
    test set)."""
    calib = data.train.normalize(data.train.x[:CALIBRATION_SAMPLES])
    return int8_c_figures(model, calib, data.test.normalize(data.test.x), data.test.y)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier of the model")
    p.add_argument("--method", choices=METHODS, default="baseline")
    p.add_argument("--lam", type=float, help="LWDC lambda (for prune-*: match the MACs of this LWDC point)")
    p.add_argument("--ops", default="default", help="LWDC operator set (default, paper, ...)")
    p.add_argument("--target", type=float, help="prune-*: MACs as a fraction of the baseline's, instead of --lam")
    p.add_argument("--draw", type=int, default=0, help="random: which draw of the point (each its own seed)")
    p.add_argument("--match", default="macs", help="random: the cost a draw matches within 3%% (macs, "
                   "latency:onnxruntime, ...)")
    p.add_argument("--start", choices=["supernet", "warmup"], default="supernet",
                   help="random: where a draw's weights come from: the point's trained supernet (default), or the "
                        "uncompressed model after the same branch warm-up, with no search (labelled -from_warmup)")
    p.add_argument("--ablate", action="append", default=[], choices=list(ABLATIONS),
                   help="lwdc: switch off one part of the search (issue 26): no-warmup (no branch warm-up), "
                        "constant-noise (Gumbel noise scale 1 throughout), uniform-gates (instead of P(original) 0.9); "
                        "repeatable")
    p.add_argument("--variant", action="append", default=[], choices=list(VARIANTS),
                   help="lwdc: change one search setting (issue 24), labelled -NAME: fill-limits (fill absolute "
                        "budgets toward their limits after the search), ramp0.5 (limits fall from 1.0x over half "
                        "the search), distill-search (with --distill: distil the search too); repeatable")
    p.add_argument("--budget", action="append", default=[], metavar="COST=VALUE",
                   help="lwdc: a budget the search keeps (lwdc --target syntax: flash=75000, ram=75000, macs=0.5x); "
                        "repeatable; lambda defaults to 0 with budgets")
    p.add_argument("--finetune-epochs", type=int, help="lwdc: fine-tune this many epochs instead of the "
                   "schedule's (a separate run, labelled -ftN, outside the same-budget comparison; it starts from "
                   "the point's finished search when there is one)")
    p.add_argument("--distill", type=float, default=0.0, metavar="WEIGHT",
                   help="lwdc, prune-*: fine-tune with the baseline as teacher, this weight on the distillation term "
                        "(lwdc.distill; labelled -kdW). An LWDC run starts from its point's finished search; a prune-* "
                        "--lam run matches that point and is paired with its -kdW run")
    p.add_argument("--noise-end", type=float, help="lwdc: Gumbel noise scale at the end of the search (default: "
                   f"CompressConfig's, {CompressConfig.noise_end:g}; runs other than 1 are labelled -noiseX); prune-* "
                   "--lam: match that LWDC point; the baselines ignore it (so bench.queue can pass it to every job)")
    p.add_argument("--cost", default="macs", help="lwdc: the search's resource cost, an lwdc cost spec (macs, "
                   "latency:onnxruntime, ...; runs other than macs are labelled -<cost>); prune-* --lam: match that "
                   "LWDC point")
    p.add_argument("--schedule", choices=list(SCHEDULES), default="cpu")
    p.add_argument("--seed", type=int, default=0, help="data order, augmentation and the method's random draws")
    p.add_argument("--baseline-seed", type=int, help="the seed of the baseline every method starts from (default "
                   "0, so that the seeds of a compressed point share one baseline; --method baseline: --seed)")
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
    if (a.ablate or a.variant) and a.method != "lwdc":
        raise SystemExit("--ablate and --variant apply to --method lwdc")
    if a.budget and a.method != "lwdc":
        raise SystemExit("--budget applies to --method lwdc")
    try:
        a.budgets = parse_budgets(a.budget)   # a malformed budget fails here, not after the baseline has loaded
    except BudgetError as exc:
        raise SystemExit(f"--budget: {exc}") from None
    if a.method == "lwdc" and a.lam is None and a.budget:
        a.lam = 0.0                     # the budgets size the network, as in lwdc.compress
    if a.method == "lwdc" and a.lam is None:
        raise SystemExit("--method lwdc needs --lam (or --budget)")
    if a.start != "supernet" and a.method != "random":
        raise SystemExit("--start applies to --method random")
    if a.method == "random" and a.lam is None:
        raise SystemExit("--method random needs --lam: the LWDC point whose trained supernet and cost it matches")
    if a.method in PRUNE_METHODS and (a.lam is None) == (a.target is None):
        raise SystemExit(f"--method {a.method} needs exactly one of --lam (match that LWDC point) or --target")
    if a.distill and (a.method not in ("lwdc", *PRUNE_METHODS) or not 0 < a.distill < float("inf")):
        raise SystemExit("--distill takes a positive weight and applies to --method lwdc and prune-*")
    if "distill-search" in a.variant and not a.distill:
        raise SystemExit("--variant distill-search distils the search with the --distill weight: add --distill 1")
    if a.finetune_epochs is not None and (a.method != "lwdc" or a.finetune_epochs < 1):
        raise SystemExit("--finetune-epochs takes a positive number of epochs and applies to --method lwdc only")
    if a.noise_end is not None and (not 0 < a.noise_end <= 1 or a.target is not None):
        raise SystemExit("--noise-end takes a value in (0, 1]; a prune-* run takes it with --lam (to match that "
                         "LWDC point), not with --target")
    if a.noise_end is None:
        a.noise_end = CompressConfig.noise_end
    if a.method not in PRUNE_METHODS and a.target is not None:
        raise SystemExit("--target only applies to prune-* methods")
    if a.cost != "macs":
        if a.lam is None:
            raise SystemExit("--cost applies to --method lwdc and to prune-* runs matched with --lam")
        try:
            get_cost_model(a.cost)
        except ValueError as exc:
            raise SystemExit(f"--cost {a.cost}: {exc}") from None
    if a.method == "baseline":
        if a.baseline_seed not in (None, a.seed):
            raise SystemExit("--method baseline trains the baseline of --seed; --baseline-seed names it for the "
                             "other methods")
        a.baseline_seed = a.seed
    elif a.baseline_seed is None:
        a.baseline_seed = 0
    return a


def main(argv: list[str] | None = None) -> dict:
    return run(parse(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
