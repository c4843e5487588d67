"""int8 kernels on an emulated Cortex-M4 (issue 18): lwdc's portable C against Arm's CMSIS-NN, same models.

For ResNet-20 and MobileNetV2 (CIFAR-10 input, random weights with randomised BatchNorm statistics, calibrated
on random inputs: the instructions executed do not depend on the values, only on shapes and kernels), both
builds are exported for ``cortex-m4``, verified bit for bit against lwdc's integer reference in QEMU (and so
against each other), and measured:

* instructions per inference, from ``lwdc.export.c.instructions.count_instructions`` (QEMU ``-icount shift=0``,
  SysTick, resolution 40 instructions), per op kind as well;
* flash and RAM of the library as linked for the core (``library_size``: the object, with the CMSIS-NN functions
  it calls, partially linked with ``--gc-sections``; arena, scratch, staging and CMSIS-NN context in RAM), and
  the inference's stack depth (painted stack, ``count_instructions``).

Writes ``bench/results/mcu/kernels-cortex-m4.json``; ``section()`` renders the RESULTS.md table.
Run: python -m bench.mcu_kernels --cmsis-nn PATH  (a CMSIS-NN checkout; ../shared/third_party has one)
"""
from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from lwdc.export.c import export_c
from lwdc.export.c.instructions import count_instructions
from lwdc.models import create_model
from lwdc.runs import write_json

from .measure import git_info, machine_info

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "results" / "mcu"
MARKERS = ("<!-- bench:mcu:start -->", "<!-- bench:mcu:end -->")
BAR = 2.0          # the bar: portable instructions <= 2x CMSIS-NN's


def _randomised(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _cmsis_checkout(path: str | None, tmp: Path) -> Path:
    if path:
        return Path(path)
    archives = sorted((ROOT.parent / "shared" / "third_party").glob("cmsis-nn-*.tar.gz"))
    if not archives:
        raise SystemExit("give --cmsis-nn PATH (a CMSIS-NN checkout holding Include/ and Source/)")
    with tarfile.open(archives[-1]) as tar:
        tar.extractall(tmp, filter="data")
    return tmp / "CMSIS-NN"


def measure(name: str, cmsis_nn: Path, tmp: Path, target: str = "cortex-m4") -> dict:
    torch.manual_seed(0)
    model = _randomised(create_model(name, num_classes=10))
    x = torch.randn(8, 3, 32, 32)
    row = {"model": name, "target": target, "macs": None, "builds": {}}
    for kernels in ("portable", "cmsis-nn"):
        t0 = time.perf_counter()
        export = export_c(model, x[:2], tmp / f"{name}-{kernels}", int8=True, calib=x, target=target,
                          kernels=kernels, cmsis_nn=cmsis_nn if kernels == "cmsis-nn" else None)
        counts = count_instructions(export, x[0])
        by_op: dict[str, int] = defaultdict(int)
        for n in counts["per_node"]:
            by_op[n["op"]] += n["instructions"]
        s = export.summary
        row["macs"] = s["macs"]
        row["builds"][kernels] = {
            "instructions": counts["instructions"], "instructions_by_op": dict(by_op),
            "instructions_per_mac": round(counts["instructions"] / s["macs"], 3),
            "bit_exact_vs_reference": s["verified"]["int8_matches_reference"],
            "linked": s["linked"], "planned_peak_ram_bytes": s["peak_ram_bytes"], "kernels": s["kernels"],
            "stack_bytes": counts["stack_bytes"],
            "method": counts["method"], "compiled_with": counts["compiled_with"],
            "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{name} {kernels}: {counts['instructions']:,} instructions, flash {s['linked']['flash_bytes']:,} B, "
              f"RAM {s['linked']['ram_bytes']:,} B", flush=True)
    b = row["builds"]
    row["portable_over_cmsis"] = round(b["portable"]["instructions"] / b["cmsis-nn"]["instructions"], 3)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cmsis-nn", default=None)
    p.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2"])
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lwdc-mcu-bench-") as tmp:
        cmsis = _cmsis_checkout(a.cmsis_nn, Path(tmp))
        rows = [measure(m, cmsis, Path(tmp)) for m in a.models]
    result = {"benchmark": "mcu_kernels", "rows": rows, "bar": f"portable <= {BAR}x CMSIS-NN instructions",
              "cmsis_nn": {"source": str(a.cmsis_nn or "../shared/third_party (archive)"),
                           "define": "CMSIS_NN_USE_SINGLE_ROUNDING"},
              "git": git_info(), "machine": machine_info()}
    write_json(OUT / "kernels-cortex-m4.json", result)
    print(section(OUT.parent) or "")


def section(results: Path) -> str:
    path = results / "mcu" / "kernels-cortex-m4.json"
    if not path.is_file():
        return ""
    data = json.loads(path.read_text())
    lines = ["### int8 kernels on an emulated Cortex-M4: lwdc's portable C against CMSIS-NN",
             "",
             "`python -m bench.mcu_kernels` (JSON: `bench/results/mcu/kernels-cortex-m4.json`). Both builds are the same "
             "int8 model (random weights, CIFAR-10 input shape), each verified bit for bit against lwdc's integer "
             "reference in QEMU (`mps2-an386`). Instructions: QEMU `-icount shift=0` with SysTick (1 tick = 40 "
             "instructions), one inference; not cycles. Flash and RAM: the library as linked for the core (object "
             "plus the CMSIS-NN functions it calls, `--gc-sections`); stack: the inference's depth, measured by painting.",
             "",
             "| model | MACs | kernels | instructions | per MAC | conv | add | flash B | RAM B | stack B | portable / CMSIS-NN |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        for k in ("portable", "cmsis-nn"):
            b = r["builds"][k]
            ratio = f"**{r['portable_over_cmsis']:.2f}x**" + ("" if r["portable_over_cmsis"] <= BAR else " ✗") \
                if k == "portable" else ""
            ops = b["instructions_by_op"]
            lines.append(f"| {r['model']} | {r['macs']:,} | {k} | {b['instructions']:,} | {b['instructions_per_mac']:.2f} | "
                         f"{ops.get('conv', 0):,} | {ops.get('add', 0):,} | {b['linked']['flash_bytes']:,} | "
                         f"{b['linked']['ram_bytes']:,} | {b.get('stack_bytes') or '-'} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
