"""Speed of lwdc's portable float C against onnxruntime on this x86 core, one thread each (issue 18).

For ResNet-20 and MobileNetV2 (CIFAR-10 input, random weights with randomised BatchNorm statistics: speed does
not depend on the values), the float32 C export is compiled with ``gcc -O2 -ftree-vectorize -march=native`` (the
flags a user builds an x86 library with; ``-O3`` is slower for the blocked kernels here) and timed against
onnxruntime on the ONNX export of the same model, batch 1. The two alternate: each round times ``--runs``
inferences of the C program (CPU time inside it) and then of onnxruntime (median of single runs), and the ratio is
taken per round, so load from other jobs hits both; the result is the median of the per-round ratios with their
range. The int8 export of each model is checked bit for bit against lwdc's integer reference on the way.

Writes ``bench/results/c_speed.json``; ``section()`` renders the RESULTS.md table.
Run: python -m bench.c_speed [--rounds 7 --runs 200]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import torch
from torch import nn

from lwdc.export import export_c, export_onnx
from lwdc.export.c import compile_library
from lwdc.export.c.build import time_library
from lwdc.models import create_model
from lwdc.runs import write_json

from .deploy import ort_latency
from .measure import git_info, machine_info

OUT = Path(__file__).resolve().parent / "results" / "c_speed.json"
MARKERS = ("<!-- bench:cspeed:start -->", "<!-- bench:cspeed:end -->")
FLAGS = ("-O2", ("-ftree-vectorize", "-march=native"))
BAR = 3.0          # the bar: float C <= 3x onnxruntime


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def measure(name: str, rounds: int, runs: int, tmp: Path) -> dict:
    model = _model(name)
    x = torch.randn(8, 3, 32, 32)
    exp = export_c(model, x[:2], tmp / f"{name}-f32")
    q = export_c(model, x[:2], tmp / f"{name}-int8", int8=True, calib=x)
    export_onnx(model, x[:1], tmp / f"{name}.onnx")
    exe = compile_library(exp.directory, "model", opt=FLAGS[0], extra=FLAGS[1])
    sample = x[:1].numpy()
    c_ms, ort_ms, ratios = [], [], []
    try:
        time_library(exe, sample, max(runs // 10, 3))                      # warm the page cache
        for _ in range(rounds):
            c = time_library(exe, sample, runs) * 1e3
            o = ort_latency(tmp / f"{name}.onnx", sample, runs) * 1e3
            c_ms.append(c)
            ort_ms.append(o)
            ratios.append(c / o)
            print(f"{name}: C {c:.3f} ms, onnxruntime {o:.3f} ms, {c / o:.2f}x", flush=True)
    finally:
        shutil.rmtree(exe.parent, ignore_errors=True)
    return {"model": name, "macs": exp.summary["macs"], "c_ms": c_ms, "onnxruntime_ms": ort_ms,
            "ratios": ratios, "ratio_median": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
            "float_check": exp.summary["verified"], "int8_bit_exact": q.summary["verified"]["int8_matches_reference"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2"])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--runs", type=int, default=200)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="lwdc-cspeed-") as tmp:
        rows = [measure(m, a.rounds, a.runs, Path(tmp)) for m in a.models]
    write_json(OUT, {"benchmark": "c_speed", "rows": rows, "compiled_with": ["gcc", FLAGS[0], *FLAGS[1]],
                     "rounds": a.rounds, "runs": a.runs, "git": git_info(), "machine": machine_info()})
    print(section(OUT.parent))


def section(results: Path) -> str:
    path = results / "c_speed.json"
    if not path.is_file():
        return ""
    data = json.loads(path.read_text())
    m = data["machine"]
    lines = ["### Float C against onnxruntime on the development CPU (one thread, batch 1)", "",
             f"`python -m bench.c_speed` (JSON: `bench/results/c_speed.json`): {data['rounds']} alternating rounds of "
             f"{data['runs']} inferences each, compiled with `{' '.join(data['compiled_with'])}`; the ratio is per "
             f"round, reported as the median and range. Machine: {m.get('cpu', '?')}, load average "
             f"{m.get('load_average_1m', '?'):.1f} at the start (other jobs ran beside it).", "",
             "| model | MACs | float C ms (median) | onnxruntime ms (median) | C / onnxruntime | int8 bit-exact |",
             "|---|---|---|---|---|---|"]
    for r in data["rows"]:
        ok = "" if r["ratio_median"] <= BAR else " ✗"
        lines.append(f"| {r['model']} | {r['macs']:,} | {statistics.median(r['c_ms']):.2f} | "
                     f"{statistics.median(r['onnxruntime_ms']):.2f} | **{r['ratio_median']:.2f}x**{ok} "
                     f"({r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}) | {r['int8_bit_exact']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
