"""`lwdc compress` and `lwdc demo`: the run folder, its settings and resuming it."""
from __future__ import annotations

import shutil
import time
from dataclasses import fields
from pathlib import Path

import click
import torch
from click.core import ParameterSource

from .. import distributed as dist
from ..api import (LEGACY_DEFAULTS, CompressConfig, check_checkpoint, compress, compress_fingerprint, config_fingerprint,
                   train_stage)
from ..ops import OP_SETS
from ..runs import read_json, write_json
from ..tasks import Classification
from ..train import TrainConfig
from .base import fail, main


def format_summary(report: dict) -> str:
    """The before/after table printed at the end of a run."""
    b, a = report["before"], report["after"]
    metric = report.get("primary_metric", "accuracy")

    def row(label, before, after, fmt):
        ratio = f"{after / before:6.3f}x" if before else "      -"
        return f"| {label:<18} | {fmt(before):>12} | {fmt(after):>12} | {ratio} |"

    lines = [f"| {'':<18} | {'before':>12} | {'after':>12} |   ratio |", f"|{'-' * 20}|{'-' * 14}|{'-' * 14}|---------|",
             row("params", b["params"], a["params"], lambda v: f"{v:,}"),
             row("MACs", b["macs"], a["macs"], lambda v: f"{v:,}"),
             row("latency b=1 (ms)", b["latency_ms"], a["latency_ms"], lambda v: f"{v:.3f}")]
    if metric in b and metric in a:
        lines.append(f"| {metric + ' (%)':<18} | {b[metric]:>12.2f} | {a[metric]:>12.2f} | "
                     f"{a[metric] - b[metric]:+6.2f}  |")
    counts: dict[str, int] = {}
    for op in report["choices"].values():
        counts[op] = counts.get(op, 0) + 1
    lines.append(f"lambda {report['lambda']}, cost {report['cost']}; chosen operators: "
                 + ", ".join(f"{op} x{n}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1])))
    lines.append(f"wall time: search {report['wall_time_s']['search']:.0f}s, "
                 f"fine-tune {report['wall_time_s']['finetune']:.0f}s, total {report['wall_time_s']['total']:.0f}s")
    return "\n".join(lines)


_RUN_OPTIONS = [
    click.option("--model", "model_name", default="resnet20", show_default=True, help="Registered model name."),
    click.option("--width", default=1.0, show_default=True, help="Width multiplier of the model."),
    click.option("--data", default="cifar10-subset", show_default=True,
                 help="cifar10-subset (shipped), cifar10, cifar100, or a folder / .tar.gz of a known layout."),
    click.option("--cache-dir", default=None, help="Where unpacked and decoded data sets are cached."),
    click.option("--download", is_flag=True, help="Download cifar10/cifar100 if they are not cached (needs network)."),
    click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="state_dict of a trained model to compress (else --pretrain-epochs trains one)."),
    click.option("--pretrain-epochs", default=0, show_default=True, help="Train the baseline first."),
    click.option("--search-epochs", default=10, show_default=True),
    click.option("--finetune-epochs", default=10, show_default=True),
    click.option("--lam", default=1.0, show_default=True, type=float,
                 help="Weight of the resource cost (larger: smaller model)."),
    click.option("--original-prob", default=0.9, show_default=True, type=float,
                 callback=lambda ctx, param, value: value or None,
                 help="Initial probability of keeping each original layer (0: all operators equally likely)."),
    click.option("--noise-end", default=CompressConfig.noise_end, show_default=True, type=float,
                 help="Gumbel sampling noise at the end of the search, from 1 at its start; below 1 the late search "
                      "trains the network it will derive (1: constant noise, the behaviour before this setting existed)."),
    click.option("--warmup-epochs", default=1.0, show_default=True, type=float,
                 help="Branch warm-up by local distillation before the search."),
    click.option("--ops", default="default", show_default=True,
                 help=f"Operator set ({', '.join(OP_SETS)}) or comma-separated names."),
    click.option("--cost", default="macs", show_default=True,
                 help="Search cost: params, macs (flops), latency[:onnxruntime][:bN], systolic[:RxC][:ws|os][:risa]."),
    click.option("--batch-size", default=128, show_default=True),
    click.option("--pretrain-lr", default=0.1, show_default=True, help="Learning rate of baseline training."),
    click.option("--lr", default=0.05, show_default=True, help="Weight learning rate during the search."),
    click.option("--finetune-lr", default=0.02, show_default=True),
    click.option("--arch-lr", default=0.01, show_default=True, help="Gate learning rate (Adam)."),
    click.option("--seed", default=0, show_default=True),
    click.option("--max-batches", default=None, type=int, help="Cap batches per epoch (quick looks)."),
    click.option("--checkpoint-every", default=0, show_default=True, type=click.IntRange(min=0),
                 help="Also checkpoint every N batches mid-epoch (0: after each epoch only)."),
    click.option("--threads", default=None, type=int, help="torch intra-op threads (default: torch's)."),
    click.option("--device", default="auto", show_default=True,
                 help="Where training runs: auto (cuda if available), cpu, cuda or cuda:N; under torchrun "
                      "each rank takes cuda:LOCAL_RANK. Profiling, export and checkpoints stay on the CPU."),
    click.option("--run-dir", default=None, type=click.Path(file_okay=False), help="Run folder (default runs/<time>)."),
    click.option("--progress/--no-progress", default=True, show_default=True),
]


def _run_options(fn):
    for option in reversed(_RUN_OPTIONS):
        fn = option(fn)
    return fn


def _run(settings: dict, run_dir: Path, log=click.echo) -> dict:
    """Everything ``compress`` and ``demo`` do once the run folder exists; resumable stage by stage."""
    from ..data import BatchLoader, load_data, random_crop_flip
    from ..models import create_model

    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    torch.manual_seed(settings["seed"])
    world = dist.world_size()
    bundle = load_data(settings["data"], cache_dir=settings.get("cache_dir"), download=settings.get("download", False))
    train = BatchLoader(bundle.train, settings["batch_size"] // world, shuffle=True, augment=random_crop_flip(4),
                        seed=settings["seed"], rank=dist.rank(), world_size=world, drop_last=True)
    test = BatchLoader(bundle.test, 256)
    model = create_model(settings["model_name"], num_classes=bundle.num_classes,
                         in_channels=bundle.input_shape[0], width=settings["width"])
    task = Classification()
    log(f"data {bundle.name}: {len(bundle.train)} train / {len(bundle.test)} test, {bundle.num_classes} classes; "
        f"model {settings['model_name']} (width {settings['width']})"
        + (f"; {world} processes, {settings['batch_size'] // world} samples each per step" if world > 1 else ""))
    if settings.get("weights"):
        try:
            model.load_state_dict(torch.load(settings["weights"], map_location="cpu", weights_only=True))
        except Exception as exc:
            fail(f"cannot load --weights {settings['weights']} into {settings['model_name']}: {exc}")
    elif settings["pretrain_epochs"] > 0:
        cfg = TrainConfig(epochs=settings["pretrain_epochs"], lr=settings["pretrain_lr"], max_batches=settings["max_batches"],
                          checkpoint_every=settings.get("checkpoint_every", 0), progress=settings["progress"],
                          desc="pretrain", device=settings.get("device", "auto"))
        train_stage("pretrain", model, task, train, test, cfg, run_dir, _pretrain_fingerprint(settings), log=log)
    else:
        log("warning: no --weights and no --pretrain-epochs: compressing an untrained model")
    names = {f.name for f in fields(CompressConfig)}
    cfg = CompressConfig(**{k: v for k, v in settings.items() if k in names})
    result = compress(model, train, test, task=task, config=cfg, run_dir=run_dir, log=log)
    return result.report


def _pretrain_fingerprint(settings: dict) -> str:
    """Checkpoints hold CPU tensors, so the device is not part of the settings a checkpoint is tied to."""
    return config_fingerprint({k: v for k, v in settings.items() if k != "device"})


def _validate(settings: dict) -> None:
    """Refuse bad settings before anything is written."""
    from ..models import list_models
    from ..ops import resolve_ops

    names = {f.name for f in fields(CompressConfig)}
    try:
        CompressConfig(**{k: v for k, v in settings.items() if k in names}).validate()
        resolve_ops(settings["ops"])
    except (ValueError, TypeError) as exc:
        fail(str(exc))
    if settings["model_name"] not in list_models():
        fail(f"unknown model {settings['model_name']!r}; registered models: {', '.join(list_models())}")
    if settings["batch_size"] < 1 or settings["batch_size"] % dist.world_size():
        fail(f"--batch-size {settings['batch_size']} is the global batch: it must be a positive multiple of the "
              f"{dist.world_size()} process(es)")


def _read_run_json(path: Path) -> dict:
    try:
        value = read_json(path)
    except (OSError, ValueError) as exc:
        fail(f"{path} is not readable JSON ({type(exc).__name__}: {exc}); the run folder is damaged")
    if not isinstance(value, dict):
        fail(f"{path} should hold a JSON object, found {type(value).__name__}; the run folder is damaged")
    return value


def _resumed_settings(folder: Path, defaults: dict, overrides: dict | None = None) -> dict:
    """config.json of a run folder, checked option by option as if it had been typed (missing: the default),
    with ``overrides`` (settings no checkpoint depends on, such as --device) replacing the stored values."""
    raw = _read_run_json(folder / "config.json")
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
        fail(f"{folder / 'config.json'} has unknown settings {', '.join(unknown)}: written by another lwdc version?")
    params = {p.name: p for p in compress_cmd.params}
    settings = {**defaults, **{k: v for k, v in LEGACY_DEFAULTS.items() if k not in raw}}  # older run folders
    for key, value in raw.items():
        try:
            settings[key] = None if value is None else params[key].type.convert(value, params[key], None)
        except click.BadParameter as exc:
            fail(f"{folder / 'config.json'}: setting {key!r}: {exc.message}")
    settings.update(overrides or {})
    _validate(settings)
    return settings


def _vet_checkpoints(folder: Path, settings: dict) -> None:
    """Refuse a damaged, foreign or mismatched checkpoint before any work (data, profiling) starts."""
    from ..runs import CheckpointError

    names = {f.name for f in fields(CompressConfig)}
    config = CompressConfig(**{k: v for k, v in settings.items() if k in names})
    fingerprints = {"pretrain": _pretrain_fingerprint(settings), "search": compress_fingerprint(config, "search"),
                    "finetune": compress_fingerprint(config)}
    for stage, fingerprint in fingerprints.items():
        path = folder / "checkpoints" / f"{stage}.pt"
        if path.exists():
            try:
                check_checkpoint(path, stage, fingerprint)
            except CheckpointError as exc:
                fail(str(exc))


def _stored_device(resume: str | None) -> str | None:
    """The --device a resumed folder was started with (None if unknown; a damaged config.json is reported later)."""
    try:
        raw = read_json(Path(resume) / "config.json") if resume else None
    except (OSError, ValueError):
        return None
    return raw.get("device") if isinstance(raw, dict) else None


def _start(settings: dict, run_dir: str | None, resume: str | None, device: str | None = None) -> None:
    """Set up (or reopen) the run folder and run; under torchrun every rank runs this, only rank 0 writes.
    ``device`` is a --device typed on the command line: it overrides a resumed folder's stored one."""
    try:       # the device picks the process group's backend (nccl on CUDA), so it is checked first
        distributed = dist.init_from_env(device=device or _stored_device(resume) or settings["device"])
    except ValueError as exc:
        fail(str(exc))
    echo = click.echo if dist.is_main() else (lambda *a, **k: None)
    created = False
    if resume:
        folder = Path(resume)
        if not (folder / "config.json").exists():
            fail(f"--resume {folder}: no config.json there; is it an lwdc run folder?")
        if (folder / "report.json").exists():
            report = _read_run_json(folder / "report.json")
            echo(f"{folder} finished earlier; not running it again.\n")
            echo(format_summary(report))
            return
        settings = _resumed_settings(folder, settings, {"device": device} if device else None)
        _vet_checkpoints(folder, settings)
    else:
        folder = Path(run_dir or f"runs/{settings['model_name']}-{time.strftime('%Y%m%d-%H%M%S')}")
        if folder.exists() and any(folder.iterdir()):
            fail(f"run folder {folder} exists and is not empty; pass --resume {folder} or another --run-dir")
        _validate(settings)
        created = not folder.exists()
        dist.barrier()                 # every rank has checked the folder before rank 0 writes into it
        if dist.is_main():
            write_json(folder / "config.json", settings)
    echo(f"run folder: {folder}")
    try:
        report = _run(settings, folder, log=echo)
    except (ValueError, RuntimeError, OSError) as exc:
        if created and dist.is_main() and not (folder / "checkpoints").exists():  # failed before any work: no husk
            shutil.rmtree(folder, ignore_errors=True)
        fail(f"{type(exc).__name__}: {exc}")
    if distributed:
        dist.shutdown()
    echo("\n" + format_summary(report))
    echo(f"\nreport: {folder / 'report.json'}   model: {folder / 'model.pt2'} "
         "(load with torch.export.load(path).module())")


@main.command("compress")
@_run_options
@click.option("--resume", type=click.Path(file_okay=False), default=None, help="Continue an interrupted run folder.")
def compress_cmd(resume, run_dir, **settings) -> None:
    """Search, derive and fine-tune a compressed model; write a run folder with report.json."""
    typed = click.get_current_context().get_parameter_source("device") not in (ParameterSource.DEFAULT, None)
    _start(settings, run_dir, resume, settings["device"] if typed else None)


@main.command()
@click.option("--run-dir", default=None, type=click.Path(file_okay=False))
@click.option("--quick", is_flag=True, help="A one-minute smoke version (few batches per epoch).")
def demo(run_dir, quick) -> None:
    """Train a small ResNet on the shipped CIFAR-10 subset, compress it, fine-tune, print before/after."""
    settings = {o.name: o.default for o in compress_cmd.params if o.name not in ("resume", "run_dir")}
    settings.update(model_name="resnet20", width=0.5, pretrain_epochs=15, search_epochs=8, finetune_epochs=8,
                    lam=1.0, finetune_lr=0.05, batch_size=64)
    if quick:
        settings.update(pretrain_epochs=1, search_epochs=1, finetune_epochs=1, max_batches=5)
    _start(settings, run_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}", None)
