"""The ``lwdc`` command group and what every command shares; commands live one concern per module."""
from __future__ import annotations

from pathlib import Path

import click


def fail(message: str) -> None:
    """Stop with a clean one-line error (exit 1), never a traceback."""
    raise click.ClickException(message)


def parse_shape(text: str, option: str = "--input-shape") -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        fail(f"{option} must be comma-separated integers like 3,32,32; got {text!r}")
        raise


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lwdc")
def main() -> None:
    """lwdc: turn a bulky CNN into a lightweight plain PyTorch model by layer-wise differentiable compression."""


TRUST_PT2_HELP = ("Load a .pt2 (torch.export) file. Loading one can run code it contains, so lwdc refuses .pt2 files "
                  "unless you say you trust this one; run folders and registered models need no such trust.")


def load_model_arg(model: str, *, width: float = 1.0, weights: str | None = None, input_shape: str | None = None,
                   num_classes: int = 10, trust_pt2: bool = False, which: str = "model"):
    """MODEL as the commands take it: a run folder (its compressed model, or ``which="original"``), a ``.pt2``
    file (with ``--trust-pt2``) or a registered model name (with ``--weights``). Returns (model, one-sample
    shape, the run's data source or None, the run's task name); a clear one-line error for anything else."""
    import torch

    from ..models import create_model, list_models
    from ..runs import Run, RunError, load_pt2

    path = Path(model)
    try:
        if path.is_dir():
            run = Run.open(path)
            if not run.finished:
                fail(f"{path} is not a finished lwdc run (no report.json); finish it with lwdc compress --resume {path}")
            task = run.report().get("task", "classification")
            return run.load_model(which), run.input_shape(which), run.spec.get("data"), task
        if path.suffix == ".pt2":
            if not path.is_file():
                fail(f"{path}: no such file")
            program = load_pt2(path, trusted=trust_pt2)
            user = {s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"}
            placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name in user)
            return program, tuple(int(d) for d in placeholder.meta["val"].shape[1:]), None, "classification"
    except RunError as exc:
        fail(str(exc))
    if model not in list_models():
        fail(f"MODEL {model!r} is neither a run folder, a .pt2 file nor a registered model ({', '.join(list_models())})")
    shape = parse_shape(input_shape or "3,32,32")
    net = create_model(model, num_classes=num_classes, in_channels=shape[0], width=width)
    if weights:
        try:
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except Exception as exc:
            fail(f"cannot load --weights {weights} into {model}: {type(exc).__name__}: "
                 f"{str(exc).splitlines()[0][:300] if str(exc) else ''}")
    return net.eval(), shape, None, "classification"
