"""Portable C export: lower -> (quantise) -> plan memory -> emit -> verify, written atomically.

Every op is one entry of the op table (``registry``, entries in ``ops/``) and every build target one entry of
``targets``; the passes below only walk the graph."""
from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from ..checks import check_float32, single_output
from . import ops  # noqa: F401  (fills the op table before anything lowers)
from ...modes import eval_mode
from .build import CompilerError, compile_library, find_compiler, run_library
from .emit import emit_c
from .graph import Graph, UnsupportedLayerError, lower
from .plan import MemoryPlan, plan_memory
from .quant import QuantizedGraph, calibrate, quantize, run_int8, run_quantized
from .reference import run_float
from .registry import Op, lowers, register_op, unregister_op
from .safe import check_name
from .targets import Target, get_target, register_target

__all__ = ["export_c", "evaluate_c", "CExport", "ExportError", "UnsupportedLayerError", "CompilerError", "lower",
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

    @property
    def int8(self) -> bool:
        return self.qgraph is not None

    def run_reference(self, x: torch.Tensor) -> np.ndarray:
        """What the C library computes for a batch, from the Python reference (float or integer)."""
        if self.qgraph is not None:
            return run_quantized(self.qgraph, x.numpy())
        return run_float(self.graph, x).numpy()


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
             calibration: str = "minmax", overwrite: bool = False, verify: bool = True,
             atol: float = 1e-4, target: str = "host") -> CExport:
    """Write ``out_dir/{NAME.h, NAME.c, main.c, deploy.json}`` for one-sample inference in C99.

    The lowered graph is first checked against PyTorch in Python; with ``verify`` (and a C compiler present) the
    generated code is compiled with strict warnings and run on ``example_input``: float32 must match PyTorch
    within ``atol`` and int8 must equal the integer reference bit for bit. Any failure leaves nothing behind.
    ``calibration`` chooses activation ranges for int8: ``minmax`` (observed extremes) or ``mse``. ``name`` must
    be a C identifier of at most 32 characters; ``target`` names the registered compiler and runner.
    """
    check_name(name)
    get_target(target)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; choose another folder or pass overwrite=True (--force)")
    example_input = example_input.detach().float()
    expected = _forward(model, example_input).numpy()
    graph = lower(model, example_input)
    diff = float(np.abs(run_float(graph, example_input).numpy().reshape(expected.shape) - expected).max())
    if diff > atol:
        raise ExportError(f"the lowered graph differs from the PyTorch model by {diff:.3g} (> {atol}); "
                          "this is a bug in lwdc's lowering, please report it with the model")
    qgraph = quantize(graph, calibrate(graph, _calibration_batches(calib), calibration)) if int8 else None
    plan = plan_memory(graph, 1 if int8 else 4)
    src = emit_c(graph, plan, qgraph, name)
    summary = {"name": name, "target": target, "precision": "int8" if int8 else "float32",
               "calibration": calibration if int8 else None, "input_shape": list(graph.input_shape),
               "output_shape": list(graph.output_shape), "nodes": len(graph.nodes), "macs": graph.macs,
               "params": graph.params, "flash_bytes": src.flash_bytes, **plan.summary(),
               "naive_over_arena": round(plan.naive_bytes / max(plan.arena_bytes, 1), 3),
               "lowering_max_abs_diff": diff}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        for file, text in ((f"{name}.h", src.header), (f"{name}.c", src.source), ("main.c", src.main)):
            _write(tmp / file, text)
        if verify and find_compiler(target):
            summary["verified"] = _verify(tmp, name, graph, qgraph, example_input, expected, atol, target)
        else:
            summary["verified"] = None
        _write(tmp / "deploy.json", json.dumps(summary, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CExport(out_dir, name, graph, plan, qgraph, summary)


def _runner(target: str):
    """``run_library`` on ``target``, looked up when called (so a test can stand in for it)."""
    return run_library if target == "host" else functools.partial(run_library, target=target)


def _verify(src_dir: Path, name: str, graph: Graph, qgraph, x: torch.Tensor, expected: np.ndarray,
            atol: float, target: str) -> dict:
    exe = compile_library(src_dir, name, target=target)
    try:
        flat = x.reshape(len(x), -1).numpy()
        out_size = int(np.prod(graph.output_shape))
        if qgraph is None:
            got = _runner(target)(exe, flat, out_size)
            diff = float(np.abs(got - expected.reshape(len(x), -1)).max())
            if diff > atol:
                raise ExportError(f"the compiled C differs from PyTorch by {diff:.3g} (> {atol})")
            return {"max_abs_diff_vs_pytorch": diff, "samples": len(x)}
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
    """The task's metrics (default: classification, top-1 accuracy in %) of the compiled library on ``inputs``,
    through its float entry point (int8 builds quantise inside)."""
    from ...tasks import Classification

    task = task or Classification()
    target = export.summary.get("target", "host")
    exe = compile_library(export.directory, export.name, target=target)
    try:
        out = _runner(target)(exe, inputs.reshape(len(inputs), -1).float().numpy(),
                              int(np.prod(export.graph.output_shape)))
    finally:
        shutil.rmtree(exe.parent, ignore_errors=True)
    output = torch.from_numpy(np.asarray(out, dtype=np.float32)).reshape(len(inputs), *export.graph.output_shape)
    return task.summarize(task.batch_stats(output, targets))
