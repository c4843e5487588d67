"""How much time a width operator saves in onnxruntime, by how many channels it keeps.

    python -m bench.width_align [--rounds 15] [--out bench/results/width_align.json]

A width operator on a ResNet block's second convolution cuts the block's inner channels: the pair
``conv3x3(c -> k) -> ReLU -> conv3x3(k -> c)`` at each ResNet-20 stage's size (c = 16, 32, 64 at 32x32, 16x16,
8x8). This times that pair for every inner width k the ``width`` operator set can make (75, 50, 25 % of c) and the
multiples of 16 between, against the full pair, all alternating in one process on one thread (the ratio survives
other jobs' load better than the times). It records time ratio, MACs ratio and speed ratio (time saved / MACs
saved) per pair: where the runtime computes in blocks of channels, widths off a block boundary save MACs but little
time, which is why the ``width-a16`` operator set exists.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch import nn

from lwdc.profiling import count_macs, onnx_session, median_ms

from .measure import ROOT, git_info, machine_info, speed_ratio

STAGES = ((16, 32), (32, 16), (64, 8))


def block_pair(channels: int, inner: int) -> nn.Module:
    """The two convolutions of a basic residual block, with ``inner`` channels between them (folded norms)."""
    return nn.Sequential(nn.Conv2d(channels, inner, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(inner, channels, 3, padding=1)).eval()


def inner_widths(channels: int) -> list[int]:
    """The widths the ``width`` set makes (75/50/25 %) and every multiple of 16 below ``channels``, descending."""
    return sorted({channels * p // 100 for p in (75, 50, 25)} | set(range(16, channels, 16)), reverse=True)


def measure(rounds: int, repeats: int = 50) -> list[dict]:
    torch.manual_seed(0)
    rows = []
    for channels, size in STAGES:
        x = torch.randn(1, channels, size, size)
        widths = [channels] + inner_widths(channels)
        models = {k: block_pair(channels, k) for k in widths}
        sessions = {k: onnx_session(m, x, 1) for k, m in models.items()}
        feed = {next(iter(sessions.values())).get_inputs()[0].name: x.numpy()}
        times: dict[int, list[float]] = {k: [] for k in widths}
        for r in range(rounds):
            order = widths[r % len(widths):] + widths[:r % len(widths)]    # rotate, so load hits all alike
            for k in order:
                times[k].append(median_ms(lambda s=sessions[k]: s.run(None, feed), repeats, 5, 0.05))
        full_ms, full_macs = statistics.median(times[channels]), count_macs(models[channels], x)
        for k in widths[1:]:
            ms, macs = statistics.median(times[k]), count_macs(models[k], x)
            rows.append({"channels": channels, "size": size, "inner": k, "aligned16": k % 16 == 0,
                         "ort_ms": round(ms, 5), "full_ms": round(full_ms, 5), "time_ratio": round(ms / full_ms, 3),
                         "macs_ratio": round(macs / full_macs, 3),
                         "speed_ratio": round(speed_ratio(full_ms, ms, full_macs, macs), 3)})
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "width_align.json")
    a = p.parse_args(argv)
    rows = measure(a.rounds)
    result = {"what": "ResNet-20 block pair conv3x3(c->k)->ReLU->conv3x3(k->c), onnxruntime batch 1, one thread",
              "rounds": a.rounds, "rows": rows, "machine": machine_info(), "git": git_info()}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    for r in rows:
        print(f"c={r['channels']:3d} {r['size']:2d}x{r['size']:<2d} inner {r['inner']:3d}: time {r['time_ratio']:.2f} "
              f"MACs {r['macs_ratio']:.2f} speed ratio {r['speed_ratio']:.2f}" + ("  (x16)" if r["aligned16"] else ""))
    return result


if __name__ == "__main__":
    main()
