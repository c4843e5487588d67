"""Measured latency: every candidate branch timed on this host, cached on disk, so the search minimises time.

FLOPs do not predict time on a CPU (depthwise and grouped convolutions save MACs and can lose time, see
docs/DESIGN.md), so this model measures instead of assuming. Each branch is timed **in isolation** on a random
input of its layer's input shape: warm-up first, then the median of repeated runs (``lwdc.profiling.median_ms``).
By default with **one thread**: the search machine is often shared, one thread is what an embedded target or a
server replica per core gets, and single-thread timings are far less noisy than multi-thread ones.

The table is cached as JSON under ``cache_dir`` (default ``$LWDC_CACHE_DIR/latency``, else
``~/.cache/lwdc/latency``): one file per environment (CPU model, machine, PyTorch and onnxruntime versions,
back end), one entry per (what was measured, input shape, batch, threads). A module is identified by a hash of
its ``repr``, which names every layer and its hyper-parameters (not its weights, which do not change the time).
Delete the file to measure again.

Spec strings for ``get_cost_model``: ``latency`` (PyTorch eager), ``latency:onnxruntime`` (or ``ort``), with
optional ``b<N>`` (batch size) and ``t<N>`` (threads): ``latency:onnxruntime:b8:t1``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import torch
from torch import nn

from ..ops import LayerSpec
from ..profiling import measure_latency
from .cache import MeasurementCache

__all__ = ["LatencyCost", "default_cache_dir", "host_description", "BACKENDS"]

BACKENDS = ("eager", "onnxruntime")
_ALIASES = {"ort": "onnxruntime", "torch": "eager", "pytorch": "eager"}


def default_cache_dir() -> Path:
    root = os.environ.get("LWDC_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "lwdc") / "latency"


def cpu_model() -> str:
    """The CPU's marketing name (what a cached timing depends on most)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_description(backend: str) -> dict:
    """What a cached timing depends on besides the layer: the CPU and the software that ran it."""
    info = {"cpu": cpu_model(), "machine": platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "backend": backend}
    if backend == "onnxruntime":
        import onnxruntime
        info["onnxruntime"] = onnxruntime.__version__
    return info


class LatencyCost:
    """Milliseconds per forward pass at ``batch_size``, measured with ``backend`` on ``threads`` threads."""

    name, unit = "latency", "ms"

    def __init__(self, backend: str = "eager", batch_size: int = 1, threads: int = 1,
                 cache_dir: str | Path | None = None, repeats: int = 20, min_seconds: float = 0.05):
        backend = _ALIASES.get(backend, backend)
        if backend not in BACKENDS:
            raise ValueError(f"unknown latency backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if batch_size < 1 or threads < 1:
            raise ValueError(f"batch size and threads must be >= 1, got {batch_size} and {threads}")
        if backend == "onnxruntime":
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                raise ValueError("latency:onnxruntime needs the onnxruntime package: pip install onnxruntime") from None
        self.backend, self.batch_size, self.threads = backend, batch_size, threads
        self.repeats, self.min_seconds = repeats, min_seconds
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.host = host_description(backend)
        digest = hashlib.sha256(json.dumps(self.host, sort_keys=True).encode()).hexdigest()[:12]
        self.path = self.cache_dir / f"{backend}-{digest}.json"
        self.measurements = 0       # timings actually taken by this object (cache misses)
        self.cache_hits = 0
        self.cache = MeasurementCache(self.path, self.host)

    @classmethod
    def from_spec(cls, args: list[str], **kwargs) -> "LatencyCost":
        for arg in args:
            if arg[:1] in "bt" and arg[1:].isdigit():
                kwargs["batch_size" if arg[0] == "b" else "threads"] = int(arg[1:])
            else:
                kwargs["backend"] = arg
        return cls(**kwargs)

    def __repr__(self) -> str:
        return f"LatencyCost({self.backend}, batch {self.batch_size}, {self.threads} thread(s), cache {self.path})"

    def key(self, module: nn.Module, in_shape: tuple[int, ...], label: str = "") -> str:
        structure = hashlib.sha256(repr(module).encode()).hexdigest()[:16]
        shape = "x".join(map(str, in_shape))
        return f"{label}|in={shape}|b={self.batch_size}|t={self.threads}|{structure}"

    def measure(self, module: nn.Module, in_shape: tuple[int, ...], label: str = "") -> float:
        """Median ms of ``module`` on a batch of ``batch_size`` samples of shape ``in_shape`` (cached)."""
        key = self.key(module, tuple(in_shape), label)
        cached = self.cache.get(key)
        if cached is not None:
            self.cache_hits += 1
            return cached
        x = torch.randn(self.batch_size, *in_shape, generator=torch.Generator().manual_seed(0))
        value = measure_latency(module, x, repeats=self.repeats, warmup=3, min_seconds=self.min_seconds,
                                backend=self.backend, threads=self.threads)
        self.measurements += 1
        self.cache.put(key, value)
        return value

    # ------------------------------------------------------------------------------------- the interface
    def branch_cost(self, spec: LayerSpec, op_name: str, branch: nn.Module) -> float:
        return self.measure(branch, (spec.in_ch, *spec.in_size), op_name)

    def network_cost(self, model: nn.Module, example_input: torch.Tensor) -> float:
        """The whole network measured the same way: the reference the search's cost ratio is taken against."""
        return self.measure(model, tuple(example_input.shape[1:]), "network")
