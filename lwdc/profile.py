"""Measure a plain model: parameters, multiply-accumulates and CPU latency.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2), an independent counter of what
actually ran, so they also check the closed-form counts of ``lwdc.ops``. Latency is the median of repeated
timed runs, because single timings on a shared CPU are noisy.
"""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Profile", "count_params", "count_macs", "measure_latency", "profile"]


@dataclass
class Profile:
    params: int
    macs: int                    # per sample
    latency_ms: float | None     # median, at the profiled batch size
    batch_size: int

    def as_dict(self) -> dict:
        return asdict(self)


@contextmanager
def eval_mode(model: nn.Module):
    """Eval mode for the block, then every submodule's previous mode. A ``torch.export`` module has its mode
    baked in and refuses ``eval()``: it is used as it is."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
    except NotImplementedError:
        yield model
        return
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.train(mode)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates per sample of one eval-mode forward pass."""
    with eval_mode(model), FlopCounterMode(display=False) as counter:
        model(example_input)
    return counter.get_total_flops() // 2 // example_input.shape[0]


@torch.no_grad()
def measure_latency(model: nn.Module, example_input: torch.Tensor, repeats: int = 30, warmup: int = 5,
                    min_seconds: float = 0.2) -> float:
    """Median wall time in milliseconds of an eval-mode forward pass, PyTorch eager on the CPU.

    Warm-up runs for at least ``warmup`` calls and ``min_seconds`` (the first calls of a fresh model create
    oneDNN kernels and can be 100x slower); timing takes at least ``repeats`` calls and ``min_seconds``.
    """
    with eval_mode(model):
        start = time.perf_counter()
        n = 0
        while n < warmup or time.perf_counter() - start < min_seconds:
            model(example_input)
            n += 1
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - start < min_seconds:
            t = time.perf_counter()
            model(example_input)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def profile(model: nn.Module, example_input: torch.Tensor, latency: bool = True, repeats: int = 30) -> Profile:
    return Profile(
        params=count_params(model),
        macs=count_macs(model, example_input),
        latency_ms=measure_latency(model, example_input, repeats=repeats) if latency else None,
        batch_size=int(example_input.shape[0]),
    )
