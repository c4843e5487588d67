"""Write a lowered (and optionally quantised) graph as C99 source: ``NAME.h``, ``NAME.c`` and an example
``main.c``. Weights become ``static const`` arrays (flash), activations live at planned offsets in one static
arena, and no function allocates. What each node becomes is its op entry's ``emit``; every piece of text that
did not come from lwdc passes ``safe`` first."""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ..codebook import encode_values
from .fixed import QNode
from .cmsis import KERNELS as CMSIS_KERNELS, SINGLE_ROUNDING, CmsisPlan
from .ir import Graph
from .plan import MemoryPlan
from .quant import QuantizedGraph
from .registry import kernel_sources, op_for
from .safe import c_comment, check_identifier, check_name

#: How a float32 build stores conv weights. ``dense``: every weight a float in flash. ``startup``: a layer
#: holding few distinct values (weight sharing, ``lwdc share``) is stored as its codebook, bit-packed codes (and a
#: bitmap of its zeros where that is smaller) and one float per output channel for a folded BatchNorm; the first
#: run decodes all such layers into one RAM buffer. ``on-the-fly``: the same storage, each layer decoded into one
#: shared RAM buffer (the size of the largest) right before its convolution, on every run.
WEIGHT_MODES = ("dense", "startup", "on-the-fly")



def check_weight_mode(weights: str, int8: bool) -> None:
    if weights not in WEIGHT_MODES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_MODES)}, got {weights!r}")
    if weights != "dense" and int8:
        raise ValueError(f"weights={weights!r} codes float32 weights; an int8 build stores 8-bit weights already: "
                         "use weights='dense' with int8")


_SECTION = re.compile(r"/\* @kernel (\w+) \*/\n(.*?)/\* @end \*/\n", re.S)


def _kernels() -> dict[str, str]:
    """kernels.c's sections, then those op entries bring themselves."""
    text = resources.files(__package__).joinpath("kernels.c").read_text()
    return {**dict(_SECTION.findall(text)), **kernel_sources()}


def kernels_digest() -> str:
    """A short hash of every C kernel lwdc can emit: measured costs cached against it (``costs/mcu.py``) go stale
    when a kernel changes."""
    import hashlib
    text = "\n".join(f"{k}\n{v}" for k, v in sorted({**_kernels(), **CMSIS_KERNELS}.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


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
        return max(self.values.size, 1) * np.dtype({"float": np.float32, "int8_t": np.int8, "int32_t": np.int32,
                                            "uint8_t": np.uint8}[self.ctype]).itemsize

    def c(self) -> str:
        flat = self.values.reshape(-1)
        if flat.size == 0:               # C99 has no empty arrays (a 1-value codebook needs no codes)
            flat = np.zeros(1, self.values.dtype)
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
    weights: dict               # how float conv weights are stored (see WEIGHT_MODES) and the RAM they take
    extra_ram_bytes: int = 0    # buffers outside the arena that CMSIS-NN calls need (staging, kernel scratch)


class _Emitter:
    """What an op's ``emit`` writes through: kernel sections, constant arrays (named ``n<index>_<suffix>``,
    never after user text), arena addresses and calls into the body of ``lw_body``."""

    def __init__(self, graph: Graph, plan: MemoryPlan, qgraph: QuantizedGraph | None, name: str,
                 weights: str = "dense", cmsis: CmsisPlan | None = None):
        check_weight_mode(weights, qgraph is not None)
        if cmsis is not None and qgraph is None:
            raise ValueError("CMSIS-NN kernels are int8: export with int8=True, or use kernels='portable'")
        self.g, self.plan, self.q, self.name, self.weight_mode = graph, plan, qgraph, name, weights
        self.cmsis = cmsis                 # a CmsisPlan: these nodes call CMSIS-NN (cmsis.py)
        self.startup: list[str] = []       # decode calls of the first run (``startup``)
        self.weight_ram = 0                # floats: all decoded layers (startup) or the largest (on-the-fly)
        self.coded: list[dict] = []
        self.arrays: list[_Array] = []
        self.used: list[str] = []
        self.body: list[str] = []
        self.int8 = qgraph is not None
        self.sfx = "q8" if qgraph else "f32"
        self.index = 0

    @property
    def qnode(self) -> QNode:
        return self.q.nodes[self.index]

    def qp(self, tensor: str):
        return self.q.qp(tensor)

    def zp(self, tensor: str) -> int:
        return self.q.qp(tensor).zero_point

    def shape(self, tensor: str) -> tuple[int, int, int]:
        return self.g.tensors[tensor].shape

    def size(self, tensor: str) -> int:
        return self.g.tensors[tensor].size

    def use(self, *kernels: str) -> None:
        for k in kernels:
            if k not in self.used:
                self.used.append(k)

    def array(self, suffix: str, ctype: str, values: np.ndarray) -> str:
        name = f"n{self.index}_{check_identifier(suffix, 'array suffix')}"
        self.arrays.append(_Array(name, ctype, values))
        return name

    def float_weights(self, node) -> str:
        """The C expression of a float conv's weights: its flash array, or where ``weight_mode`` decodes it."""
        stored, scale = self._coded(node)
        if stored is None:
            return self.array("w", "float", node.weight)
        args = [stored["count"], node.weight.shape[0], self.array("cb", "float", stored["codebook"]),
                self.array("sc", "float", scale) if scale is not None else "0",
                self.array("c", "uint8_t", stored["codes"]), stored["code_bits"],
                self.array("z", "uint8_t", stored["bitmap"]) if "bitmap" in stored else "0"]
        self.use("decode_f32")
        if self.weight_mode == "startup":
            target = f"lw_wram + {self.weight_ram}"
            self.startup.append(f"        lw_decode_f32({target}, {', '.join(map(str, args))});")
            self.weight_ram += stored["count"]
        else:
            target = "lw_wram"
            self.call("decode_f32", target, *args)
            self.weight_ram = max(self.weight_ram, stored["count"])
        self.coded.append({"where": node.where, "values": int(stored["codebook"].size), "format": stored["format"],
                           "code_bits": stored["code_bits"], "count": stored["count"],
                           "folded_scale": scale is not None})
        return target

    def _coded(self, node) -> tuple[dict | None, np.ndarray | None]:
        """The stored form of ``node``'s weights, and its per-output-channel scale, when coding them is smaller;
        the scale is used only if ``unscaled * channel_scale`` is exactly the weight (it is, by construction)."""
        if self.weight_mode == "dense":
            return None, None
        if node.unscaled is not None:
            rebuilt = node.unscaled * node.channel_scale.reshape(-1, *([1] * (node.weight.ndim - 1)))
            if np.array_equal(rebuilt.view(np.uint32), node.weight.view(np.uint32)):
                stored = encode_values(node.unscaled)
                if stored is not None and stored["bits"] + 32 * len(node.channel_scale) < 32 * node.weight.size:
                    return stored, node.channel_scale
        return encode_values(node.weight), None

    def at(self, tensor: str) -> str:
        """The tensor's address in the arena: its buffer's planned offset plus, for a view, where it starts."""
        return f"A + {self.plan.offset(self.g, tensor) // (1 if self.q else 4) + self.g.tensors[tensor].offset}"

    def line(self, statement: str) -> None:
        self.body.append(f"    {statement}")

    def call(self, kernel: str, *args) -> None:
        self.line(f"lw_{kernel}({', '.join(str(a) for a in args)});")

    def node(self, i: int) -> None:
        n = self.g.nodes[i]
        self.index = i
        self.line(c_comment(f"{n.op} {n.act} <- {n.where}" if n.act != "none" else f"{n.op} <- {n.where}"))
        op_for(n.op).emit(self, n)
        self.line(f"LW_PROFILE_MARK({i});")

    def emit(self) -> CSource:
        for i in range(len(self.g.nodes)):
            self.node(i)
        if self.q:
            self.use("fixed")  # the float entry point saturates with lw_sat
        kernels = {**_kernels(), **CMSIS_KERNELS}
        NAME, name, g, q = self.name.upper(), self.name, self.g, self.q
        cm = self.cmsis
        extra_ram = (cm.stage_bytes + 4 * -(-cm.context_bytes // 4)) if cm else 0
        in_size, out_size = g.tensors[g.input].size, g.tensors[g.output].size
        flash = sum(a.nbytes for a in self.arrays)
        weight_ram = 4 * self.weight_ram
        ctype = "int8_t" if q else "float"
        elems = self.plan.arena_bytes // (1 if q else 4)
        shape = lambda s: " x ".join(map(str, s))  # noqa: E731
        h = [c_comment(f"{name}.h: generated by lwdc. Input {shape(g.input_shape)}, output "
                       f"{shape(g.output_shape)}, {'int8' if q else 'float32'}."),
             f"#ifndef {NAME}_H", f"#define {NAME}_H", "#include <stdint.h>", "",
             f"#define {NAME}_INPUT_SIZE {in_size}", f"#define {NAME}_OUTPUT_SIZE {out_size}",
             f"#define {NAME}_ARENA_BYTES {self.plan.arena_bytes}",
             f"#define {NAME}_PEAK_RAM_BYTES {self.plan.peak_ram_bytes + weight_ram + extra_ram}",
             f"#define {NAME}_WEIGHT_RAM_BYTES {weight_ram}", f"#define {NAME}_FLASH_BYTES {flash}",
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
        if cm:
            h += ["/* Nonzero once a CMSIS-NN call refused its arguments (its outputs are then not valid). Build",
                  f" * CMSIS-NN and this library with -D{SINGLE_ROUNDING}. */", f"int {name}_cmsis_error(void);"]
        h += ["", f"#endif /* {NAME}_H */", ""]

        c = [c_comment(f"{name}.c: generated by lwdc; C99, no malloc, weights in flash, activations in one static "
                       "arena."),
             f'#include "{name}.h"', "#include <math.h>", "#include <string.h>", "",
             "/* A profiler may define LW_PROFILE_MARK(node) as lw_profile_mark(node), called after every node",
             " * (lwdc profile --target); by default it is nothing. */", "#ifndef LW_PROFILE_MARK",
             "#define LW_PROFILE_MARK(node)", "#else", "void lw_profile_mark(int node);", "#endif", ""]
        if cm:
            c += ['#include "arm_nnfunctions.h"', f"#ifndef {SINGLE_ROUNDING}",
                  f"#error \"lwdc's int8 arithmetic is CMSIS-NN's with -D{SINGLE_ROUNDING}: define it for CMSIS-NN "
                  "and this file\"", "#endif",
                  f"static int32_t lw_ctx[{max(-(-cm.context_bytes // 4), 1)}];  /* CMSIS-NN kernels' scratch */",
                  f"static int8_t lw_stage[{max(cm.stage_bytes, 1)}];  /* NCHW <-> NHWC at layout edges */", ""]
        c += [kernels[k] for k in self.used]
        c += [a.c() for a in self.arrays]
        c += [f"static {ctype} lw_arena[{max(elems, 1)}];"]
        if q:
            c += [f"static int32_t lw_acc[{max(self.plan.scratch_bytes // 4, 1)}];"]
        elif self.plan.scratch_bytes:
            c += [f"static float lw_col[{self.plan.scratch_bytes // 4}];  /* input patches of one output row */"]
        if self.weight_ram:
            c += [f"static float lw_wram[{self.weight_ram}];  /* decoded weights ({self.weight_mode}) */"]
        ins, outs = self.at(g.input), self.at(g.output)
        in_off, out_off = ins.split(" + ")[1], outs.split(" + ")[1]
        first_run = (["    static int decoded = 0;", "    if (!decoded) {", *self.startup, "        decoded = 1;", "    }"]
                     if self.startup else [])
        # a graph without any int8 arithmetic node (a pooling-only or skip branch) must still compile strictly
        unused = ["    (void)lw_acc;", "    (void)lw_round_shift;"] if q else []
        c += ["", "static void lw_body(void)", "{", f"    {ctype} *A = lw_arena;", *unused, *first_run, *self.body, "}",
              ""]
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
            if cm:
                c += [f"int {name}_cmsis_error(void)", "{", "    return lw_cmsis_error;", "}", ""]
        else:
            c += [f"void {name}_run(const float *input, float *output)", "{", "    float *A = lw_arena;",
                  f"    memcpy({ins}, input, {in_size} * sizeof(float));", "    lw_body();",
                  f"    memcpy(output, {outs}, {out_size} * sizeof(float));", "}", ""]
        weights = {"mode": self.weight_mode, "ram_bytes": weight_ram, "coded_layers": self.coded}
        return CSource("\n".join(h), "\n".join(c), _main(name, bool(q), bool(cm)), flash, weights, extra_ram)


def _main(name: str, int8: bool, cmsis: bool = False) -> str:
    NAME = check_name(name).upper()
    check = f"""    if ({name}_cmsis_error()) {{
        fprintf(stderr, "a CMSIS-NN call refused its arguments: the outputs are not valid\\n");
        return 3;
    }}
""" if cmsis else ""
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
{check}    printf("arena %d bytes, peak RAM %d bytes, flash %d bytes\\n", {NAME}_ARENA_BYTES, {NAME}_PEAK_RAM_BYTES,
           {NAME}_FLASH_BYTES);
    return 0;
}}
"""


def emit_c(graph: Graph, plan: MemoryPlan, qgraph: QuantizedGraph | None = None, name: str = "model",
           weights: str = "dense", cmsis: CmsisPlan | None = None) -> CSource:
    return _Emitter(graph, plan, qgraph, check_name(name), weights, cmsis).emit()
