"""Binary against int8 convolution on an emulated Cortex-M4 (issue 19): instructions of one 3x3, 64 -> 64 channel
convolution on a 16 x 16 input (BatchNorm folded in), exported by lwdc's C exporter and counted with its QEMU
instruction counter (``lwdc.export.c.instructions``: -icount, SysTick read after every node, resolution 40).

Four builds of the same layer: int8 conv, binary conv with int8 input and output (both the portable kernels a
user gets), and for scale the float32 builds of each. Then the binary int8 build again with other popcounts
swapped into its ``lw_bin_dot`` (the generated model.c edited, nothing else): the shipped count without its
three-word step, the classic per-word SWAR count with one multiply per word, an 8-bit lookup table, and GCC's
``__builtin_popcount`` (a libgcc call on a Cortex-M4, which has no popcount instruction). Every export is checked first (float against PyTorch, int8 bit
for bit against the integer reference, in QEMU).

Writes bench/results/binary/kernel.json.  Run: python -m bench.binary_kernel [--size 16] [--channels 64]
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from lwdc.binary import BinaryConv2d, binary_macs, bops
from lwdc.export import export_c
from lwdc.export.c.instructions import count_instructions
from lwdc.export.c.targets import get_target
from lwdc.runs import write_json

from .measure import git_info, machine_info

OUT = Path(__file__).resolve().parent / "results" / "binary" / "kernel.json"

# lw_bin_dot bodies to compare (the shipped one first); each returns n - 2 * popcount(win XOR w) over T words
POPCOUNTS = {
    "swar-bytes-deferred-1word": r"""{
    uint32_t total = 0;
    int t = 0;
    while (t < T) {
        const int end = T - t > 31 ? t + 31 : T;
        uint32_t bytes = 0;
        for (; t < end; ++t) {
            uint32_t v = lw_ldw(win, t) ^ (uint32_t)w[t];
            v -= (v >> 1) & 0x55555555u;
            v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
            bytes += (v + (v >> 4)) & 0x0F0F0F0Fu;
        }
        bytes = (bytes & 0x00FF00FFu) + ((bytes >> 8) & 0x00FF00FFu);
        total += (bytes * 0x00010001u) >> 16;
    }
    return n - 2 * (int32_t)total;
}""",
    "swar-per-word": r"""{
    uint32_t total = 0;
    int t;
    for (t = 0; t < T; ++t) {
        uint32_t v = lw_ldw(win, t) ^ (uint32_t)w[t];
        v -= (v >> 1) & 0x55555555u;
        v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
        v = (v + (v >> 4)) & 0x0F0F0F0Fu;
        total += (v * 0x01010101u) >> 24;
    }
    return n - 2 * (int32_t)total;
}""",
    "table-8bit": r"""{
    static const uint8_t bits[256] = {
#define B2(k) k, k + 1, k + 1, k + 2
#define B4(k) B2(k), B2(k + 1), B2(k + 1), B2(k + 2)
#define B6(k) B4(k), B4(k + 1), B4(k + 1), B4(k + 2)
        B6(0), B6(1), B6(1), B6(2)
#undef B2
#undef B4
#undef B6
    };
    uint32_t total = 0;
    int t;
    for (t = 0; t < T; ++t) {
        const uint32_t v = lw_ldw(win, t) ^ (uint32_t)w[t];
        total += bits[v & 255u] + bits[(v >> 8) & 255u] + bits[(v >> 16) & 255u] + bits[v >> 24];
    }
    return n - 2 * (int32_t)total;
}""",
    "gcc-builtin": r"""{
    uint32_t total = 0;
    int t;
    for (t = 0; t < T; ++t) total += (uint32_t)__builtin_popcount(lw_ldw(win, t) ^ (uint32_t)w[t]);
    return n - 2 * (int32_t)total;
}""",
}
_BODY = re.compile(r"(static int32_t lw_bin_dot\(const void \*win, const int32_t \*w, int T, int32_t n\)\n)\{.*?\n\}\n",
                   re.S)


class Layer(nn.Module):
    def __init__(self, conv: nn.Module, channels: int):
        super().__init__()
        self.conv, self.bn = conv, nn.BatchNorm2d(channels)

    def forward(self, x):
        return self.bn(self.conv(x))


def layers(channels: int, x: torch.Tensor) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    out = {"int8 conv": Layer(nn.Conv2d(channels, channels, 3, padding=1, bias=False), channels),
           "binary conv": Layer(BinaryConv2d(channels, channels, 3, padding=1), channels)}
    for m in out.values():
        with torch.no_grad():
            m.train()(x)                       # sets the binary layer's thresholds; BatchNorm statistics
        m.eval()
    return out


def measure(model: nn.Module, x: torch.Tensor, folder: Path, int8: bool, popcount: str | None = None) -> dict:
    export = export_c(model, x, folder, int8=int8, calib=x if int8 else None, target="cortex-m4", overwrite=True)
    if popcount is not None:
        source = folder / "model.c"
        text, found = _BODY.subn(lambda m: m.group(1) + POPCOUNTS[popcount] + "\n", source.read_text())
        assert found == 1, "lw_bin_dot not found in the generated C"
        source.write_text(text)
    counted = count_instructions(export, x[0])
    (node,) = [n for n in counted["per_node"] if n["op"] in ("conv", "binconv")]
    return {"instructions": counted["instructions"], "layer_instructions": node["instructions"],
            "flash_bytes": export.summary["flash_bytes"], "peak_ram_bytes": export.summary["peak_ram_bytes"],
            "linked": export.summary.get("linked"), "verified": export.summary.get("verified"),
            "compiled_with": counted["compiled_with"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not get_target("cortex-m4").can_run():
        raise SystemExit("needs arm-none-eabi-gcc, newlib and qemu-system-arm (apt-get install gcc-arm-none-eabi "
                         "libnewlib-arm-none-eabi qemu-system-arm)")
    c, s = args.channels, args.size
    x = torch.randn(32, c, s, s, generator=torch.Generator().manual_seed(1))
    models = layers(c, x)
    n_macs = s * s * c * c * 9
    started = time.time()
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="lwdc-bench-binary-") as tmp:
        for label, int8 in (("int8", True), ("float32", False)):
            for kind, model in models.items():
                name = f"{'binary' if 'binary' in kind else 'conv'} {label}"
                rows[name] = measure(model, x, Path(tmp) / name.replace(" ", "_"), int8)
                print(f"{name:>16}: {rows[name]['layer_instructions']:>12,} instructions in the layer, "
                      f"{rows[name]['instructions']:>12,} per inference", flush=True)
        for variant in POPCOUNTS:
            name = f"binary int8 popcount={variant}"
            rows[name] = measure(models["binary conv"], x, Path(tmp) / variant, True, popcount=variant)
            print(f"{name}: {rows[name]['layer_instructions']:,}", flush=True)
    conv, binary = rows["conv int8"]["layer_instructions"], rows["binary int8"]["layer_instructions"]
    n_bops = bops(s * s, c, c, 9)
    result = {
        "layer": {"input": [c, s, s], "kernel": [3, 3], "out_channels": c, "padding": 1, "stride": 1,
                  "batchnorm": "folded", "macs": n_macs, "bops": n_bops, "binary_mac_equivalent": binary_macs(n_bops)},
        "target": "cortex-m4 (QEMU mps2-an386, -icount shift=0; SysTick resolution 40 instructions)",
        "popcount_shipped": "swar-3word: SWAR 4-bit counts of 3 words added before the byte step, byte counts of "
                            "up to 30 words summed before one collection (lwdc/export/c/ops/binary.py)",
        "builds": rows,
        "ratio_int8_conv_over_binary": round(conv / binary, 2),
        "ratio_float_conv_over_binary_float": round(rows["conv float32"]["layer_instructions"]
                                                    / rows["binary float32"]["layer_instructions"], 2),
        "instructions_per_mac_int8_conv": round(conv / n_macs, 3),
        "instructions_per_bop_binary": round(binary / n_bops, 4),
        "popcount_variants": {"swar-3word": binary, **{v: rows[f"binary int8 popcount={v}"]["layer_instructions"]
                                                          for v in POPCOUNTS}},
        "wall_seconds": round(time.time() - started, 1), "machine": machine_info(), "git": git_info(),
    }
    write_json(args.out, result)
    print(f"int8 conv / binary: {result['ratio_int8_conv_over_binary']}x fewer instructions for binary "
          f"({conv:,} vs {binary:,}); popcounts: {result['popcount_variants']}; wrote {args.out}")


if __name__ == "__main__":
    main()
