"""Measure a plain model: parameters, multiply-accumulates and CPU latency.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2), an independent counter of what
actually ran, so they also check the closed-form counts of ``lwdc.ops``. Latency is the median of repeated
timed runs, because single timings on a shared CPU are noisy.
"""
from __future__ import annotations

import io
import statistics
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from .modes import eval_mode
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Profile", "count_params", "count_macs", "measure_latency", "median_ms", "onnx_session", "profile"]


@dataclass
class Profile:
    params: int
    macs: int                    # per sample
    latency_ms: float | None     # median, at the profiled batch size
    batch_size: int

    def as_dict(self) -> dict:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates per sample of one eval-mode forward pass."""
    with eval_mode(model), FlopCounterMode(display=False) as counter:
        model(example_input)
    return counter.get_total_flops() // 2 // example_input.shape[0]


def median_ms(call: Callable[[], object], repeats: int = 30, warmup: int = 5, min_seconds: float = 0.2) -> float:
    """Median wall time of ``call()`` in milliseconds.

    Warm-up runs for at least ``warmup`` calls and ``min_seconds`` (the first calls of a fresh model create
    oneDNN kernels and can be 100x slower); timing takes at least ``repeats`` calls and ``min_seconds``.
    """
    start = time.perf_counter()
    n = 0
    while n < warmup or time.perf_counter() - start < min_seconds:
        call()
        n += 1
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


@contextmanager
def torch_threads(threads: int | None):
    """PyTorch intra-op threads for the block (``None``: leave them as they are)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def onnx_session(model: nn.Module | torch.export.ExportedProgram, example_input: torch.Tensor, threads: int = 1):
    """An onnxruntime session of ``model`` for the shape of ``example_input``, exported in memory.

    The TorchScript exporter (``dynamo=False``) takes ~10 ms for a single layer, the dynamo one ~1 s; the latter
    is the fallback for models the former cannot trace (``torch.export`` programs).
    """
    import onnxruntime as ort

    module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    with eval_mode(module), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            buffer = io.BytesIO()
            torch.onnx.export(module, (example_input,), buffer, dynamo=False, opset_version=17)
            data = buffer.getvalue()
        except Exception:  # the TorchScript tracer refuses some graphs; dynamo handles them
            data = torch.onnx.export(module, (example_input,), dynamo=True, verbose=False).model_proto.SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


@torch.no_grad()
def measure_latency(model: nn.Module, example_input: torch.Tensor, repeats: int = 30, warmup: int = 5,
                    min_seconds: float = 0.2, backend: str = "eager", threads: int | None = None) -> float:
    """Median wall time in milliseconds of an eval-mode forward pass on the CPU.

    ``backend`` is ``eager`` (PyTorch) or ``onnxruntime`` (the model exported to ONNX in memory). ``threads``
    sets the intra-op threads of either (``None``: PyTorch's current setting).
    """
    if backend == "onnxruntime":
        session = onnx_session(model, example_input, threads or torch.get_num_threads())
        feed = {session.get_inputs()[0].name: example_input.detach().numpy()}
        return median_ms(lambda: session.run(None, feed), repeats, warmup, min_seconds)
    if backend != "eager":
        raise ValueError(f"unknown latency backend {backend!r}; choose eager or onnxruntime")
    with eval_mode(model), torch_threads(threads):
        return median_ms(lambda: model(example_input), repeats, warmup, min_seconds)


def profile(model: nn.Module, example_input: torch.Tensor, latency: bool = True, repeats: int = 30) -> Profile:
    return Profile(
        params=count_params(model),
        macs=count_macs(model, example_input),
        latency_ms=measure_latency(model, example_input, repeats=repeats) if latency else None,
        batch_size=int(example_input.shape[0]),
    )
