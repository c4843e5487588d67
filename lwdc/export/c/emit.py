"""Write a lowered (and optionally quantised) graph as C99 source: ``NAME.h``, ``NAME.c`` and an example
``main.c``. Weights become ``static const`` arrays (flash), activations live at planned offsets in one static
arena, and no function allocates."""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import numpy as np

from .graph import Graph
from .plan import MemoryPlan
from .quant import QuantizedGraph

ACT_CODE = {"none": 0, "relu": 1, "relu6": 2, "sigmoid": 3, "silu": 4}
_SECTION = re.compile(r"/\* @kernel (\w+) \*/\n(.*?)/\* @end \*/\n", re.S)


def _kernels() -> dict[str, str]:
    text = resources.files(__package__).joinpath("kernels.c").read_text()
    return dict(_SECTION.findall(text))


def _float_literal(v: float) -> str:
    s = "%.9g" % v  # 9 significant digits round-trip any float32
    return s + ("f" if ("." in s or "e" in s) else ".0f")


@dataclass
class _Array:
    name: str
    ctype: str
    values: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.values.size * np.dtype({"float": np.float32, "int8_t": np.int8, "int32_t": np.int32}
                                           [self.ctype]).itemsize

    def c(self) -> str:
        flat = self.values.reshape(-1)
        if self.ctype == "float":
            if not np.all(np.isfinite(flat)):
                raise ValueError(f"{self.name}: weights contain NaN or inf; nothing to export")
            items = [_float_literal(float(v)) for v in flat.astype(np.float32)]
        else:
            items = [str(int(v)) for v in flat]
        lines = [", ".join(items[i:i + 16]) for i in range(0, len(items), 16)]
        return f"static const {self.ctype} {self.name}[{len(items)}] = {{\n    " + ",\n    ".join(lines) + "\n};\n"


@dataclass
class CSource:
    header: str
    source: str
    main: str
    flash_bytes: int


class _Emitter:
    def __init__(self, graph: Graph, plan: MemoryPlan, qgraph: QuantizedGraph | None, name: str):
        self.g, self.plan, self.q, self.name = graph, plan, qgraph, name
        self.arrays: list[_Array] = []
        self.used: list[str] = []
        self.body: list[str] = []
        self.suffix = "q8" if qgraph else "f32"

    def use(self, *kernels: str) -> None:
        for k in kernels:
            if k not in self.used:
                self.used.append(k)

    def array(self, name: str, ctype: str, values: np.ndarray) -> str:
        self.arrays.append(_Array(name, ctype, values))
        return name

    def at(self, tensor: str) -> str:
        return f"A + {self.plan.offset(self.g, tensor) // (1 if self.q else 4)}"

    def call(self, kernel: str, *args) -> None:
        self.body.append(f"    lw_{kernel}({', '.join(str(a) for a in args)});")

    def node(self, i: int) -> None:
        n, g, sfx = self.g.nodes[i], self.g, self.suffix
        x = g.tensors[n.inputs[0]]
        y = g.tensors[n.output]
        self.body.append(f"    /* {n.op} {n.act if n.act != 'none' else ''} <- {n.where} */".replace("  <-", " <-"))
        if n.op == "conv":
            a = n.attrs
            geometry = [*n.weight.shape[2:], *a["stride"], *a["padding"], *a["dilation"], a["groups"]]
            self.use("range", "act_f32" if not self.q else "fixed", f"conv_{sfx}")
            if not self.q:
                w = self.array(f"n{i}_w", "float", n.weight)
                b = self.array(f"n{i}_b", "float", n.bias)
                self.call("conv_f32", self.at(n.inputs[0]), *x.shape, self.at(n.output), *y.shape, w, b,
                          *geometry, ACT_CODE[n.act])
            else:
                qn, lo_hi = self.q.nodes[i], self.q.nodes[i].clamp
                w = self.array(f"n{i}_w", "int8_t", qn.weight)
                b = self.array(f"n{i}_b", "int32_t", qn.bias)
                m = self.array(f"n{i}_m", "int32_t", qn.mult)
                s = self.array(f"n{i}_s", "int8_t", qn.shift)
                self.call("conv_q8", self.at(n.inputs[0]), *x.shape, self.at(n.output), *y.shape, w, b, m, s,
                          *geometry, self.q.qp(n.inputs[0]).zero_point, self.q.qp(n.output).zero_point,
                          *lo_hi, "lw_acc")
        elif n.op in ("maxpool", "avgpool"):
            a = n.attrs
            args = [self.at(n.inputs[0]), *x.shape, self.at(n.output), *y.shape[1:], *a["kernel"], *a["stride"],
                    *a["padding"]]
            if n.op == "avgpool":
                args.append(int(a["count_include_pad"]))
                if self.q:
                    args.append(self.q.qp(n.inputs[0]).zero_point)
            self.use("window", *(["fixed"] if self.q and n.op == "avgpool" else []), f"{n.op}_{sfx}")
            self.call(f"{n.op}_{sfx}", *args)
        elif n.op == "gap":
            self.use(*(["fixed"] if self.q else []), f"gap_{sfx}")
            zp = [self.q.qp(n.inputs[0]).zero_point] if self.q else []
            self.call(f"gap_{sfx}", self.at(n.inputs[0]), x.shape[0], x.shape[1] * x.shape[2], self.at(n.output), *zp)
        elif n.op == "add":
            if not self.q:
                self.use("act_f32", "add_f32")
                self.call("add_f32", self.at(n.inputs[0]), self.at(n.inputs[1]), self.at(n.output), y.size,
                          ACT_CODE[n.act])
            else:
                qn = self.q.nodes[i]
                self.use("fixed", "add_q8")
                self.call("add_q8", self.at(n.inputs[0]), self.at(n.inputs[1]), self.at(n.output), y.size,
                          *(self.q.qp(t).zero_point for t in (*n.inputs, n.output)),
                          f"{qn.mult[0]}LL", f"{qn.mult[1]}LL", qn.shift[0], *qn.clamp)
        elif n.op == "concat":
            offset = 0
            for j, t in enumerate(n.inputs):
                size = g.tensors[t].size
                dst = f"{self.at(n.output)} + {offset}"
                if self.q and self.q.qp(t) != self.q.qp(n.output):
                    qn = self.q.nodes[i]
                    self.use("fixed", "rescale_q8")
                    self.call("rescale_q8", self.at(t), dst, size, self.q.qp(t).zero_point,
                              self.q.qp(n.output).zero_point, f"{qn.mult[j]}LL", qn.shift[j])
                else:
                    self.body.append(f"    memcpy({dst}, {self.at(t)}, {size} * sizeof(*A));")
                offset += size
        elif n.op == "pad_channels":
            per_channel = x.shape[1] * x.shape[2]
            zp = [self.q.qp(n.inputs[0]).zero_point] if self.q else []
            self.use(f"pad_{sfx}")
            self.call(f"pad_{sfx}", self.at(n.inputs[0]), x.size, n.attrs["before"] * per_channel,
                      n.attrs["after"] * per_channel, self.at(n.output), *zp)
        elif n.op == "act":
            if self.q:
                lut = self.array(f"n{i}_lut", "int8_t", self.q.nodes[i].lut)
                self.use("lut_q8")
                self.call("lut_q8", self.at(n.inputs[0]), self.at(n.output), y.size, lut)
            else:
                self.use("act_f32")
                if self.at(n.inputs[0]) != self.at(n.output):
                    self.body.append(f"    memcpy({self.at(n.output)}, {self.at(n.inputs[0])}, {y.size} * sizeof(*A));")
                self.call("act_f32", self.at(n.output), y.size, ACT_CODE[n.act])
        else:  # pragma: no cover
            raise ValueError(n.op)

    def emit(self) -> CSource:
        for i in range(len(self.g.nodes)):
            self.node(i)
        if self.q:
            self.use("fixed")  # the float entry point saturates with lw_sat
        kernels = _kernels()
        NAME, name, g, q = self.name.upper(), self.name, self.g, self.q
        in_size, out_size = g.tensors[g.input].size, g.tensors[g.output].size
        flash = sum(a.nbytes for a in self.arrays)
        ctype = "int8_t" if q else "float"
        elems = self.plan.arena_bytes // (1 if q else 4)
        shape = lambda s: " x ".join(map(str, s))  # noqa: E731
        h = [f"/* {name}.h: generated by lwdc. Input {shape(g.input_shape)}, output {shape(g.output_shape)}, "
             f"{'int8' if q else 'float32'}. */",
             f"#ifndef {NAME}_H", f"#define {NAME}_H", "#include <stdint.h>", "",
             f"#define {NAME}_INPUT_SIZE {in_size}", f"#define {NAME}_OUTPUT_SIZE {out_size}",
             f"#define {NAME}_ARENA_BYTES {self.plan.arena_bytes}",
             f"#define {NAME}_PEAK_RAM_BYTES {self.plan.peak_ram_bytes}", f"#define {NAME}_FLASH_BYTES {flash}",
             f"#define {NAME}_MACS {g.macs}"]
        if q:
            qi, qo = q.qp(g.input), q.qp(g.output)
            h += [f"#define {NAME}_INPUT_SCALE {_float_literal(qi.scale)}", f"#define {NAME}_INPUT_ZERO_POINT "
                  f"{qi.zero_point}", f"#define {NAME}_OUTPUT_SCALE {_float_literal(qo.scale)}",
                  f"#define {NAME}_OUTPUT_ZERO_POINT {qo.zero_point}"]
        h += ["", "/* One sample in, one sample out; float input is what the PyTorch model takes (already",
              " * normalised). Not re-entrant: activations live in one static arena. */",
              f"void {name}_run(const float *input, float *output);"]
        if q:
            h += ["/* The same on already-quantised int8 input and output (see the SCALE/ZERO_POINT macros). */",
                  f"void {name}_run_int8(const int8_t *input, int8_t *output);"]
        h += ["", f"#endif /* {NAME}_H */", ""]

        c = [f"/* {name}.c: generated by lwdc; C99, no malloc, weights in flash, activations in one static arena. */",
             f'#include "{name}.h"', "#include <math.h>", "#include <string.h>", ""]
        c += [kernels[k] for k in self.used]
        c += [a.c() for a in self.arrays]
        c += [f"static {ctype} lw_arena[{max(elems, 1)}];"]
        if q:
            c += [f"static int32_t lw_acc[{max(self.plan.scratch_bytes // 4, 1)}];"]
        ins, outs = self.at(g.input), self.at(g.output)
        in_off, out_off = ins.split(" + ")[1], outs.split(" + ")[1]
        c += ["", "static void lw_body(void)", "{", f"    {ctype} *A = lw_arena;", *self.body, "}", ""]
        if q:
            c += [f"void {name}_run_int8(const int8_t *input, int8_t *output)", "{", "    int8_t *A = lw_arena;",
                  f"    memcpy({ins}, input, {in_size});", "    lw_body();", f"    memcpy(output, {outs}, {out_size});",
                  "}", "",
                  f"void {name}_run(const float *input, float *output)", "{", "    int8_t *A = lw_arena;", "    int i;",
                  f"    for (i = 0; i < {in_size}; ++i) {{",
                  f"        float v = input[i] / {NAME}_INPUT_SCALE;",
                  "        v = v > 1000.0f ? 1000.0f : (v < -1000.0f ? -1000.0f : v);",
                  f"        A[{in_off} + i] = lw_sat((int64_t)lrintf(v) + {NAME}_INPUT_ZERO_POINT, -128, 127);",
                  "    }", "    lw_body();",
                  f"    for (i = 0; i < {out_size}; ++i)",
                  f"        output[i] = {NAME}_OUTPUT_SCALE * (float)(A[{out_off} + i] - {NAME}_OUTPUT_ZERO_POINT);",
                  "}", ""]
        else:
            c += [f"void {name}_run(const float *input, float *output)", "{", "    float *A = lw_arena;",
                  f"    memcpy({ins}, input, {in_size} * sizeof(float));", "    lw_body();",
                  f"    memcpy(output, {outs}, {out_size} * sizeof(float));", "}", ""]
        return CSource("\n".join(h), "\n".join(c), _main(name, bool(q)), flash)


def _main(name: str, int8: bool) -> str:
    NAME = name.upper()
    q8 = f"""        if (int8) {{
            if (fread(qin, 1, {NAME}_INPUT_SIZE, in) != {NAME}_INPUT_SIZE) break;
            {name}_run_int8(qin, qout);
            fwrite(qout, 1, {NAME}_OUTPUT_SIZE, out);
            continue;
        }}
""" if int8 else """        if (int8) {
            fprintf(stderr, "--int8: this library was generated for float32\\n");
            return 2;
        }
"""
    return f"""/* Example and test driver for {name}.c, generated by lwdc.
 *   main INPUT.bin OUTPUT.bin        run every sample in INPUT.bin (raw float32), write raw float32 outputs
 *   main --int8 INPUT.bin OUTPUT.bin the same with raw int8 (int8 builds only)
 *   main --bench N INPUT.bin          time N runs on the first sample, print seconds per run
 * Build: cc -std=c99 -O2 main.c {name}.c -lm -o {name} */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "{name}.h"

int main(int argc, char **argv)
{{
    static float x[{NAME}_INPUT_SIZE], y[{NAME}_OUTPUT_SIZE];
{"    static int8_t qin[" + NAME + "_INPUT_SIZE], qout[" + NAME + "_OUTPUT_SIZE];" if int8 else ""}
    int int8 = 0, bench = 0, a = 1;
    FILE *in, *out = NULL;
    if (a < argc && strcmp(argv[a], "--int8") == 0) {{ int8 = 1; ++a; }}
    if (a + 1 < argc && strcmp(argv[a], "--bench") == 0) {{ bench = atoi(argv[a + 1]); a += 2; }}
    if (a >= argc || (!bench && a + 1 >= argc)) {{
        fprintf(stderr, "usage: %s [--int8] [--bench N] INPUT.bin [OUTPUT.bin]\\n", argv[0]);
        return 2;
    }}
    in = fopen(argv[a], "rb");
    if (!in) {{ perror(argv[a]); return 1; }}
    if (bench) {{
        clock_t t0;
        int i;
        if (fread(x, sizeof(float), {NAME}_INPUT_SIZE, in) != {NAME}_INPUT_SIZE) {{ fprintf(stderr, "short input\\n"); return 1; }}
        {name}_run(x, y);
        t0 = clock();
        for (i = 0; i < bench; ++i) {name}_run(x, y);
        printf("%.9f\\n", (double)(clock() - t0) / CLOCKS_PER_SEC / bench);
        fclose(in);
        return 0;
    }}
    out = fopen(argv[a + 1], "wb");
    if (!out) {{ perror(argv[a + 1]); return 1; }}
    for (;;) {{
{q8}        if (fread(x, sizeof(float), {NAME}_INPUT_SIZE, in) != {NAME}_INPUT_SIZE) break;
        {name}_run(x, y);
        fwrite(y, sizeof(float), {NAME}_OUTPUT_SIZE, out);
    }}
    fclose(in);
    fclose(out);
    printf("arena %d bytes, peak RAM %d bytes, flash %d bytes\\n", {NAME}_ARENA_BYTES, {NAME}_PEAK_RAM_BYTES,
           {NAME}_FLASH_BYTES);
    return 0;
}}
"""


def emit_c(graph: Graph, plan: MemoryPlan, qgraph: QuantizedGraph | None = None, name: str = "model") -> CSource:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"name {name!r} must be a C identifier (letters, digits, underscore)")
    return _Emitter(graph, plan, qgraph, name).emit()
