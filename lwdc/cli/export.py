"""`lwdc export`: ONNX or a C99 library, with the deployment summary."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click
import torch

from ..runs import write_json
from ..tasks import get_task
from .base import TRUST_PT2_HELP, fail, load_model_arg, main


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
@click.option("--trust-pt2", is_flag=True, help=TRUST_PT2_HELP)
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Compile the C and compare it with PyTorch (needs a C compiler).")
def export_cmd(model, fmt, out, int8, calib_data, calib_samples, calibration, eval_samples, name, width, weights,
               input_shape, num_classes, cache_dir, force, trust_pt2, verify) -> None:
    """Export MODEL (a run folder, a .pt2 file or a registered model name) as ONNX or a C99 library."""
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
    net, shape, run_data, task_name = load_model_arg(model, width=width, weights=weights, input_shape=input_shape,
                                          num_classes=num_classes, trust_pt2=trust_pt2)
    base = Path(model).parent / Path(model).name if Path(model).is_dir() else Path("exports") / Path(model).stem
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
        fail(f"{type(exc).__name__}: {exc}")
    s = result.summary
    if bundle is not None and eval_samples > 0 and find_compiler():
        n = min(eval_samples, len(bundle.test))
        xs = torch.stack([bundle.test[i][0] for i in range(n)])
        ys = bundle.test.targets(torch.arange(n))
        task = get_task(task_name)
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
             f"  peak RAM {kb(s['peak_ram_bytes'])} (arena {kb(s['arena_bytes'])} + scratch {kb(s['scratch_bytes'])}); "
             f"lower bound {kb(s['lower_bound_bytes'])}; naive sum of activations {kb(s['naive_bytes'])}"]
    v = s.get("verified")
    if v is None:
        lines.append("  not compiled (no C compiler or --no-verify)")
    elif "max_abs_diff_vs_pytorch" in v:
        lines.append(f"  compiled with -Wall -Wextra -Werror; output matches PyTorch to {v['max_abs_diff_vs_pytorch']:.2g}")
    else:
        lines.append("  compiled with -Wall -Wextra -Werror; int8 output equals the Python integer reference")
    m = s.get("metric", "accuracy")
    if f"{m}_c" in s:
        acc = f"  {m} on {s['eval_samples']} test samples: PyTorch {s[f'{m}_pytorch']:.2f}, C {s[f'{m}_c']:.2f}"
        if f"{m}_c_float" in s:
            acc += f" (int8), float C {s[f'{m}_c_float']:.2f}"
        lines.append(acc)
    return "\n".join(lines)
