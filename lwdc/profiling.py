"""Measure a plain model: parameters, multiply-accumulates and CPU latency.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2), an independent counter of what
actually ran, so they also check the closed-form counts of ``lwdc.ops``.

Latency is measured one way everywhere (``compare_latency``; the compress summary, the demo, ``lwdc profile`` and
the report all call it): the two models alternate in one process over several rounds (the first model first in
even rounds, second in odd ones), each round times each model by the median of the same number of calls, and
the result is the median over rounds with its spread: the range of the per-round values and, for a pair, the
median of the per-round ratios with a distribution-free 99% interval (``median_interval``). A single median on
a shared machine says little (a load burst during one model's timing made an unchanged architecture read 1.6x
slower); two models timed moments apart see the same load, so their per-round ratio is steadier than either
time. When the interval contains 1 (or the ratio is within 3% of 1) the summary says the spread is larger than
the difference. PyTorch eager and, where it is installed, onnxruntime are timed, on one thread by default (less
noise on a shared machine, and what one core of a target has).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import statistics
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from .binary import binary_macs_correction, register_onnx_symbolic
from .modes import eval_mode
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Profile", "count_params", "count_macs", "measure_latency", "median_ms", "onnx_session", "profile",
           "compare_latency", "LatencyComparison", "BackendLatency", "default_backends", "median_interval"]


@dataclass
class Profile:
    params: int
    macs: int                    # per sample
    latency_ms: float | None     # median over rounds (eager, one thread), at the profiled batch size
    batch_size: int
    latency_range_ms: tuple[float, float] | None = None   # lowest and highest per-round median
    latency: dict | None = None  # the whole measurement (``LatencyComparison.as_dict``), every backend

    def as_dict(self) -> dict:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates per sample of one eval-mode forward pass; a binary layer counts ceil(BOPs / 64)
    (``lwdc.binary``), as the operator registry counts it."""
    with eval_mode(model), FlopCounterMode(display=False) as counter, binary_macs_correction(model) as delta:
        model(example_input)
    return (counter.get_total_flops() // 2 + delta[0]) // example_input.shape[0]


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
            register_onnx_symbolic()
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


def default_backends() -> tuple[str, ...]:
    """``eager``, and ``onnxruntime`` where it is installed."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return ("eager",)
    return ("eager", "onnxruntime")


def _quantiles(values: list[float]) -> tuple[float, float]:
    """Lower and upper quartile (linear interpolation, as numpy's default)."""
    v = sorted(values)
    def q(p: float) -> float:
        pos = p * (len(v) - 1)
        lo = int(pos)
        return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (pos - lo)
    return q(0.25), q(0.75)


def median_interval(values: list[float], confidence: float = 0.99) -> tuple[float, float, float]:
    """A distribution-free confidence interval for the median of ``values`` (the sign test's order statistics):
    ``(v[k], v[n-1-k], coverage)`` for the widest k whose coverage ``1 - 2 P(Binomial(n, 1/2) <= k)`` is still at
    least ``confidence``; with too few values for that, the whole range (and its lower coverage). No assumption
    on the distribution: only that rounds are independent and the median is the same for every round."""
    v, n = sorted(values), len(values)

    def coverage(k: int) -> float:        # P(v[k] <= median <= v[n-1-k]) = 1 - 2 P(Binomial(n, 1/2) <= k)
        return 1.0 - 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n

    k = 0
    while k + 1 <= (n - 1) // 2 and coverage(k + 1) >= confidence:
        k += 1
    return v[k], v[n - 1 - k], coverage(k)


@dataclass
class BackendLatency:
    """One back end's rounds: per-round medians (ms) of the first model ``a`` and, for a pair, the second ``b``.
    ``confidence`` is that of the interval reported for the median per-round ratio (``ratio_interval``)."""
    backend: str
    a_rounds: list[float]
    b_rounds: list[float] | None = None
    confidence: float = 0.99
    min_effect: float = 0.03      # a median ratio within 3% of 1 is below what a shared machine resolves

    @property
    def rounds(self) -> int:
        return len(self.a_rounds)

    @property
    def a_ms(self) -> float:
        return statistics.median(self.a_rounds)

    @property
    def b_ms(self) -> float | None:
        return statistics.median(self.b_rounds) if self.b_rounds else None

    @property
    def ratios(self) -> list[float] | None:
        """b / a of every round (the two were timed moments apart, under the same load)."""
        return [b / a for a, b in zip(self.a_rounds, self.b_rounds)] if self.b_rounds else None

    @property
    def ratio(self) -> float | None:
        """The median of the per-round ratios (not the ratio of the medians: each round is its own pair)."""
        return statistics.median(self.ratios) if self.b_rounds else None

    @property
    def ratio_range(self) -> tuple[float, float] | None:
        """Lowest and highest per-round ratio."""
        return (min(self.ratios), max(self.ratios)) if self.b_rounds else None

    @property
    def ratio_interval(self) -> tuple[float, float] | None:
        """The interval shown beside the median ratio: a ``confidence`` interval for the median per-round ratio
        (``median_interval``; 15 rounds at 99%: the 3rd lowest to the 3rd highest round, so one disturbed
        round does not decide it)."""
        return median_interval(self.ratios, self.confidence)[:2] if self.b_rounds else None

    @property
    def ratio_iqr(self) -> tuple[float, float] | None:
        return _quantiles(self.ratios) if self.b_rounds else None

    @property
    def within_noise(self) -> bool | None:
        """True when ``ratio_interval`` contains 1 (the rounds do not agree often enough on which model is
        faster: the spread is larger than the difference; with no real difference this is False with probability
        at most 1 - confidence), or when the median ratio is within ``min_effect`` of 1 (two copies of one
        model, or two onnxruntime sessions of it, can differ by a percent or two through memory placement
        alone)."""
        if not self.b_rounds:
            return None
        lo, hi = self.ratio_interval
        return lo <= 1.0 <= hi or abs(self.ratio - 1.0) < self.min_effect

    def as_dict(self) -> dict:
        d = {"backend": self.backend, "rounds": self.rounds, "a_ms": self.a_ms, "a_range_ms": [min(self.a_rounds),
             max(self.a_rounds)], "a_rounds_ms": self.a_rounds}
        if self.b_rounds:
            d.update(b_ms=self.b_ms, b_range_ms=[min(self.b_rounds), max(self.b_rounds)], b_rounds_ms=self.b_rounds,
                     ratio=self.ratio, ratio_interval=list(self.ratio_interval),
                     interval_confidence=median_interval(self.ratios, self.confidence)[2],
                     ratio_range=list(self.ratio_range), ratio_iqr=list(self.ratio_iqr), within_noise=self.within_noise)
        return d


@dataclass
class LatencyComparison:
    """``compare_latency``'s result: one ``BackendLatency`` per back end timed, and how it was timed."""
    backends: dict[str, BackendLatency]
    batch_size: int
    threads: int
    load_average: float | None = None     # the machine's 1-minute load when the timing started
    notes: list[str] = field(default_factory=list)   # back ends that could not be timed, and why

    @property
    def eager(self) -> BackendLatency:
        return self.backends["eager"]

    def as_dict(self) -> dict:
        return {"method": "alternating rounds in one process; per-round median of repeated calls; median over "
                          "rounds; ratio: median of per-round ratios with a distribution-free interval "
                          "(order statistics, sign test)",
                "batch_size": self.batch_size, "threads": self.threads, "load_average_1m": self.load_average,
                "backends": {k: v.as_dict() for k, v in self.backends.items()}, "notes": list(self.notes)}


def _round_ms(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _callables(model, example: torch.Tensor, backend: str, threads: int):
    if backend == "onnxruntime":
        session = onnx_session(model, example, threads)
        feed = {session.get_inputs()[0].name: example.detach().numpy()}
        return lambda: session.run(None, feed)
    if backend != "eager":
        raise ValueError(f"unknown latency backend {backend!r}; choose eager or onnxruntime")
    module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    return lambda: module(example)


@torch.no_grad()
def compare_latency(a: nn.Module | torch.export.ExportedProgram, b: nn.Module | torch.export.ExportedProgram | None,
                    example_input: torch.Tensor, *, rounds: int = 15, backends: tuple[str, ...] | None = None,
                    threads: int | None = 1, round_seconds: float = 0.03, warmup_seconds: float = 0.15,
                    min_repeats: int = 5, max_repeats: int = 200, confidence: float = 0.99) -> LatencyComparison:
    """Time ``a`` against ``b`` (or ``a`` alone, ``b=None``) on ``example_input``, alternating in this process.

    For each back end (default ``default_backends()``: eager, and onnxruntime where installed) both models are
    warmed up (``warmup_seconds`` each: a fresh model's first calls build oneDNN kernels and can be 100x
    slower), then ``rounds`` rounds each time ``a`` and ``b`` by the median of as many calls as fill about
    ``round_seconds`` (between ``min_repeats`` and ``max_repeats``), ``a`` first in even rounds and ``b`` first
    in odd ones, so a trend in the machine's load favours neither. ``threads`` is PyTorch's and onnxruntime's
    intra-op thread count (``None``: PyTorch's current setting). A back end that cannot run a model (an ONNX
    export failure) is left out with a note; eager always runs. ``confidence`` is that of each ratio's interval
    (``BackendLatency.ratio_interval``).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    chosen = tuple(backends) if backends is not None else default_backends()
    threads = threads or torch.get_num_threads()
    models = [m for m in (a, b) if m is not None]
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    result = LatencyComparison({}, int(example_input.shape[0]), threads, load)
    if backends is None and "onnxruntime" not in chosen:
        result.notes.append("onnxruntime not timed: it is not installed (pip install 'lwdc[export]')")
    backends = chosen
    with contextlib.ExitStack() as stack:
        for m in models:
            if isinstance(m, nn.Module):
                stack.enter_context(eval_mode(m))
        stack.enter_context(torch_threads(threads))
        for backend in backends:
            try:
                calls = [_callables(m, example_input, backend, threads) for m in models]
                if b is a:                        # a model against itself: the very same callable twice
                    calls[1] = calls[0]
            except Exception as exc:  # noqa: BLE001 - only the optional back ends can fail here
                if backend == "eager":
                    raise
                result.notes.append(f"{backend} not timed: {type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0][:200] if str(exc) else ''}")
                continue
            slowest = 1e-7
            for call in calls:
                start, n = time.perf_counter(), 0
                while n < 3 or time.perf_counter() - start < warmup_seconds:
                    call()
                    n += 1
                slowest = max(slowest, _round_ms(call, 3) / 1e3)
            # the same number of calls for both: a median of 5 and one of 50 differ when the call times are
            # bimodal (a busy neighbour takes the CPU or the GIL for some calls), which would bias the ratio
            repeats = int(min(max_repeats, max(min_repeats, round_seconds / slowest)))
            times: list[list[float]] = [[] for _ in calls]
            for r in range(rounds):
                order = range(len(calls)) if r % 2 == 0 else reversed(range(len(calls)))
                for i in order:
                    times[i].append(_round_ms(calls[i], repeats))
            result.backends[backend] = BackendLatency(backend, times[0], times[1] if len(times) > 1 else None,
                                                      confidence)
    return result


def profile(model: nn.Module, example_input: torch.Tensor, latency: bool = True, repeats: int = 30,
            rounds: int = 5, backends: tuple[str, ...] = ("eager",), threads: int | None = 1) -> Profile:
    """Parameters, MACs per sample and latency (``compare_latency`` on the model alone: the median over
    ``rounds`` rounds and the range of the per-round medians; ``repeats`` is kept for callers of old)."""
    timing = compare_latency(model, None, example_input, rounds=rounds, backends=backends,
                             threads=threads) if latency else None
    return Profile(
        params=count_params(model),
        macs=count_macs(model, example_input),
        latency_ms=timing.eager.a_ms if timing else None,
        batch_size=int(example_input.shape[0]),
        latency_range_ms=(min(timing.eager.a_rounds), max(timing.eager.a_rounds)) if timing else None,
        latency=timing.as_dict() if timing else None,
    )
