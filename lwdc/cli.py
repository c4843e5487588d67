"""Command line: a thin shell over the Python API (``lwdc --help``)."""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import fields
from pathlib import Path

import click
import torch

from . import distributed as dist
from .api import CompressConfig, check_checkpoint, compress, compress_fingerprint, config_fingerprint, train_stage
from .ops import OP_SETS, op_patterns
from .profile import profile as profile_model
from .runs import read_json, write_json
from .tasks import Classification
from .train import TrainConfig


def _fail(message: str) -> None:
    raise click.ClickException(message)


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lwdc")
def main() -> None:
    """lwdc: turn a bulky CNN into a lightweight plain PyTorch model by layer-wise differentiable compression."""


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
    click.option("--run-dir", default=None, type=click.Path(file_okay=False), help="Run folder (default runs/<time>)."),
    click.option("--progress/--no-progress", default=True, show_default=True),
]


def _run_options(fn):
    for option in reversed(_RUN_OPTIONS):
        fn = option(fn)
    return fn


def _run(settings: dict, run_dir: Path, log=click.echo) -> dict:
    """Everything ``compress`` and ``demo`` do once the run folder exists; resumable stage by stage."""
    from .data import BatchLoader, load_data, random_crop_flip
    from .models import create_model

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
            _fail(f"cannot load --weights {settings['weights']} into {settings['model_name']}: {exc}")
    elif settings["pretrain_epochs"] > 0:
        cfg = TrainConfig(epochs=settings["pretrain_epochs"], lr=settings["pretrain_lr"], max_batches=settings["max_batches"],
                          checkpoint_every=settings.get("checkpoint_every", 0), progress=settings["progress"],
                          desc="pretrain")
        train_stage("pretrain", model, task, train, test, cfg, run_dir, config_fingerprint(settings), log=log)
    else:
        log("warning: no --weights and no --pretrain-epochs: compressing an untrained model")
    names = {f.name for f in fields(CompressConfig)}
    cfg = CompressConfig(**{k: v for k, v in settings.items() if k in names})
    result = compress(model, train, test, task=task, config=cfg, run_dir=run_dir, log=log)
    return result.report


def _validate(settings: dict) -> None:
    """Refuse bad settings before anything is written."""
    from .models import list_models
    from .ops import resolve_ops

    names = {f.name for f in fields(CompressConfig)}
    try:
        CompressConfig(**{k: v for k, v in settings.items() if k in names}).validate()
        resolve_ops(settings["ops"])
    except (ValueError, TypeError) as exc:
        _fail(str(exc))
    if settings["model_name"] not in list_models():
        _fail(f"unknown model {settings['model_name']!r}; registered models: {', '.join(list_models())}")
    if settings["batch_size"] < 1 or settings["batch_size"] % dist.world_size():
        _fail(f"--batch-size {settings['batch_size']} is the global batch: it must be a positive multiple of the "
              f"{dist.world_size()} process(es)")


def _read_run_json(path: Path) -> dict:
    try:
        value = read_json(path)
    except (OSError, ValueError) as exc:
        _fail(f"{path} is not readable JSON ({type(exc).__name__}: {exc}); the run folder is damaged")
    if not isinstance(value, dict):
        _fail(f"{path} should hold a JSON object, found {type(value).__name__}; the run folder is damaged")
    return value


def _resumed_settings(folder: Path, defaults: dict) -> dict:
    """config.json of a run folder, checked option by option as if it had been typed (missing: the default)."""
    raw = _read_run_json(folder / "config.json")
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
        _fail(f"{folder / 'config.json'} has unknown settings {', '.join(unknown)}: written by another lwdc version?")
    params = {p.name: p for p in compress_cmd.params}
    settings = dict(defaults)
    for key, value in raw.items():
        try:
            settings[key] = None if value is None else params[key].type.convert(value, params[key], None)
        except click.BadParameter as exc:
            _fail(f"{folder / 'config.json'}: setting {key!r}: {exc.message}")
    _validate(settings)
    return settings


def _vet_checkpoints(folder: Path, settings: dict) -> None:
    """Refuse a damaged, foreign or mismatched checkpoint before any work (data, profiling) starts."""
    from .runs import CheckpointError

    names = {f.name for f in fields(CompressConfig)}
    fingerprints = {"pretrain": config_fingerprint(settings),
                    "search": compress_fingerprint(CompressConfig(**{k: v for k, v in settings.items() if k in names}))}
    fingerprints["finetune"] = fingerprints["search"]
    for stage, fingerprint in fingerprints.items():
        path = folder / "checkpoints" / f"{stage}.pt"
        if path.exists():
            try:
                check_checkpoint(path, stage, fingerprint)
            except CheckpointError as exc:
                _fail(str(exc))


def _start(settings: dict, run_dir: str | None, resume: str | None) -> None:
    """Set up (or reopen) the run folder and run; under torchrun every rank runs this, only rank 0 writes."""
    distributed = dist.init_from_env()
    echo = click.echo if dist.is_main() else (lambda *a, **k: None)
    created = False
    if resume:
        folder = Path(resume)
        if not (folder / "config.json").exists():
            _fail(f"--resume {folder}: no config.json there; is it an lwdc run folder?")
        if (folder / "report.json").exists():
            report = _read_run_json(folder / "report.json")
            echo(f"{folder} finished earlier; not running it again.\n")
            echo(format_summary(report))
            return
        settings = _resumed_settings(folder, settings)
        _vet_checkpoints(folder, settings)
    else:
        folder = Path(run_dir or f"runs/{settings['model_name']}-{time.strftime('%Y%m%d-%H%M%S')}")
        if folder.exists() and any(folder.iterdir()):
            _fail(f"run folder {folder} exists and is not empty; pass --resume {folder} or another --run-dir")
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
        _fail(f"{type(exc).__name__}: {exc}")
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
    _start(settings, run_dir, resume)


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


def _run_as_module(folder: Path, shape: tuple[int, ...]) -> torch.nn.Module:
    """A run folder's derived model as ``nn.Module`` layers (per-layer costs need modules; model.pt2 has none):
    the registered model expanded as the run did, its choices forced, derived, and the saved weights loaded."""
    from .derive import derive
    from .models import create_model
    from .runs import load_checkpoint
    from .space import expand

    settings, report = read_json(folder / "config.json"), read_json(folder / "report.json")
    state = load_checkpoint(folder / "model_state.pt", "model")
    example = torch.randn(1, *shape)
    with torch.no_grad():
        num_classes = torch.export.load(str(folder / "model.pt2")).module()(example).shape[1]
    model = create_model(settings["model_name"], num_classes=num_classes, in_channels=shape[0], width=settings["width"])
    supernet = expand(model, example, report["config"]["ops"], include_pooling=report["config"].get("include_pooling", False))
    supernet.set_choices(state["choices"])
    derived = derive(supernet)
    derived.load_state_dict(state["state_dict"])
    return derived


@main.command("profile")
@click.argument("model", required=False)
@click.option("--model", "model_name", default=None, help="Registered model name (or give it as MODEL).")
@click.option("--width", default=1.0, show_default=True)
@click.option("--run", "run", type=click.Path(exists=True, file_okay=False), default=None,
              help="A finished run folder (or give it as MODEL): profile its model.pt2.")
@click.option("--input-shape", default="3,32,32", show_default=True, help="C,H,W (or C,L) of one sample.")
@click.option("--num-classes", default=10, show_default=True)
@click.option("--batch-size", default=1, show_default=True)
@click.option("--cost", "costs", multiple=True,
              help="Per-layer table with these costs (repeat or comma-separate): params, macs, latency[:onnxruntime], "
                   "systolic[:RxC][:ws|os][:risa].")
@click.option("--json", "as_json", is_flag=True)
def profile_cmd(model, model_name, width, run, input_shape, num_classes, batch_size, costs, as_json) -> None:
    """Parameters, MACs and measured CPU latency of MODEL (a registered name or a run folder); with --cost, a
    per-layer table (op, params, MACs, measured latency, systolic cycles and PE utilisation)."""
    if model:
        run, model_name = (model, None) if Path(model).is_dir() else (None, model)
    try:
        shape = tuple(int(v) for v in input_shape.split(","))
    except ValueError:
        _fail(f"--input-shape must be comma-separated integers like 3,32,32; got {input_shape!r}")
    specs = [c.strip() for value in costs for c in value.split(",") if c.strip()]
    if run:
        report = read_json(Path(run) / "report.json")
        shape = tuple(report["example_input_shape"][1:])
        net = torch.export.load(str(Path(run) / "model.pt2")).module()
        if specs:
            try:
                net = _run_as_module(Path(run), shape)
            except (OSError, KeyError, ValueError, RuntimeError) as exc:
                _fail(f"cannot rebuild the layers of {run} for a per-layer table ({type(exc).__name__}: {exc}); "
                      "profile it without --cost")
    elif model_name:
        from .models import create_model, list_models
        if model_name not in list_models():
            _fail(f"unknown model {model_name!r}; registered models: {', '.join(list_models())}")
        net = create_model(model_name, num_classes=num_classes, in_channels=shape[0], width=width)
    else:
        _fail("give MODEL (a registered name or a run folder), --model NAME or --run RUN_DIR")
    if specs:
        from .costs.report import format_layer_report, layer_report
        try:
            table = layer_report(net, torch.randn(1, *shape), specs, batch_size=batch_size)
        except ValueError as exc:
            _fail(str(exc))
        click.echo(json.dumps(table) if as_json else format_layer_report(table) +
                   f"\nlatency: batch {batch_size}, 1 thread, each layer alone; total: the whole network")
        return
    result = profile_model(net, torch.randn(batch_size, *shape))
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        click.echo(f"params {result.params:,}  MACs {result.macs:,}  latency {result.latency_ms:.3f} ms "
                   f"(batch {batch_size}, PyTorch eager, {torch.get_num_threads()} threads)")


def _load_for_export(model: str, width: float, weights: str | None, input_shape: str | None, num_classes: int):
    """MODEL is a run folder, a .pt2 file or a registered model name; returns (model, one-sample shape, data)."""
    from .models import create_model, list_models

    path, data = Path(model), None
    if path.is_dir():
        if not (path / "model.pt2").exists():
            _fail(f"{path} has no model.pt2: is it a finished lwdc run folder?")
        data = read_json(path / "config.json").get("data") if (path / "config.json").exists() else None
        path = path / "model.pt2"
    if path.suffix == ".pt2" and path.is_file():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation notes
                program = torch.export.load(str(path))
        except Exception as exc:
            _fail(f"cannot load {path} as a torch.export program: {exc}")
        placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name
                           in {s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"})
        return program, tuple(int(d) for d in placeholder.meta["val"].shape[1:]), data
    if model not in list_models():
        _fail(f"MODEL {model!r} is neither a run folder, a .pt2 file nor a registered model "
              f"({', '.join(list_models())})")
    shape = _parse_shape(input_shape or "3,32,32")
    net = create_model(model, num_classes=num_classes, in_channels=shape[0], width=width)
    if weights:
        try:
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except Exception as exc:
            _fail(f"cannot load --weights {weights} into {model}: {exc}")
    return net.eval(), shape, data


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        _fail(f"--input-shape must be comma-separated integers like 3,32,32; got {text!r}")
        raise


@main.command("export")
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["c", "onnx"]), default="c", show_default=True)
@click.option("--out", default=None, help="Output folder (C) or .onnx file (default: next to MODEL / exports/).")
@click.option("--int8", is_flag=True, help="C only: post-training static int8 quantisation.")
@click.option("--calib", "calib_data", default=None,
              help="Data for int8 calibration (train split) and for the accuracy check (test split); default: the "
                   "run's data, else cifar10-subset.")
@click.option("--calib-samples", default=256, show_default=True)
@click.option("--calibration", type=click.Choice(["minmax", "mse"]), default="minmax", show_default=True,
              help="int8 activation ranges: observed extremes, or the clipping with least quantisation error.")
@click.option("--eval-samples", default=1000, show_default=True, help="Test samples for the accuracy check (0: skip).")
@click.option("--name", default="model", show_default=True, help="C prefix: NAME.c, NAME.h, NAME_run().")
@click.option("--width", default=1.0, show_default=True, help="Registered models: width multiplier.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Registered models: a state_dict to load.")
@click.option("--input-shape", default=None, help="Registered models: C,H,W (or C,L) of one sample.")
@click.option("--num-classes", default=10, show_default=True)
@click.option("--cache-dir", default=None)
@click.option("--force", is_flag=True, help="Replace an existing output.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Compile the C and compare it with PyTorch (needs a C compiler).")
def export_cmd(model, fmt, out, int8, calib_data, calib_samples, calibration, eval_samples, name, width, weights,
               input_shape, num_classes, cache_dir, force, verify) -> None:
    """Export MODEL (a run folder, a .pt2 file or a registered model name) as ONNX or a C99 library."""
    from .export import export_onnx
    from .export.c import (
        CompilerError,
        ExportError,
        UnsupportedLayerError,
        evaluate_c,
        export_c,
        find_compiler,
    )

    if int8 and fmt != "c":
        _fail("--int8 applies to --format c only")
    net, shape, run_data = _load_for_export(model, width, weights, input_shape, num_classes)
    base = Path(model).parent / Path(model).name if Path(model).is_dir() else Path("exports") / Path(model).stem
    torch.manual_seed(0)
    example = torch.randn(4, *shape)
    bundle = None
    if int8 or (fmt == "c" and eval_samples > 0):
        from .data import load_data
        try:
            bundle = load_data(calib_data or run_data or "cifar10-subset", cache_dir=cache_dir)
        except (ValueError, OSError) as exc:
            _fail(f"--calib: {exc}")
        if tuple(bundle.input_shape) != shape:
            _fail(f"--calib data has samples of shape {tuple(bundle.input_shape)}, the model takes {shape}")
        example = torch.stack([bundle.test[i][0] for i in range(4)])
    try:
        if fmt == "onnx":
            target = Path(out) if out else Path(str(base) + ".onnx") if not Path(model).is_dir() else base / "model.onnx"
            if target.exists() and not force:
                _fail(f"{target} exists; pass --force to replace it")
            info = export_onnx(net, example, target)
            click.echo(f"wrote {target} ({info['bytes']:,} bytes, opset {info['opset']}); onnxruntime matches "
                       f"PyTorch to {info['max_abs_diff_vs_pytorch']:.2g}")
            return
        target = Path(out) if out else (base / ("c_int8" if int8 else "c") if Path(model).is_dir()
                                         else Path(f"{base}_{'int8' if int8 else 'c'}"))
        calib = None
        if int8:
            n = min(calib_samples, len(bundle.train))
            calib = torch.stack([bundle.train[i][0] for i in range(n)])
        result = export_c(net, example, target, int8=int8, calib=calib, calibration=calibration, name=name,
                          overwrite=force, verify=verify)
    except (UnsupportedLayerError, ExportError, CompilerError, FileExistsError, ValueError) as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    s = result.summary
    if bundle is not None and eval_samples > 0 and find_compiler():
        n = min(eval_samples, len(bundle.test))
        xs = torch.stack([bundle.test[i][0] for i in range(n)])
        ys = torch.tensor([bundle.test[i][1] for i in range(n)])
        with torch.no_grad():
            module = net.module() if isinstance(net, torch.export.ExportedProgram) else net
            s["accuracy_pytorch"] = float((module(xs).argmax(1) == ys).float().mean() * 100)
        s["accuracy_c"] = evaluate_c(result, xs, ys)
        if int8:
            with tempfile.TemporaryDirectory() as tmp:
                s["accuracy_c_float"] = evaluate_c(export_c(net, example, Path(tmp) / "f", verify=False), xs, ys)
        s["eval_samples"] = n
        write_json(target / "deploy.json", s)
    click.echo(format_deploy(s, target))


def format_deploy(s: dict, target: Path) -> str:
    """The deployment summary printed after ``lwdc export --format c``."""
    kb = lambda b: f"{b / 1024:,.1f} KiB"  # noqa: E731
    lines = [f"wrote {target}/ ({s['name']}.c, {s['name']}.h, main.c, deploy.json): {s['precision']}, "
             f"{s['nodes']} kernels",
             f"  MACs {s['macs']:,}   params {s['params']:,}   flash {kb(s['flash_bytes'])}",
             f"  peak RAM {kb(s['peak_ram_bytes'])} (arena {kb(s['arena_bytes'])} + scratch {kb(s['scratch_bytes'])}); "
             f"lower bound {kb(s['lower_bound_bytes'])}; naive sum of activations {kb(s['naive_bytes'])}"]
    v = s.get("verified")
    if v is None:
        lines.append("  not compiled (no C compiler or --no-verify)")
    elif "max_abs_diff_vs_pytorch" in v:
        lines.append(f"  compiled with -Wall -Wextra -Werror; output matches PyTorch to {v['max_abs_diff_vs_pytorch']:.2g}")
    else:
        lines.append("  compiled with -Wall -Wextra -Werror; int8 output equals the Python integer reference")
    if "accuracy_c" in s:
        acc = f"  accuracy on {s['eval_samples']} test samples: PyTorch {s['accuracy_pytorch']:.2f}%, C {s['accuracy_c']:.2f}%"
        if "accuracy_c_float" in s:
            acc += f" (int8), float C {s['accuracy_c_float']:.2f}%"
        lines.append(acc)
    return "\n".join(lines)


@main.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Output folder (default RUN_DIR/report).")
@click.option("--runs", multiple=True, type=click.Path(),
              help="More run folders, or folders holding them, for the trade-off plot (repeatable).")
@click.option("--data", default=None, help="Data set for saliency/similarity (default: the one in config.json).")
@click.option("--samples", default=4, show_default=True, help="Inputs shown in the saliency maps.")
@click.option("--cka-samples", default=500, show_default=True)
@click.option("--probe-train", default=2000, show_default=True, help="Training samples of each linear probe.")
@click.option("--probe-test", default=1000, show_default=True)
@click.option("--smoothgrad-samples", default=25, show_default=True)
@click.option("--seed", default=0, show_default=True)
def report_cmd(run_dir, out, runs, data, samples, cka_samples, probe_train, probe_test, smoothgrad_samples,
               seed) -> None:
    """Write one self-contained HTML page (and its PNGs) about a finished compress run."""
    from .analysis import ReportError, build_report

    try:
        path = build_report(run_dir, out, runs, data=data, samples=samples, cka_samples=cka_samples,
                            probe_train=probe_train, probe_test=probe_test,
                            smoothgrad_samples=smoothgrad_samples, seed=seed, log=click.echo)
    except ReportError as exc:
        _fail(str(exc))
    click.echo(f"open {path} in a browser (self-contained: images embedded, nothing fetched)")


@main.command()
def ops() -> None:
    """List operator names and named operator sets."""
    click.echo("operator patterns: " + ", ".join(op_patterns()))
    for name, members in OP_SETS.items():
        click.echo(f"{name:>8}: {', '.join(members)}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
