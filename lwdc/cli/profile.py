"""`lwdc profile` and `lwdc ops`: what a model costs and which operators exist."""
from __future__ import annotations

import json

import click
import torch

from ..ops import OP_SETS, op_patterns
from ..profiling import profile as profile_model
from .base import TRUST_PT2_HELP, fail, load_model_arg, main


@main.command("profile")
@click.argument("model", required=False)
@click.option("--model", "model_name", default=None, help="Registered model name (or give it as MODEL).")
@click.option("--width", default=1.0, show_default=True)
@click.option("--run", "run", type=click.Path(exists=True, file_okay=False), default=None,
              help="A finished run folder (or give it as MODEL): profile its compressed model.")
@click.option("--original", is_flag=True, help="With a run folder: profile its original model instead.")
@click.option("--input-shape", default=None, help="C,H,W (or C,L) of one sample (default 3,32,32; a run knows its own).")
@click.option("--num-classes", default=10, show_default=True)
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--cost", "costs", multiple=True,
              help="Per-layer table with these costs (repeat or comma-separate): params, macs, latency[:onnxruntime], "
                   "systolic[:RxC][:ws|os][:risa].")
@click.option("--trust-pt2", is_flag=True, help=TRUST_PT2_HELP)
@click.option("--json", "as_json", is_flag=True)
def profile_cmd(model, model_name, width, run, original, input_shape, num_classes, batch_size, costs, trust_pt2,
                as_json) -> None:
    """Parameters, MACs and measured CPU latency of MODEL (a registered name, a run folder or a trusted .pt2);
    with --cost, a per-layer table (op, params, MACs, measured latency, systolic cycles and PE utilisation)."""
    target = run or model or model_name
    if not target:
        fail("give MODEL (a registered name, a run folder or a .pt2 file), --model NAME or --run RUN_DIR")
    specs = [c.strip() for value in costs for c in value.split(",") if c.strip()]
    net, shape, _, _ = load_model_arg(target, width=width, input_shape=input_shape, num_classes=num_classes,
                                   trust_pt2=trust_pt2, which="original" if original else "model")
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
    try:
        result = profile_model(net, torch.randn(batch_size, *shape))
    except Exception as exc:
        fail(f"cannot run {target} on inputs of shape {(batch_size, *shape)}: {type(exc).__name__}: "
             f"{str(exc).splitlines()[0][:300] if str(exc) else ''}")
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        click.echo(f"params {result.params:,}  MACs {result.macs:,}  latency {result.latency_ms:.3f} ms "
                   f"(batch {batch_size}, PyTorch eager, {torch.get_num_threads()} threads)")


@main.command()
def ops() -> None:
    """List operator names and named operator sets."""
    click.echo("operator patterns: " + ", ".join(op_patterns()))
    for name, members in OP_SETS.items():
        click.echo(f"{name:>8}: {', '.join(members)}")
