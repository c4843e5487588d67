"""What every benchmark result records besides accuracy: latency pairs, memory, the machine and the code version.

Latency is always measured as a pair (original and compressed model, alternating, in the same process on one
thread), so the ratio survives the load other processes put on a shared CPU better than either number does.
"""
from __future__ import annotations

import hashlib
import os
import platform
import resource
import statistics
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import nn

from lwdc.costs.latency import cpu_model
from lwdc.profiling import measure_latency

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["machine_info", "git_info", "memory_mb", "latency_pair", "speed_ratio", "int8_c_figures"]


def machine_info() -> dict:
    # two machines of this project both report "AMD EPYC"; the vector unit torch uses tells them apart (AVX-512
    # against AVX2 changed a ResNet-20 epoch from about 3.5 to 6 minutes on one thread)
    return {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version(), "torch": torch.__version__,
            "train_threads": torch.get_num_threads(), "load_average_1m": os.getloadavg()[0]}


def git_info() -> dict:
    """The commit the code ran on, whether lwdc/ or bench/ had uncommitted changes, and a hash of their .py
    files (so a result from uncommitted code can later be matched to the commit that holds the same code)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    sources = sorted(p for d in ("lwdc", "bench") for p in (ROOT / d).rglob("*.py"))
    digest = hashlib.sha256(b"".join(p.relative_to(ROOT).as_posix().encode() + b"\0" + p.read_bytes() for p in sources))
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "lwdc", "bench")),
            "source_sha256": digest.hexdigest()}


def memory_mb() -> dict:
    """Current and high-water resident set size of this process, in MiB (Linux /proc; ru_maxrss elsewhere)."""
    status = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                status[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    peak = status.get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"rss_mb": status.get("VmRSS"), "peak_rss_mb": peak}


def latency_pair(original: nn.Module, compressed: nn.Module, example: torch.Tensor, onnx: bool = True,
                 rounds: int = 3) -> dict[str, dict[str, float]]:
    """Median latency (ms, one thread) of both models, alternating over ``rounds``: PyTorch eager at batch 1
    and 64 and, with ``onnx``, onnxruntime at batch 1 (``lwdc.profiling.measure_latency``)."""
    settings = {"eager_b1": ("eager", 1, 30), "eager_b64": ("eager", 64, 10)}
    if onnx:
        settings["ort_b1"] = ("onnxruntime", 1, 200)
    out: dict[str, dict[str, float]] = {}
    for key, (backend, batch, repeats) in settings.items():
        x = example[:1].expand(batch, *example.shape[1:]).contiguous()
        times: dict[str, list[float]] = {"original": [], "compressed": []}
        for _ in range(rounds):
            for name, model in (("original", original), ("compressed", compressed)):
                times[name].append(measure_latency(model, x, repeats=repeats, backend=backend, threads=1))
        out[key] = {k: statistics.median(v) for k, v in times.items()}
    return out


def speed_ratio(latency_before: float, latency_after: float, macs_before: int, macs_after: int) -> float | None:
    """Measured latency reduction / MACs reduction: 1 means the FLOPs saving became time saving in full, 0 none,
    below 0 the smaller model is slower. None when the MACs did not go down."""
    saved = 1 - macs_after / macs_before
    return (1 - latency_after / latency_before) / saved if saved > 1e-9 else None


def int8_c_figures(model: nn.Module, calib: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
    """What a microcontroller would run: the model exported as int8 C (min/max ranges from ``calib``, verified bit
    for bit against the integer reference), its flash and planned peak RAM as the exporter counts them, and the
    compiled library's top-1 accuracy on ``inputs`` (normalised, as the model takes them)."""
    from lwdc.export import export_c
    from lwdc.export.c import evaluate_c

    with tempfile.TemporaryDirectory(prefix="lwdc-bench-int8-") as tmp:
        exp = export_c(model.eval(), calib[:1], Path(tmp) / "int8", int8=True, calib=calib, log=None)
        return {"flash_bytes": exp.summary["flash_bytes"], "peak_ram_bytes": exp.summary["peak_ram_bytes"],
                "int8_c_accuracy": evaluate_c(exp, inputs, targets)["accuracy"],
                "int8_verified": exp.summary.get("verified"), "calibration_samples": len(calib)}
