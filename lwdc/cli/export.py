"""`lwdc export`: ONNX or a C99 library, with the deployment summary."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import click
import torch

from ..runs import write_json
from ..tasks import get_task
from .base import MODEL_HELP, TRUST_PT2_HELP, fail, load_model_arg, main


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
@click.option("--bias-correction", is_flag=True,
              help="int8: after calibration, move each conv's int32 bias by the mean output shift quantisation "
                   "causes on the calibration samples (Nagel et al. 2019); for regression outputs (landmarks) it "
                   "removed most of the int8 error.")
@click.option("--eval-samples", default=1000, show_default=True, help="Test samples for the accuracy check (0: skip).")
@click.option("--name", default="model", show_default=True, help="C prefix: NAME.c, NAME.h, NAME_run().")
@click.option("--width", default=1.0, show_default=True, help="Registered models and factories: width multiplier.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Registered models and factories: a state_dict to load.")
@click.option("--input-shape", default=None,
              help="Registered models and factories: C,H,W (or C,L) of one sample (default 3,32,32).")
@click.option("--num-classes", default=10, show_default=True)
@click.option("--cache-dir", default=None)
@click.option("--force", is_flag=True, help="Replace an existing output.")
@click.option("--trust-pt2", is_flag=True, help=TRUST_PT2_HELP)
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Compile the C and compare it with PyTorch (needs a C compiler).")
@click.option("--weight-storage", type=click.Choice(["dense", "startup", "on-the-fly"]), default="dense",
              show_default=True,
              help="Float C: store layers of few distinct values (after `lwdc share`) as codebook + packed codes, "
                   "decoded into RAM at the first run (startup) or before each layer (on-the-fly, less RAM).")
@click.option("--target", "c_target", default="host", show_default=True,
              help="C: where --verify compiles and runs it: host, cortex-m4, cortex-m7 or cortex-m33 (arm-none-eabi-gcc, run "
                   "on QEMU's MPS2 board; deploy.json then gets the library's flash and RAM from arm-none-eabi-size).")
@click.option("--kernels", type=click.Choice(["portable", "cmsis-nn"]), default="portable", show_default=True,
              help="int8 C: lwdc's own portable kernels, or calls to Arm's CMSIS-NN for convolutions, residual adds "
                   "and max/average pooling (bit-exact with the portable build; needs --cmsis-nn).")
@click.option("--cmsis-nn", "cmsis_nn", type=click.Path(exists=True, file_okay=False), default=None,
              help="With --kernels cmsis-nn: your CMSIS-NN checkout (the folder holding Include/ and Source/); it is "
                   "compiled with -DCMSIS_NN_USE_SINGLE_ROUNDING and never copied into the export.")
def export_cmd(model, fmt, out, int8, calib_data, calib_samples, calibration, bias_correction, eval_samples, name,
               width, weights, input_shape, num_classes, cache_dir, force, trust_pt2, verify, weight_storage,
               c_target, kernels, cmsis_nn) -> None:
    """Export MODEL as ONNX or a C99 library (run it with `lwdc run-c OUT`).

    MODEL is a run folder (its compressed model), a registered model name (--weights for its state_dict), your own
    factory as path/to/file.py:factory or package.module:factory (imported and run: name only code you trust), or
    a .pt2 file you trust (--trust-pt2)."""
    from ..export import export_onnx
    from ..export.c import (
        CompilerError,
        ExportError,
        UnsupportedLayerError,
        evaluate_c,
        export_c,
        find_compiler,
    )

    if int8 and fmt != "c":
        fail("--int8 applies to --format c only")
    from ..export.c.targets import targets
    if c_target not in targets():
        fail(f"--target {c_target!r} is unknown; known: {', '.join(targets())}")
    if weight_storage != "dense" and (int8 or fmt != "c"):
        fail("--weight-storage codes the weights of a float C build; leave it at dense with --int8 or ONNX")
    if kernels == "cmsis-nn" and not (int8 and fmt == "c"):
        fail("--kernels cmsis-nn runs int8 kernels: add --int8 (and --format c)")
    if kernels == "cmsis-nn" and cmsis_nn is None:
        fail("--kernels cmsis-nn needs --cmsis-nn PATH: a CMSIS-NN checkout (github.com/ARM-software/CMSIS-NN) "
             "holding Include/ and Source/")
    arg = load_model_arg(model, width=width, weights=weights, input_shape=input_shape, num_classes=num_classes,
                         trust_pt2=trust_pt2)
    net, shape, run_data, task_name = arg
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model.replace(".py:", ":")).name).strip("-.") or "model"
    base = Path(model).parent / Path(model).name if Path(model).is_dir() else Path("exports") / label
    torch.manual_seed(0)
    example = torch.randn(4, *shape)
    bundle = None
    if int8 or (fmt == "c" and eval_samples > 0):
        from ..data import load_data
        try:
            bundle = load_data(calib_data or run_data or "cifar10-subset", cache_dir=cache_dir)
        except (ValueError, OSError) as exc:
            fail(f"--calib: {exc}")
        if tuple(bundle.input_shape) != shape:
            fail(f"--calib data has samples of shape {tuple(bundle.input_shape)}, the model takes {shape}")
        example = torch.stack([bundle.test[i][0] for i in range(4)])
    try:
        if fmt == "onnx":
            target = Path(out) if out else Path(str(base) + ".onnx") if not Path(model).is_dir() else base / "model.onnx"
            if target.exists() and not force:
                fail(f"{target} exists; pass --force to replace it")
            info = export_onnx(net, example, target)
            click.echo(f"wrote {target} ({info['bytes']:,} bytes, opset {info['opset']}); onnxruntime matches "
                       f"PyTorch to {info['max_abs_diff_vs_pytorch']:.2g} (limit {info['tolerance']['limit']:.2g}: "
                       f"{info['tolerance']['rule']})")
            return
        target = Path(out) if out else (base / ("c_int8" if int8 else "c") if Path(model).is_dir()
                                         else Path(f"{base}_{'int8' if int8 else 'c'}"))
        calib = None
        if int8:
            n = min(calib_samples, len(bundle.train))
            calib = torch.stack([bundle.train[i][0] for i in range(n)])
        source = {**arg.source, "task": task_name}
        if bundle is not None or run_data or calib_data:
            source["data"] = str(calib_data or run_data or "cifar10-subset")
        if bundle is not None:
            source["normalization"] = {"mean": list(bundle.test.mean), "std": list(bundle.test.std)}
        click.echo(f"exporting {model} to C ({'int8' if int8 else 'float32'}) in {target}")
        result = export_c(net, example, target, int8=int8, calib=calib, calibration=calibration,
                          bias_correction=bias_correction, name=name,
                          overwrite=force, verify=verify, source=source, weights=weight_storage, target=c_target,
                          kernels=kernels, cmsis_nn=cmsis_nn, log=click.echo)
    except (UnsupportedLayerError, ExportError, CompilerError, FileExistsError, ValueError) as exc:
        fail(f"{type(exc).__name__}: {exc}")
    s = result.summary
    if bundle is not None and eval_samples > 0 and find_compiler(c_target):
        n = min(eval_samples, len(bundle.test))
        xs = torch.stack([bundle.test[i][0] for i in range(n)])
        ys = bundle.test.targets(torch.arange(n))
        task = get_task(task_name)
        click.echo(f"  evaluating the C library on {n} test samples" + (" (and a float C build beside it)" if int8
                                                                          else "") + "...")
        with torch.no_grad():
            module = net.module() if isinstance(net, torch.export.ExportedProgram) else net
            s["metric"] = task.primary
            s[f"{task.primary}_pytorch"] = task.summarize(task.batch_stats(module(xs), ys))[task.primary]
        s[f"{task.primary}_c"] = evaluate_c(result, xs, ys, task)[task.primary]
        if int8:
            with tempfile.TemporaryDirectory() as tmp:
                float_c = export_c(net, example, Path(tmp) / "f", verify=False)
                s[f"{task.primary}_c_float"] = evaluate_c(float_c, xs, ys, task)[task.primary]
        s["eval_samples"] = n
        write_json(target / "deploy.json", s)
    click.echo(format_deploy(s, target))


def format_deploy(s: dict, target: Path) -> str:
    """The deployment summary printed after ``lwdc export --format c``."""
    kb = lambda b: f"{b / 1024:,.1f} KiB"  # noqa: E731
    lines = [f"wrote {target}/ ({s['name']}.c, {s['name']}.h, main.c, deploy.json): {s['precision']}, "
             f"{s['nodes']} kernels",
             f"  MACs {s['macs']:,}   params {s['params']:,}   flash {kb(s['flash_bytes'])}",
             f"  peak RAM {kb(s['peak_ram_bytes'])} (arena {kb(s['arena_bytes'])} + scratch {kb(s['scratch_bytes'])}"
             + (f" + decoded weights {kb(s['weights']['ram_bytes'])}" if s.get("weights", {}).get("ram_bytes") else "")
             + f"); lower bound {kb(s['lower_bound_bytes'])}; naive sum of activations {kb(s['naive_bytes'])}"]
    w = s.get("weights") or {}
    if w.get("mode", "dense") != "dense":
        lines.append(f"  weights: {len(w['coded_layers'])} layer(s) stored as codebook + packed codes, decoded "
                     + ("at the first run" if w["mode"] == "startup" else "before each layer, every run"))
    v = s.get("verified")
    where = "" if s.get("target", "host") == "host" else f" for {s['target']}, run in QEMU,"
    if v is None:
        lines.append("  not compiled (no C compiler" + (" or QEMU" if where else "") + ", or --no-verify)")
    elif "max_abs_diff_vs_pytorch" in v:
        lines.append(f"  compiled with -Wall -Wextra -Werror{where}; output matches PyTorch to "
                     f"{v['max_abs_diff_vs_pytorch']:.2g} (limit {v.get('limit', 0):.2g}: {s['tolerance']['rule']})")
    else:
        lines.append(f"  compiled with -Wall -Wextra -Werror{where}; int8 output equals the Python integer reference")
    linked = s.get("linked")
    if linked:
        lines.append(f"  {linked['target']} object ({linked['tool']} -A): flash {kb(linked['flash_bytes'])} (code "
                     f"{kb(linked['code_bytes'])} + constants {kb(linked['const_bytes'])} + data "
                     f"{kb(linked['data_bytes'])}), RAM {kb(linked['ram_bytes'])} without the stack")
    m = s.get("metric", "accuracy")
    if f"{m}_c" in s:
        acc = f"  {m} on {s['eval_samples']} test samples: PyTorch {s[f'{m}_pytorch']:.2f}, C {s[f'{m}_c']:.2f}"
        if f"{m}_c_float" in s:
            acc += f" (int8), float C {s[f'{m}_c_float']:.2f}"
        lines.append(acc)
    return "\n".join(lines)


@main.command("run-c")
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option("--data", default=None,
              help="Data whose test split is fed to the program (default: the data set deploy.json records).")
@click.option("--samples", default=100, show_default=True, type=click.IntRange(min=1),
              help="Test samples to run (a class-stratified, seeded choice).")
@click.option("--model", "model", default=None,
              help="The PyTorch model to compare with (default: the one deploy.json records, when it is a run folder "
                   "or a registered model). " + MODEL_HELP)
@click.option("--width", default=1.0, show_default=True, help="With --model NAME or a factory: width multiplier.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="With --model NAME or a factory: a state_dict to load.")
@click.option("--trust-pt2", is_flag=True, help=TRUST_PT2_HELP)
@click.option("--keep", type=click.Path(file_okay=False), default=None,
              help="Keep INPUT.bin, OUTPUT.bin and the compiled program in this folder.")
@click.option("--atol", default=1e-4, show_default=True,
              help="float32 exports: accept differences from PyTorch up to atol + rtol * max|PyTorch output| "
                   "(exit 1 above it).")
@click.option("--rtol", default=1e-4, show_default=True, help="See --atol.")
@click.option("--cache-dir", default=None)
def run_c_cmd(export_dir, data, samples, model, width, weights, trust_pt2, keep, atol, rtol,
              cache_dir) -> None:
    """Build and run an exported C library on test data as firmware would call it, and compare with PyTorch.

    Writes INPUT.bin in the layout main.c reads (samples back to back, C order, normalised as the model takes
    them; int8 exports: quantised with deploy.json's input scale and zero point), compiles main.c and NAME.c,
    runs `./NAME [--int8] INPUT.bin OUTPUT.bin`, reads OUTPUT.bin (int8: dequantised) and compares it with the
    PyTorch model on the same inputs. This compiles and runs the C in EXPORT_DIR: use folders you exported or
    trust.
    """
    from ..data import load_data
    from ..export.c import CompilerError, find_compiler, read_deploy, run_c
    from ..export.tolerance import Tolerance
    from ..train import stratified_indices

    try:
        info = read_deploy(export_dir)
    except ValueError as exc:
        fail(str(exc))
    if not find_compiler(info.get("target", "host")):
        fail("no C compiler found (tried $CC, cc, gcc, clang): install gcc or set CC")
    source = info.get("source") or {}
    data_source = data or source.get("data")
    if not data_source:
        fail(f"{Path(export_dir) / 'deploy.json'} records no data set: pass --data (a registered data set or a "
             "folder / .tar.gz, as for lwdc compress)")
    try:
        bundle = load_data(str(data_source), cache_dir=cache_dir)
    except (ValueError, OSError) as exc:
        fail(f"--data {data_source}: {exc}")
    if list(bundle.input_shape) != list(info["input_shape"]):
        fail(f"--data has samples of shape {tuple(bundle.input_shape)}, the exported model takes "
             f"{tuple(info['input_shape'])}")
    norm = source.get("normalization")
    if norm and (list(norm["mean"]) != list(bundle.test.mean) or list(norm["std"]) != list(bundle.test.std)):
        click.echo("warning: this data is normalised differently from the data the export recorded; the C library "
                   "expects inputs normalised as at export time")
    test = bundle.test
    idx = stratified_indices(test.y if test.has_labels else None, samples, len(test), seed=0)
    xs, ys = test.normalize(test.x[idx]), test.targets(idx)

    reference, why_not = None, None
    if model:
        reference = load_model_arg(model, width=width, weights=weights,
                                   input_shape=",".join(map(str, info["input_shape"])),
                                   num_classes=int(torch.tensor(info["output_shape"]).prod()),
                                   trust_pt2=trust_pt2).model
    elif source.get("kind") == "run" and Path(source.get("path", "")).is_dir():
        reference = load_model_arg(source["path"], which=source.get("which", "model")).model
    elif source.get("kind") == "registered" and (source.get("weights") is None or Path(source["weights"]).is_file()):
        reference = load_model_arg(source["name"], width=source.get("width", 1.0), weights=source.get("weights"),
                                   input_shape=",".join(map(str, source.get("input_shape") or info["input_shape"])),
                                   num_classes=source.get("num_classes", 10)).model
    else:
        kind = source.get("kind")
        why_not = ("deploy.json records no model" if not kind else
                   f"deploy.json's model ({source.get('path') or source.get('name')}) is "
                   + ({"pt2": "a .pt2 file", "factory": "built by code",
                       "run": "a run folder that is not here"}.get(kind, kind))
                   + ": pass --model to compare with PyTorch")
    try:
        res = run_c(export_dir, xs, reference, work_dir=keep)
    except (CompilerError, ValueError) as exc:
        fail(f"{type(exc).__name__}: {exc}")
    int8 = res.precision == "int8"
    q = info.get("input_quant") or {}
    shown = [f"./{info['name']}", *(["--int8"] if int8 else []), "INPUT.bin", "OUTPUT.bin"]
    click.echo(f"compiled {Path(export_dir) / 'main.c'} + {info['name']}.c and ran `{' '.join(shown)}` on {len(xs)} "
               f"test samples of {data_source} ({res.precision}"
               + (f"; inputs quantised with scale {q['scale']:.6g}, zero point {q['zero_point']}" if int8 else "")
               + ")")
    task = get_task(source.get("task", "classification"))
    metric = task.primary
    try:
        c_metric = task.summarize(task.batch_stats(torch.from_numpy(res.outputs), ys))[metric]
    except Exception:       # noqa: BLE001 - a task whose metric does not fit these outputs: no metric line
        c_metric = None
    if res.pytorch is not None:
        line = f"  C vs PyTorch: max |difference| {res.max_abs_diff:.3g}"
        if res.top1_agreement is not None:
            line += f", same top-1 on {100 * res.top1_agreement:.1f}% of samples"
        if c_metric is not None:
            pt = task.summarize(task.batch_stats(torch.from_numpy(res.pytorch), ys))[metric]
            line += f"; {metric}: PyTorch {pt:.2f}, C {c_metric:.2f}"
        click.echo(line)
    else:
        click.echo(f"  not compared with PyTorch: {why_not}"
                   + (f"; {metric} of the C output {c_metric:.2f}" if c_metric is not None else ""))
    if keep:
        click.echo(f"  kept {Path(keep) / 'INPUT.bin'}, {Path(keep) / 'OUTPUT.bin'} and the program "
                   f"{Path(keep) / info['name']} (run it again: {Path(keep) / info['name']}{' --int8' if int8 else ''} "
                   "INPUT.bin OUTPUT.bin)")
    if res.pytorch is not None and not int8:
        check = Tolerance(atol, rtol).verdict(res.max_abs_diff, res.pytorch)
        if not check["within"]:
            fail(f"the float32 C output differs from PyTorch by {res.max_abs_diff:.3g} (> {check['limit']:.3g}: "
                 f"{check['rule']})")
