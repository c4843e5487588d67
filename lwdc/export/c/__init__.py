"""Portable C export: lower -> (quantise) -> plan memory -> emit -> verify, written atomically.

Every op is one entry of the op table (``registry``, entries in ``ops/``) and every build target one entry of
``targets``; the passes below only walk the graph."""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..checks import check_float32, single_output
from ..tolerance import Tolerance, as_tolerance, pytorch_rounding
from . import ops  # noqa: F401  (fills the op table before anything lowers)
from ...modes import eval_mode
from .build import CompilerError, compile_library, find_compiler, library_size, run_library
from .cmsis import KERNEL_CHOICES, CmsisPlan, check_cmsis_nn, cmsis_path
from .emit import check_weight_mode, emit_c
from .graph import Graph, UnsupportedLayerError, lower
from .plan import MemoryPlan, plan_memory
from .quant import QuantizedGraph, calibrate, correct_biases, quantize, run_int8, run_quantized
from .reference import run_float
from .registry import Op, lowers, register_op, unregister_op
from .safe import check_name
from .targets import Target, get_target, register_target

__all__ = ["export_c", "split_front_end", "evaluate_c", "run_c", "write_inputs", "read_outputs", "read_deploy", "RunC",
           "CExport", "ExportError", "UnsupportedLayerError", "CompilerError", "lower",
           "plan_memory", "calibrate", "quantize", "run_float", "run_int8", "run_quantized", "compile_library",
           "run_library", "find_compiler", "Graph", "MemoryPlan", "QuantizedGraph", "Op", "lowers", "register_op",
           "unregister_op", "Target", "register_target"]


class ExportError(RuntimeError):
    """The exported model does not reproduce the original; nothing was written."""


@dataclass
class CExport:
    """What ``export_c`` wrote and measured; ``summary`` is also saved as ``deploy.json``."""
    directory: Path
    name: str
    graph: Graph
    plan: MemoryPlan
    qgraph: QuantizedGraph | None
    summary: dict
    front_end: nn.Module | None = None     # computes the C's inputs from the model's (see ``split_front_end``)

    @property
    def int8(self) -> bool:
        return self.qgraph is not None

    def run_reference(self, x: torch.Tensor) -> np.ndarray:
        """What the C library computes for a batch, from the Python reference (float or integer)."""
        if self.qgraph is not None:
            return run_quantized(self.qgraph, x.numpy())
        return run_float(self.graph, x).numpy()


def split_front_end(model) -> tuple[nn.Module | None, object]:
    """``(front_end, backbone)`` of a model built as ``backbone(front_end(x))`` (``lwdc.models.audio.FrontEnded``:
    a log-mel spectrogram before a CNN), else ``(None, model)``. A front end such as ``torch.stft`` has no C
    lowering, so the C takes the backbone's inputs: the device computes the features itself."""
    front, backbone = getattr(model, "front_end", None), getattr(model, "backbone", None)
    if isinstance(model, nn.Module) and isinstance(front, nn.Module) and isinstance(backbone, nn.Module):
        return front, backbone
    return None, model


def _calibration_batches(calib) -> list[torch.Tensor]:
    if calib is None:
        raise ValueError("int8 export needs calibration inputs: pass calib= a tensor batch or an iterable of "
                         "batches drawn from the training data (a few hundred samples)")
    if isinstance(calib, torch.Tensor):
        return [calib[i:i + 64] for i in range(0, len(calib), 64)]
    return [b[0] if isinstance(b, (tuple, list)) else b for b in calib]


def _forward(model, x: torch.Tensor) -> torch.Tensor:
    check_float32(model, "C export")
    if isinstance(model, torch.export.ExportedProgram):
        with torch.no_grad():
            return single_output(model.module()(x), "C export")
    with eval_mode(model), torch.no_grad():
        return single_output(model(x), "C export")


def _write(path: Path, text: str) -> None:
    """A new file readable by its owner only (the folder it sits in is private until it is moved in place)."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(text)


def export_c(model: nn.Module | torch.export.ExportedProgram, example_input: torch.Tensor, out_dir: str | Path, *,
             int8: bool = False, calib: torch.Tensor | Iterable | None = None, name: str = "model",
             calibration: str = "minmax", bias_correction: bool = False, overwrite: bool = False,
             verify: bool = True, atol: float | None = None, rtol: float | None = None, target: str = "host",
             source: dict | None = None, weights: str = "dense", kernels: str = "portable",
             cmsis_nn: str | Path | None = None, log: Callable[[str], None] | None = None) -> CExport:
    """Write ``out_dir/{NAME.h, NAME.c, main.c, deploy.json}`` for one-sample inference in C99.

    The lowered graph is first checked against PyTorch in Python; with ``verify`` (and a C compiler present) the
    generated code is compiled with strict warnings and run on ``example_input``: float32 must match PyTorch
    within the export tolerance (``tolerance.Tolerance``: ``atol + rtol * max|output|`` plus what PyTorch's own
    float rounding explains) and int8 must equal the integer reference bit for bit. Any failure leaves nothing behind.
    ``calibration`` chooses activation ranges for int8: ``minmax`` (observed extremes) or ``mse``;
    ``bias_correction`` then moves each int8 conv's bias by the mean shift quantisation caused on the calibration
    inputs (``quant.correct_biases``: what regression outputs need, e.g. landmarks). ``name`` must
    be a C identifier of at most 32 characters; ``target`` names the registered compiler and runner.
    ``source`` (any JSON-able dict: where the model and its data came from, their normalisation) is recorded in
    deploy.json for ``run_c``; ``log`` receives one line per step that can take seconds. ``weights`` (float32
    only): ``dense``, or ``startup`` / ``on-the-fly`` to store layers of few distinct values (``lwdc share``) as
    codebooks and packed codes, decoded into RAM once or before each layer (``emit.WEIGHT_MODES``).
    ``kernels="cmsis-nn"`` (int8 only) calls Arm's CMSIS-NN for convolutions and adds (``cmsis.py``), built from
    the checkout at ``cmsis_nn``; the build is verified against the same integer reference.
    """
    say = _stepper(log)
    check_name(name)
    check_weight_mode(weights, int8)
    if kernels not in KERNEL_CHOICES:
        raise ValueError(f"kernels must be one of {', '.join(KERNEL_CHOICES)}, got {kernels!r}")
    if kernels == "cmsis-nn":
        if not int8:
            raise ValueError("kernels='cmsis-nn' runs int8 kernels: export with int8=True (--int8)")
        cmsis_nn = check_cmsis_nn(cmsis_nn)
    if bias_correction and not int8:
        raise ValueError("bias_correction corrects int8 rounding: export with int8=True (--int8), or leave it off")
    get_target(target)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; choose another folder or pass overwrite=True (--force)")
    example_input = example_input.detach().float()
    front, model = split_front_end(model)
    if front is not None:
        with eval_mode(front), torch.no_grad():
            raw_shape, example_input = list(example_input.shape[1:]), front(example_input)
            features = lambda b: front(b.detach().float())  # noqa: E731
            calib = None if calib is None or not int8 else [features(b) for b in _calibration_batches(calib)]
        say(f"the front end ({type(front).__name__}) has no C lowering: exporting the network after it, which "
            f"takes its features {tuple(example_input.shape[1:])} (the device computes them)")
    expected = _forward(model, example_input).numpy()
    tol = as_tolerance(atol, rtol)
    rounding = pytorch_rounding(model, example_input, expected)
    say("lowering the model (torch.export)")
    graph = lower(model, example_input)
    diff = float(np.abs(run_float(graph, example_input).numpy().reshape(expected.shape) - expected).max())
    lowering = tol.verdict(diff, expected, rounding)
    if not lowering["within"]:
        raise ExportError(f"the lowered graph differs from the PyTorch model by {diff:.3g}, beyond float rounding "
                          f"({tol.rule()} = {lowering['limit']:.3g}); this is a bug in lwdc's lowering, please "
                          "report it with the model")
    if int8:
        batches = _calibration_batches(calib)
        say(f"calibrating int8 ranges ({calibration}) on {sum(len(b) for b in batches)} samples")
    qgraph = quantize(graph, calibrate(graph, batches, calibration)) if int8 else None
    corrected = {}
    if int8 and bias_correction:
        corrected = correct_biases(qgraph, batches)
        say(f"bias correction: {len(corrected)} conv(s), the largest mean shift removed "
            f"{max(corrected.values(), default=0.0):.3g} (output units)")
    plan = plan_memory(graph, 1 if int8 else 4)
    cmsis = CmsisPlan(graph, cmsis_nn) if kernels == "cmsis-nn" else None
    src = emit_c(graph, plan, qgraph, name, weights, cmsis)
    summary = {"name": name, "target": target, "precision": "int8" if int8 else "float32",
               "calibration": calibration if int8 else None,
               "bias_correction": {"convs": len(corrected), "max_shift": max(corrected.values(), default=0.0)}
               if int8 and bias_correction else None, "input_shape": list(graph.input_shape),
               "output_shape": list(graph.output_shape), "nodes": len(graph.nodes), "macs": graph.macs,
               "params": graph.params, "flash_bytes": src.flash_bytes, **plan.summary(),
               "peak_ram_bytes": plan.peak_ram_bytes + src.weights["ram_bytes"] + src.extra_ram_bytes,
               "weights": src.weights,
               "kernels": {**cmsis.summary(), "cmsis_nn": str(cmsis_nn)} if cmsis else {"name": "portable"},
               "naive_over_arena": round(plan.naive_bytes / max(plan.arena_bytes, 1), 3),
               "lowering_max_abs_diff": diff, "tolerance": lowering, "layout": LAYOUT,
               "front_end": None if front is None else {
                   "module": type(front).__name__, "input_shape": raw_shape,
                   "feature_shape": list(example_input.shape[1:]),
                   "description": (front.describe() if hasattr(front, "describe") else repr(front)),
                   "note": "not exported: the C library takes these features; compute them on the device"}}
    if qgraph is not None:
        for key, tensor in (("input_quant", graph.input), ("output_quant", graph.output)):
            qp = qgraph.qp(tensor)
            summary[key] = {"scale": float(qp.scale), "zero_point": int(qp.zero_point)}
    if source:
        summary["source"] = source

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        for file, text in ((f"{name}.h", src.header), (f"{name}.c", src.source), ("main.c", src.main)):
            _write(tmp / file, text)
        if verify and get_target(target).can_run():
            say("compiling with strict warnings and checking the program against "
                + ("the integer reference" if int8 else "PyTorch")
                + ("" if target == "host" else f" (on {get_target(target).description})"))
            summary["verified"] = _verify(tmp, name, graph, qgraph, example_input, expected, tol, rounding,
                                          target, cmsis_nn if cmsis else None)
        else:
            summary["verified"] = None
        if target != "host" and get_target(target).find_compiler():
            say(f"measuring the library's flash and RAM for {target}")
            summary["linked"] = library_size(tmp, name, target=target, cmsis_nn=cmsis_nn if cmsis else None)
        _write(tmp / "deploy.json", json.dumps(summary, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CExport(out_dir, name, graph, plan, qgraph, summary, front)


#: How main.c reads INPUT.bin and writes OUTPUT.bin (recorded in deploy.json).
LAYOUT = ("samples back to back, each the model's input of one sample in C order (channels, then rows, then "
          "columns; channels, then time for 1-D), normalised exactly as the PyTorch model takes it; float32 "
          "little-endian, or for `--int8` int8 values q = clamp(round(x / input_quant.scale) + "
          "input_quant.zero_point, -128, 127); outputs likewise (int8: x = scale * (q - zero_point))")


def _stepper(log: Callable[[str], None] | None):
    """``say(text)``: one line, with the seconds since the first step, as a step that can take seconds starts."""
    start = time.perf_counter()

    def say(text: str | None) -> None:
        if log is not None and text is not None:
            log(f"  [{time.perf_counter() - start:5.1f}s] {text}...")
    return say


def _runner(target: str):
    """``run_library`` on ``target``, looked up when called (so a test can stand in for it)."""
    return run_library if target == "host" else functools.partial(run_library, target=target)


def _verify(src_dir: Path, name: str, graph: Graph, qgraph, x: torch.Tensor, expected: np.ndarray,
            tol: Tolerance, rounding: float, target: str, cmsis_nn: Path | None = None) -> dict:
    exe = compile_library(src_dir, name, target=target, cmsis_nn=cmsis_nn)
    try:
        flat = x.reshape(len(x), -1).numpy()
        out_size = int(np.prod(graph.output_shape))
        if qgraph is None:
            got = _runner(target)(exe, flat, out_size)
            diff = float(np.abs(got - expected.reshape(len(x), -1)).max())
            check = tol.verdict(diff, expected, rounding)
            if not check["within"]:
                raise ExportError(f"the compiled C differs from PyTorch by {diff:.3g}, beyond float rounding "
                                  f"({tol.rule()} = {check['limit']:.3g})")
            return {"max_abs_diff_vs_pytorch": diff, "limit": check["limit"], "samples": len(x)}
        xq = qgraph.qp(graph.input).quantize(flat)
        got = _runner(target)(exe, xq, out_size, int8=True)
        want = run_int8(qgraph, xq.reshape(len(x), *graph.input_shape)).reshape(len(x), -1)
        mismatches = int((got != want).sum())
        if mismatches:
            raise ExportError(f"the compiled int8 C differs from the integer reference in {mismatches} values")
        deq = qgraph.qp(graph.output).dequantize(got)
        return {"int8_matches_reference": True, "samples": len(x),
                "max_abs_diff_vs_pytorch_float": float(np.abs(deq - expected.reshape(len(x), -1)).max())}
    finally:
        shutil.rmtree(exe.parent, ignore_errors=True)


def evaluate_c(export: CExport, inputs: torch.Tensor, targets, task=None) -> dict[str, float]:
    """The task's metrics (default: classification, top-1 accuracy in %) of the compiled library on ``inputs``
    (the model's inputs: an export without its front end gets the features computed here), through its float
    entry point (int8 builds quantise inside)."""
    from ...tasks import Classification

    task = task or Classification()
    if export.front_end is not None:        # the C takes the front end's features
        with eval_mode(export.front_end), torch.no_grad():
            inputs = export.front_end(inputs.float())
    target = export.summary.get("target", "host")
    exe = compile_library(export.directory, export.name, target=target, cmsis_nn=cmsis_path(export.summary))
    try:
        out = _runner(target)(exe, inputs.reshape(len(inputs), -1).float().numpy(),
                              int(np.prod(export.graph.output_shape)))
    finally:
        shutil.rmtree(exe.parent, ignore_errors=True)
    output = torch.from_numpy(np.asarray(out, dtype=np.float32)).reshape(len(inputs), *export.graph.output_shape)
    return task.summarize(task.batch_stats(output, targets))


# ------------------------------------------------------------------ running an export folder as firmware would

def read_deploy(export_dir: str | Path) -> dict:
    """``deploy.json`` of a C export folder, checked for what ``run_c`` relies on (the C name, the shapes, the
    precision and, for int8, the input and output quantisation)."""
    path = Path(export_dir) / "deploy.json"
    if not path.is_file():
        raise ValueError(f"{export_dir} has no deploy.json: give a folder written by `lwdc export --format c`")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path} is not an lwdc deploy.json (not an object)")
    check_name(info.get("name"))
    for key in ("input_shape", "output_shape"):
        shape = info.get(key)
        if not (isinstance(shape, list) and shape and all(isinstance(v, int) and v > 0 for v in shape)):
            raise ValueError(f"{path}: {key} must be a list of positive integers, got {shape!r}")
    if info.get("precision") not in ("float32", "int8"):
        raise ValueError(f"{path}: precision must be float32 or int8, got {info.get('precision')!r}")
    if info["precision"] == "int8":
        for key in ("input_quant", "output_quant"):
            q = info.get(key)
            if not (isinstance(q, dict) and isinstance(q.get("scale"), (int, float)) and q["scale"] > 0
                    and isinstance(q.get("zero_point"), int) and -128 <= q["zero_point"] <= 127):
                raise ValueError(f"{path} lacks a valid {key} (scale, zero_point): exported by an older lwdc? "
                                 "export it again")
    for file in (f"{info['name']}.c", f"{info['name']}.h", "main.c"):
        if not (Path(export_dir) / file).is_file():
            raise ValueError(f"{export_dir} lacks {file}")
    return info


def _qparams(q: dict):
    from .fixed import QParams
    return QParams(float(np.float32(q["scale"])), int(q["zero_point"]))


def write_inputs(path: str | Path, inputs: torch.Tensor | np.ndarray, deploy: dict) -> Path:
    """Write ``inputs`` (a batch shaped like the model's input, already normalised as the PyTorch model takes
    it) as ``INPUT.bin`` in the layout the generated ``main.c`` reads (``LAYOUT``): float32 rows for a float
    export; for an int8 export the values quantised with deploy.json's ``input_quant``, as
    ``model_run`` would quantise them (``main --int8 INPUT.bin OUTPUT.bin``)."""
    x = np.asarray(inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else inputs, np.float32)
    shape = tuple(deploy["input_shape"])
    if tuple(x.shape) == shape:
        x = x[None]                                   # one sample
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"inputs of shape {tuple(x.shape)} do not fit the model's input {shape} (one sample) or "
                         f"(N, {', '.join(map(str, shape))})")
    rows = x.reshape(len(x), -1)
    data = _qparams(deploy["input_quant"]).quantize(rows) if deploy["precision"] == "int8" else rows.astype("<f4")
    path = Path(path)
    np.ascontiguousarray(data).tofile(path)
    return path


def read_outputs(path: str | Path, deploy: dict) -> np.ndarray:
    """``OUTPUT.bin`` as float32, shaped (N, *output_shape); int8 outputs dequantised with ``output_quant``."""
    int8 = deploy["precision"] == "int8"
    raw = np.fromfile(path, np.int8 if int8 else np.dtype("<f4"))
    size = int(np.prod(deploy["output_shape"]))
    if raw.size % size:
        raise ValueError(f"{path} holds {raw.size} values, not a whole number of outputs of {size}")
    out = _qparams(deploy["output_quant"]).dequantize(raw) if int8 else raw.astype(np.float32)
    return out.reshape(-1, *deploy["output_shape"])


@dataclass
class RunC:
    """What ``run_c`` ran and found."""
    outputs: np.ndarray                      # (N, *output_shape) float32 (int8 outputs dequantised)
    command: list[str]
    precision: str
    pytorch: np.ndarray | None = None        # the PyTorch model's outputs on the same inputs
    max_abs_diff: float | None = None
    top1_agreement: float | None = None      # share of samples whose argmax agrees (classification outputs)
    files: dict[str, Path] = field(default_factory=dict)
    stdout: str = ""


def run_c(export_dir: str | Path, inputs: torch.Tensor, model=None, *, work_dir: str | Path | None = None,
          target: str | None = None, cmsis_nn: str | Path | None = None) -> RunC:
    """Compile an export folder's ``main.c`` + ``NAME.c`` and run the program on ``inputs`` as a user would:
    ``write_inputs`` -> ``./NAME [--int8] INPUT.bin OUTPUT.bin`` -> ``read_outputs``; with ``model`` (the
    PyTorch model or ``torch.export`` program it was exported from) also compare: the largest absolute
    difference and, for outputs of one row of scores, how often the argmax agrees.

    ``inputs`` are normalised as the PyTorch model takes them. ``work_dir`` keeps INPUT.bin, OUTPUT.bin and the
    program (default: a temporary folder, removed). A CMSIS-NN export links the checkout recorded in deploy.json
    unless ``cmsis_nn`` names another. This compiles and runs the C in ``export_dir``: use it on
    folders you exported or trust, as with any source you build.
    """
    info = read_deploy(export_dir)
    name, int8 = info["name"], info["precision"] == "int8"
    inputs = torch.as_tensor(inputs).detach().float().cpu()
    if tuple(inputs.shape) == tuple(info["input_shape"]):
        inputs = inputs[None]
    target = target or info.get("target", "host")
    keep = work_dir is not None
    work = Path(work_dir) if keep else Path(tempfile.mkdtemp(prefix="lwdc-run-c-"))
    try:
        work.mkdir(parents=True, exist_ok=True)
        exe = compile_library(export_dir, name, out=work / name, target=target, cmsis_nn=cmsis_path(info, cmsis_nn))
        src, dst = write_inputs(work / "INPUT.bin", inputs, info), work / "OUTPUT.bin"
        cmd = get_target(target).run_command(exe, *(["--int8"] if int8 else []), str(src), str(dst))
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise CompilerError(f"{' '.join(cmd)} exited with {done.returncode}: {done.stderr[-2000:]}")
        outputs = read_outputs(dst, info)
        result = RunC(outputs, cmd, info["precision"], files={"input": src, "output": dst, "program": exe} if keep
                      else {}, stdout=done.stdout)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    if len(outputs) != len(inputs):
        raise CompilerError(f"the program wrote {len(outputs)} outputs for {len(inputs)} inputs")
    if model is not None:
        expected = _forward(model, inputs).numpy().reshape(outputs.shape)
        result.pytorch = expected
        result.max_abs_diff = float(np.abs(outputs - expected).max()) if outputs.size else 0.0
        if outputs.ndim == 2 and outputs.shape[1] > 1:
            result.top1_agreement = float((outputs.argmax(1) == expected.argmax(1)).mean())
    return result
