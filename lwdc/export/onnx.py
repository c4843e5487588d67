"""ONNX export checked the way a deployment engineer would: the ONNX checker, then onnxruntime against PyTorch."""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..modes import eval_mode
from .checks import check_float32, single_output
from .tolerance import as_tolerance, pytorch_rounding


class OnnxExportError(RuntimeError):
    """The ONNX file failed the checker or does not reproduce PyTorch; it was not kept."""


@contextmanager
def _quiet():
    """torch.onnx logs registration notes (e.g. a missing torchvision) that say nothing about this model."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_onnx(model: nn.Module | torch.export.ExportedProgram, example_input: torch.Tensor, path: str | Path, *,
                atol: float | None = None, rtol: float | None = None, dynamic_batch: bool = True) -> dict:
    """Write ``model`` to ``path`` as ONNX, check it, and compare onnxruntime with PyTorch on ``example_input``
    (and on a batch of 1 when the batch is dynamic). Returns the check's figures; raises and keeps nothing when
    the model does not reproduce within the export tolerance (``tolerance.Tolerance``, the C export's rule)."""
    import onnx
    import onnxruntime as ort

    path = Path(path)
    check_float32(model, "ONNX export")
    x = example_input.detach().float()
    batch2 = x[:1].expand(2, *x.shape[1:]).contiguous() if len(x) == 1 else x  # batch 1 would specialise
    module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    with eval_mode(model) if isinstance(model, nn.Module) else contextlib.nullcontext():
        with torch.no_grad():
            expected = single_output(module(x), "ONNX export").numpy()
            expected1 = module(x[:1]).numpy()
        tol = as_tolerance(atol, rtol)
        rounding = pytorch_rounding(model, x, expected)
        shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
        with _quiet():
            program = torch.onnx.export(model, (batch2,), dynamo=True, dynamic_shapes=shapes, verbose=False)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        program.save(tmp, external_data=False)
        try:
            onnx.checker.check_model(tmp, full_check=True)
        except onnx.checker.ValidationError as e:
            raise OnnxExportError(f"the ONNX checker rejected the export: {e}") from e
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(tmp, opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        diff = float(np.abs(session.run(None, {name: x.numpy()})[0] - expected).max())
        if dynamic_batch:
            diff = max(diff, float(np.abs(session.run(None, {name: x[:1].numpy()})[0] - expected1).max()))
        check = tol.verdict(diff, expected, rounding)
        if not check["within"]:
            raise OnnxExportError(f"onnxruntime differs from PyTorch by {diff:.3g}, beyond float rounding "
                                  f"({tol.rule()} = {check['limit']:.3g})")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return {"path": str(path), "max_abs_diff_vs_pytorch": diff, "opset": int(onnx.load(str(path)).opset_import[0].version),
            "dynamic_batch": dynamic_batch, "bytes": path.stat().st_size, "tolerance": check}
