"""How close an exported model must come to PyTorch, one rule for ONNX and C.

A fixed absolute tolerance fails deep untrained networks whose outputs are large: two float32 programs that sum
in different orders differ by rounding that grows with the outputs' scale and the network's depth, not by a
bug. The rule therefore scales with the reference and with PyTorch's own rounding error (its float32 output
against a float64 run of the same model):

    max |exported - pytorch| <= atol + rtol * max |pytorch| + rounding_factor * max |pytorch32 - pytorch64|

Only a difference beyond that is reported as a defect of the export.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..modes import eval_mode


@dataclass(frozen=True)
class Tolerance:
    atol: float = 1e-4
    rtol: float = 1e-4  # of the largest reference magnitude
    rounding_factor: float = 10.0  # times PyTorch's own float32 rounding error on the same input

    def __post_init__(self):
        for key, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ValueError(f"tolerance {key} must be a finite number >= 0, got {value!r}")

    def limit(self, reference: np.ndarray, rounding: float = 0.0) -> float:
        scale = float(np.abs(reference).max()) if np.size(reference) else 0.0
        return self.atol + self.rtol * scale + self.rounding_factor * rounding

    def rule(self) -> str:
        return (f"max |diff| <= {self.atol:g} + {self.rtol:g} * max|reference| + {self.rounding_factor:g} * "
                "PyTorch's float32-vs-float64 rounding")

    def verdict(self, diff: float, reference: np.ndarray, rounding: float = 0.0) -> dict:
        """The figures a summary records: the difference, the limit it was held to, and whether it passed."""
        limit = self.limit(reference, rounding)
        return {"max_abs_diff": diff, "limit": limit, "within": bool(diff <= limit),
                "reference_max_abs": float(np.abs(reference).max()) if np.size(reference) else 0.0,
                "pytorch_rounding": rounding, "rule": self.rule()}


def as_tolerance(atol: float | None = None, rtol: float | None = None,
                 tolerance: Tolerance | None = None) -> Tolerance:
    """A ``Tolerance`` from the keyword arguments the exporters accept (``atol``/``rtol`` override defaults)."""
    base = tolerance or Tolerance()
    return Tolerance(base.atol if atol is None else atol, base.rtol if rtol is None else rtol, base.rounding_factor)


def pytorch_rounding(model: nn.Module | torch.export.ExportedProgram, x: torch.Tensor, expected: np.ndarray) -> float:
    """max |float32 output - float64 output| of the model on ``x``: how much float rounding alone moves it.

    0.0 when the model cannot run in float64 (an exported program with float32 constants baked in), so the rule
    falls back to ``atol + rtol * scale``."""
    try:
        module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
        with warnings.catch_warnings():  # deep-copying a traced module warns about torch internals
            warnings.simplefilter("ignore")
            double = copy.deepcopy(module).double()
        with eval_mode(double), torch.no_grad():
            out = double(x.double())
        if not isinstance(out, torch.Tensor):
            return 0.0
        return float(np.abs(out.numpy() - expected.astype(np.float64)).max())
    except Exception:  # noqa: BLE001  (any failure only means no estimate)
        return 0.0
