"""`lwdc profile` and `lwdc ops`: what a model costs and which operators exist."""
from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from ..ops import OP_SETS, op_patterns
from ..profiling import profile as profile_model
from ..runs import read_json
from .base import fail, main


def _run_as_module(folder: Path, shape: tuple[int, ...]) -> torch.nn.Module:
    """A run folder's derived model as ``nn.Module`` layers (per-layer costs need modules; model.pt2 has none):
    the registered model expanded as the run did, its choices forced, derived, and the saved weights loaded."""
    from ..derivation import derive
    from ..models import create_model
    from ..runs import load_checkpoint
    from ..space import expand

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
        fail(f"--input-shape must be comma-separated integers like 3,32,32; got {input_shape!r}")
    specs = [c.strip() for value in costs for c in value.split(",") if c.strip()]
    if run:
        report = read_json(Path(run) / "report.json")
        shape = tuple(report["example_input_shape"][1:])
        net = torch.export.load(str(Path(run) / "model.pt2")).module()
        if specs:
            try:
                net = _run_as_module(Path(run), shape)
            except (OSError, KeyError, ValueError, RuntimeError) as exc:
                fail(f"cannot rebuild the layers of {run} for a per-layer table ({type(exc).__name__}: {exc}); "
                      "profile it without --cost")
    elif model_name:
        from ..models import create_model, list_models
        if model_name not in list_models():
            fail(f"unknown model {model_name!r}; registered models: {', '.join(list_models())}")
        net = create_model(model_name, num_classes=num_classes, in_channels=shape[0], width=width)
    else:
        fail("give MODEL (a registered name or a run folder), --model NAME or --run RUN_DIR")
    if specs:
        from ..costs.report import format_layer_report, layer_report
        try:
            table = layer_report(net, torch.randn(1, *shape), specs, batch_size=batch_size)
        except ValueError as exc:
            fail(str(exc))
        click.echo(json.dumps(table) if as_json else format_layer_report(table) +
                   f"\nlatency: batch {batch_size}, 1 thread, each layer alone; total: the whole network")
        return
    result = profile_model(net, torch.randn(batch_size, *shape))
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
