"""The ``lwdc`` command group and what every command shares; commands live one concern per module."""
from __future__ import annotations

from dataclasses import dataclass, field
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
    quiet_dependencies()


#: Libraries whose warnings and log lines are for their developers, not for someone running lwdc.
DEPENDENCIES = ("torch", "onnx", "onnxruntime", "onnxscript", "matplotlib", "numpy", "tqdm", "PIL")


def quiet_dependencies() -> None:
    """Keep dependencies' deprecation notes and exporter chatter (torch's FutureWarnings, torch.onnx's
    "torchvision is not installed") out of the command line's output. Python's own switches win: with -W or
    PYTHONWARNINGS set, warnings are left as they are (``python -W default -m lwdc ...`` shows them all)."""
    import logging
    import sys
    import warnings

    if not sys.warnoptions:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=rf"({'|'.join(DEPENDENCIES)})(\.|$)")
    for name in ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)


TRUST_PT2_HELP = ("Load a .pt2 (torch.export) file. Loading one can run code it contains, so lwdc refuses .pt2 files "
                  "unless you say you trust this one; run folders and registered models need no such trust.")

#: What MODEL may be, in every command that takes one (export, profile, run-c's --model; report takes run folders).
MODEL_HELP = ("MODEL is a run folder (its compressed model), a registered model name (--weights for its state_dict), "
              "your own factory as path/to/file.py:factory or package.module:factory (imported and run: name only "
              "code you trust; --input-shape, --num-classes, --width and --weights apply), or a .pt2 file you "
              "trust (--trust-pt2).")


@dataclass
class ModelArg:
    """A resolved MODEL: the model, one sample's shape, the run's data source and task (run folders), and a
    JSON-able description of where it came from (recorded in deploy.json so ``lwdc run-c`` can rebuild it)."""
    model: object
    shape: tuple[int, ...]
    data: str | None
    task: str
    source: dict = field(default_factory=dict)

    def __iter__(self):            # model, shape, data, task = load_model_arg(...)
        return iter((self.model, self.shape, self.data, self.task))


def model_kind(model: str) -> str:
    """Which entry of the MODEL vocabulary ``model`` names: run, pt2, factory or registered; or a clear one-line
    error, the same in every command, for what it cannot be."""
    from ..models import is_code_reference, list_models
    from ..runs import Run, RunError

    path = Path(model)
    if path.is_dir():
        try:
            Run.open_finished(path)
        except RunError as exc:
            fail(str(exc))
        return "run"
    if path.suffix == ".pt2":
        if not path.is_file():
            fail(f"{path}: no such file")
        return "pt2"
    if path.suffix == ".onnx":
        fail(f"{path} is an ONNX file: lwdc reads PyTorch models (a run folder, a registered name, file.py:factory or "
             "a trusted .pt2); ONNX is what `lwdc export --format onnx` writes")
    if model in list_models():
        return "registered"
    if is_code_reference(model):
        return "factory"
    if path.is_file():
        fail(f"{path} is a file lwdc does not read as a model. {MODEL_HELP}")
    if "/" in model or model.startswith(".") or path.suffix:
        fail(f"{path}: no such file or folder")
    fail(f"MODEL {model!r} is neither a run folder, a .pt2 file, a file.py:factory nor a registered model "
         f"({', '.join(list_models())})")
    raise AssertionError


def load_model_arg(model: str, *, width: float = 1.0, weights: str | None = None, input_shape: str | None = None,
                   num_classes: int = 10, trust_pt2: bool = False, which: str = "model") -> ModelArg:
    """MODEL as every command takes it (``MODEL_HELP``): a run folder (its compressed model, or
    ``which="original"``), a ``.pt2`` file (with ``--trust-pt2``), a registered model name or a factory
    ``file.py:factory`` (with ``--weights``, ``--input-shape``, ``--num-classes``, ``--width``). Returns a
    ``ModelArg`` (unpacks as model, one-sample shape, the run's data source or None, the run's task name); a
    clear one-line error for anything else, the same in every command."""
    import torch

    from ..models import create_model
    from ..runs import Run, RunError, load_pt2

    kind = model_kind(model)
    path = Path(model)
    try:
        if kind == "run":
            run = Run.open_finished(path)
            task = run.report().get("task", "classification")
            spec = run.read_file(Run.CONFIG) or {}
            return ModelArg(run.load_model(which), run.input_shape(which), spec.get("data"), task,
                            {"kind": "run", "path": str(path.resolve()), "which": which})
        if kind == "pt2":
            program = load_pt2(path, trusted=trust_pt2)
            user = {s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"}
            placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name in user)
            return ModelArg(program, tuple(int(d) for d in placeholder.meta["val"].shape[1:]), None,
                            "classification", {"kind": "pt2", "path": str(path.resolve())})
    except RunError as exc:
        fail(str(exc))
    shape = parse_shape(input_shape or "3,32,32")
    try:
        net = create_model(model, num_classes=num_classes, in_channels=shape[0], width=width)
    except (ValueError, TypeError) as exc:
        fail(f"MODEL {model}: {exc}")
    if weights:
        try:
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except Exception as exc:
            fail(f"cannot load --weights {weights} into {model}: {type(exc).__name__}: "
                 f"{str(exc).splitlines()[0][:300] if str(exc) else ''}")
    source = {"kind": kind, "name": model, "width": width, "num_classes": num_classes, "input_shape": list(shape),
              "weights": str(Path(weights).resolve()) if weights else None}
    return ModelArg(net.eval(), shape, None, "classification", source)
