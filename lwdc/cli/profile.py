"""`lwdc profile` and `lwdc ops`: what a model costs and which operators exist."""
from __future__ import annotations

import json
import statistics

import click
import torch

from ..ops import OP_SETS, op_patterns
from ..profiling import compare_latency
from ..profiling import profile as profile_model
from ..summary import format_latency
from .base import MODEL_HELP, TRUST_PT2_HELP, fail, load_model_arg, main


@main.command("profile")
@click.argument("model", required=False)
@click.option("--model", "model_name", default=None, help="The same as MODEL (kept for older scripts).")
@click.option("--width", default=1.0, show_default=True)
@click.option("--run", "run", type=click.Path(exists=True, file_okay=False), default=None,
              help="A finished run folder (or give it as MODEL): profile its compressed model.")
@click.option("--original", is_flag=True, help="With a run folder: profile its original model instead.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Registered models and factories: a state_dict to load.")
@click.option("--input-shape", default=None, help="C,H,W (or C,L) of one sample (default 3,32,32; a run knows its own).")
@click.option("--num-classes", default=10, show_default=True)
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--rounds", default=15, show_default=True, type=click.IntRange(min=1),
              help="Timing rounds (a run folder: original and compressed alternating in each).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="Intra-op threads while timing (PyTorch and onnxruntime).")
@click.option("--cost", "costs", multiple=True,
              help="Per-layer table with these costs (repeat or comma-separate): params, macs, latency[:onnxruntime], "
                   "systolic[:RxC][:ws|os][:risa].")
@click.option("--trust-pt2", is_flag=True, help=TRUST_PT2_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.option("--target", "mcu", default=None,
              help="Instead of CPU latency: executed instructions per layer and per inference of the C export on "
                   "an emulated core (cortex-m4, cortex-m7, cortex-m33; QEMU -icount, resolution 40 instructions).")
@click.option("--int8", is_flag=True, help="With --target: the int8 build (calibrated on random inputs: the "
                                           "instruction count does not depend on the scales).")
@click.option("--cmsis-nn", "cmsis_nn", type=click.Path(exists=True, file_okay=False), default=None,
              help="With --target and --int8: count the build that calls Arm's CMSIS-NN (your checkout holding "
                   "Include/ and Source/) instead of lwdc's portable kernels.")
def profile_cmd(model, model_name, width, run, original, weights, input_shape, num_classes, batch_size, rounds,
                threads, costs, trust_pt2, as_json, mcu, int8, cmsis_nn) -> None:
    """Parameters, MACs and measured CPU latency of MODEL; with --cost, a per-layer table (op, params, MACs,
    measured latency, systolic cycles and PE utilisation).

    Latency is the median over --rounds rounds with the range of the per-round medians, in PyTorch eager and (where
    installed) onnxruntime. For a run folder the original and the compressed model alternate in every round and
    the ratio is the median of the per-round ratios, with their range.
    """
    target = run or model or model_name
    if not target:
        fail(f"give MODEL. {MODEL_HELP}")
    specs = [c.strip() for value in costs for c in value.split(",") if c.strip()]
    which = "original" if original else "model"
    arg = load_model_arg(target, width=width, weights=weights, input_shape=input_shape, num_classes=num_classes,
                         trust_pt2=trust_pt2, which=which)
    net, shape = arg.model, arg.shape
    if isinstance(net, torch.export.ExportedProgram):
        if specs:
            fail("a per-layer table needs the model's layers; a .pt2 program has none: profile a run folder instead")
        net = net.module()
    if specs:
        from ..costs.report import format_layer_report, layer_report
        try:
            table = layer_report(net, torch.randn(1, *shape), specs, batch_size=batch_size)
        except ValueError as exc:
            fail(str(exc))
        click.echo(json.dumps(table) if as_json else format_layer_report(table) +
                   f"\nlatency: batch {batch_size}, 1 thread, each layer alone; total: the whole network")
        return
    if mcu:
        _instructions(net, shape, mcu, int8, as_json, cmsis_nn)
        return
    x = torch.randn(batch_size, *shape)
    paired = arg.source.get("kind") == "run" and not original
    try:
        result = profile_model(net, x, latency=False)
        baseline = None
        if paired:
            from ..runs import Run
            baseline = Run.open_finished(target).load_model("original")
        timing = compare_latency(baseline if paired else net, net if paired else None, x, rounds=rounds,
                                 threads=threads)
    except Exception as exc:
        fail(f"cannot run {target} on inputs of shape {(batch_size, *shape)}: {type(exc).__name__}: "
             f"{str(exc).splitlines()[0][:300] if str(exc) else ''}")
    key = "b" if paired else "a"
    eager = timing.eager
    rounds_ms = getattr(eager, f"{key}_rounds")
    if as_json:
        click.echo(json.dumps({**result.as_dict(), "latency_ms": statistics.median(rounds_ms),
                               "latency_range_ms": [min(rounds_ms), max(rounds_ms)], "latency": timing.as_dict()}))
        return
    click.echo(f"params {result.params:,}  MACs {result.macs:,}")
    if paired:
        click.echo("\n".join(format_latency(timing.as_dict())))
    else:
        click.echo(f"latency: batch {batch_size}, {threads} thread(s), median of {rounds} rounds "
                   "[lowest-highest round]")
        for name, t in timing.backends.items():
            click.echo(f"  {name}: {t.a_ms:.3f} ms [{min(t.a_rounds):.3f}-{max(t.a_rounds):.3f}]")
        for note in timing.notes:
            click.echo(f"  {note}")


def _instructions(net, shape, target: str, int8: bool, as_json: bool, cmsis_nn=None) -> None:
    import tempfile
    from pathlib import Path

    from ..export import export_c
    from ..export.c import CompilerError, ExportError, UnsupportedLayerError
    from ..export.c.instructions import count_instructions
    from ..export.c.targets import get_target, targets

    if target not in targets() or not get_target(target).semihosting:
        fail(f"--target {target!r}: instruction counts need an emulated core: "
             + ", ".join(t for t in targets() if get_target(t).semihosting))
    if cmsis_nn is not None and not int8:
        fail("--cmsis-nn counts the int8 build: add --int8")
    torch.manual_seed(0)
    x = torch.randn(16, *shape)
    try:
        with tempfile.TemporaryDirectory(prefix="lwdc-profile-") as tmp:
            export = export_c(net, x, Path(tmp) / "c", int8=int8, calib=x, verify=False, target=target,
                              kernels="cmsis-nn" if cmsis_nn else "portable", cmsis_nn=cmsis_nn)
            counts = count_instructions(export, x[0])
    except (UnsupportedLayerError, ExportError, CompilerError, ValueError) as exc:
        fail(f"{type(exc).__name__}: {exc}")
    if as_json:
        click.echo(json.dumps(counts))
        return
    total = counts["instructions"]
    click.echo(f"{target}, {counts['precision']} ({counts['kernels']} kernels): {total:,} instructions per inference "
               f"({counts['method']})")
    click.echo(f"{'node':>4}  {'op':<12} {'instructions':>14}  share  layer")
    for n in counts["per_node"]:
        click.echo(f"{n['node']:>4}  {n['op']:<12} {n['instructions']:>14,}  {100 * n['instructions'] / max(total, 1):4.1f}%"
                   f"  {n['where']}")


@main.command()
def ops() -> None:
    """List operator names and named operator sets."""
    click.echo("operator patterns: " + ", ".join(op_patterns()))
    for name, members in OP_SETS.items():
        click.echo(f"{name:>8}: {', '.join(members)}")
