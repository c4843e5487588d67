"""Arm's CMSIS-NN kernels in an int8 C export (``export_c(..., kernels="cmsis-nn", cmsis_nn=PATH)``).

lwdc's int8 arithmetic is TensorFlow Lite's with single rounding (CMSIS-NN's ``CMSIS_NN_USE_SINGLE_ROUNDING``):
a conv's per-channel rescale ``round_shift(acc * m, n)`` is ``arm_nn_requantize(acc, m, 31 - n)``, padding holds
the input zero point, and the residual add follows TFLite's ADD (``ops/add.py``). So a build that calls CMSIS-NN
for convolutions (plain, grouped, depthwise; Linear is a 1x1 conv) and equal-shape adds gives the same bytes as
lwdc's own kernels, which every such build is verified against. Every other op keeps lwdc's portable kernel.

CMSIS-NN reads and writes NHWC; lwdc's tensors are (C, H, W). A tensor that only CMSIS-NN calls (and layout-blind
equal-shape adds) touch lives in NHWC in the arena; at a boundary the call stages its input or output through a
transpose (``lw_stage``). A tensor of one pixel or one channel is the same bytes in both layouts.

CMSIS-NN itself is never copied into lwdc or into an export: the user points the build at it (``--cmsis-nn PATH``,
a checkout holding ``Include/`` and ``Source/``), as TensorFlow Lite Micro users do. ``cmsis_build_args`` compiles
it once per target and flags into a cached static library.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .ir import Graph, Node
from .registry import op_for
from .targets import STRICT_FLAGS, get_target

__all__ = ["KERNEL_CHOICES", "SINGLE_ROUNDING", "check_cmsis_nn", "mapped_nodes", "assign_layouts", "CmsisPlan",
           "emit_conv", "emit_add", "cmsis_build_args", "cmsis_path"]

KERNEL_CHOICES = ("portable", "cmsis-nn")
SINGLE_ROUNDING = "CMSIS_NN_USE_SINGLE_ROUNDING"
CACHE = Path(os.environ.get("LWDC_CACHE", Path.home() / ".cache" / "lwdc")) / "cmsis-nn"


def check_cmsis_nn(path) -> Path:
    """The CMSIS-NN checkout at ``path`` (holding ``Include/arm_nnfunctions.h`` and ``Source/``), or a named error."""
    if path is None:
        raise ValueError("kernels='cmsis-nn' needs the CMSIS-NN source: pass cmsis_nn=PATH (--cmsis-nn PATH), a "
                         "checkout of github.com/ARM-software/CMSIS-NN holding Include/ and Source/")
    root = Path(path).expanduser().resolve()
    if not (root / "Include" / "arm_nnfunctions.h").is_file() or not (root / "Source").is_dir():
        raise ValueError(f"{path} is not a CMSIS-NN checkout: it lacks Include/arm_nnfunctions.h or Source/ "
                         "(point --cmsis-nn at the folder holding both)")
    return root


def cmsis_path(info: dict, override: str | Path | None = None) -> Path | None:
    """The CMSIS-NN checkout an export's build needs (None for portable kernels): ``override``, else the one it
    was exported with."""
    kernels = info.get("kernels") or {}
    if not isinstance(kernels, dict) or kernels.get("name") != "cmsis-nn":
        return None
    return check_cmsis_nn(override or kernels.get("cmsis_nn"))


# ------------------------------------------------------------------------------------------ what CMSIS-NN runs
def _conv_kind(graph: Graph, node: Node) -> str | None:
    """"conv" (plain or grouped: ``arm_convolve_wrapper_s8`` / ``arm_convolve_s8``), "depthwise"
    (``arm_depthwise_conv_wrapper_s8``) or None where lwdc's kernel runs (a per-channel affine that writes over its
    input)."""
    if node.op != "conv" or node.weight is None or op_for("conv").may_write_over_input(node):
        return None
    channels, groups = graph.tensors[node.inputs[0]].shape[0], node.attrs["groups"]
    if groups > 1 and groups == channels and node.weight.shape[1] == 1:
        return "depthwise"
    return "conv"


def _flat_add(graph: Graph, node: Node) -> bool:
    return node.op == "add" and all(graph.tensors[t].shape == graph.tensors[node.output].shape for t in node.inputs)


def _pool_kind(node: Node) -> str | None:
    """"maxpool" or "avgpool" (where PyTorch's divisor is the count of input values in the window, as CMSIS-NN's:
    no padding, or padding not counted). The global average keeps lwdc's kernel: it rescales to its own output
    scale, which CMSIS-NN's pooling cannot."""
    if node.op == "maxpool":
        return node.op
    if node.op == "avgpool" and (not any(node.attrs["padding"]) or not node.attrs["count_include_pad"]):
        return "avgpool"
    return None


def mapped_nodes(graph: Graph) -> dict[int, str]:
    """Node index -> what CMSIS-NN runs it as: "conv", "depthwise", "maxpool", "avgpool", "gap" or "add" (equal
    shapes, alpha 1)."""
    out = {}
    for i, node in enumerate(graph.nodes):
        kind = _conv_kind(graph, node) or _pool_kind(node)
        if kind:
            out[i] = kind
        elif _flat_add(graph, node) and node.attrs.get("alpha", 1.0) == 1:
            out[i] = "add"
    return out


def _layout_free(shape: tuple[int, int, int]) -> bool:
    return shape[0] == 1 or shape[1] * shape[2] == 1


def assign_layouts(graph: Graph, mapped: dict[int, str]) -> dict[str, str]:
    """Storage -> "nhwc" where every node touching it runs in CMSIS-NN or is an equal-shape add whose other
    tensors are NHWC too (one layout per group of tensors an add joins), else "nchw". The model's input and output,
    and views, stay (C, H, W)."""
    t = graph.tensors
    views = {s for s in (x.storage for x in t.values()) if sum(1 for y in t.values() if y.storage == s) > 1}
    fixed = {t[graph.input].storage, t[graph.output].storage} | views
    convs = {i for i, kind in mapped.items() if kind != "add"}
    blind = {i for i, node in enumerate(graph.nodes) if _flat_add(graph, node)}
    parent: dict[str, str] = {}

    def find(s: str) -> str:
        while parent.get(s, s) != s:
            s = parent[s]
        return s

    for i in blind:                       # an add's inputs and output share one layout
        names = [t[x].storage for x in (*graph.nodes[i].inputs, graph.nodes[i].output)]
        for s in names[1:]:
            parent[find(s)] = find(names[0])
    ok: dict[str, bool] = {}
    for storage in {x.storage for x in t.values()}:
        touching = [i for i, n in enumerate(graph.nodes)
                    if any(t[x].storage == storage for x in (*n.inputs, n.output))]
        good = storage not in fixed and all(i in convs or i in blind for i in touching)
        root = find(storage)
        ok[root] = ok.get(root, True) and good
    return {s: ("nhwc" if ok[find(s)] else "nchw") for s in {x.storage for x in t.values()}}


class CmsisPlan:
    """What a CMSIS-NN build adds to an export: the nodes it runs, the tensors kept NHWC, and the two buffers
    outside the arena (the transposes' staging area and the kernels' context scratch)."""

    def __init__(self, graph: Graph, path: Path):
        self.path = path
        self.mapped = mapped_nodes(graph)
        self.layouts = assign_layouts(graph, self.mapped)
        self.graph = graph
        self.stage_bytes = 0
        self.context_bytes = 0
        for i, kind in self.mapped.items():
            node = graph.nodes[i]
            if kind == "add":
                continue
            src, dst = (graph.tensors[x] for x in (node.inputs[0], node.output))
            staged = (0 if self.nhwc(node.inputs[0]) else src.size) + (0 if self.nhwc(node.output) else dst.size)
            self.stage_bytes = max(self.stage_bytes, staged)
            if kind in ("avgpool", "gap"):                                  # one int32 sum per channel (DSP)
                self.context_bytes = max(self.context_bytes, 4 * src.shape[0])
                continue
            if kind == "maxpool":
                continue
            # CMSIS-NN sizes its patch buffers by every input channel (a grouped conv too): a conv two int16
            # columns (DSP) or four 16-aligned int8 ones (MVE), a depthwise conv one int16 column (DSP); at run
            # time each call checks its need against this
            cols = src.shape[0] * int(np.prod(node.weight.shape[2:]))        # C x KH x KW
            need = 2 * cols if kind == "depthwise" else 4 * (-(-cols // 16) * 16)
            self.context_bytes = max(self.context_bytes, need)

    def nhwc(self, tensor: str) -> bool:
        """Whether ``tensor``'s bytes are NHWC (true also for a tensor whose two layouts coincide)."""
        t = self.graph.tensors[tensor]
        return self.layouts[t.storage] == "nhwc" or _layout_free(t.shape)

    def summary(self) -> dict:
        kinds = list(self.mapped.values())
        return {"name": "cmsis-nn", "convolutions": kinds.count("conv") + kinds.count("depthwise"),
                "depthwise": kinds.count("depthwise"), "adds": kinds.count("add"),
                "pooling": sum(kinds.count(k) for k in ("maxpool", "avgpool", "gap")),
                "portable_nodes": len(self.graph.nodes) - len(kinds),
                "nhwc_tensors": sum(v == "nhwc" for v in self.layouts.values()),
                "stage_bytes": self.stage_bytes, "context_bytes": self.context_bytes,
                "build": f"compile CMSIS-NN and the library with -D{SINGLE_ROUNDING} -I<CMSIS-NN>/Include"}


# ------------------------------------------------------------------------------------------ C emission
KERNELS = {
    "to_nhwc": """/* (C, H, W) -> (H, W, C): into CMSIS-NN's layout at the edge of the tensors it keeps NHWC. */
static void lw_to_nhwc(const int8_t *x, int C, int H, int W, int8_t *y)
{
    int c, i, hw = H * W;
    for (c = 0; c < C; ++c)
        for (i = 0; i < hw; ++i) y[i * C + c] = x[c * hw + i];
}
""",
    "to_nchw": """/* (H, W, C) -> (C, H, W): back to lwdc's layout after a CMSIS-NN call. */
static void lw_to_nchw(const int8_t *x, int C, int H, int W, int8_t *y)
{
    int c, i, hw = H * W;
    for (c = 0; c < C; ++c)
        for (i = 0; i < hw; ++i) y[c * hw + i] = x[i * C + c];
}
""",
    "cmsis_conv": """/* One convolution through CMSIS-NN on NHWC tensors: weights OHWI (depthwise: 1HWO), input offset -zx,
 * output offset zy, per-channel multiplier m and shift 31 - n (lwdc's rescale m / 2^n). */
static int lw_cmsis_error = 0;

static void lw_cmsis_conv(const int8_t *x, int C, int H, int W, int8_t *y, int O, int OH, int OW,
                          const int8_t *w, const int32_t *b, const int32_t *mult, const int32_t *shift,
                          int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW, int G,
                          int zx, int zy, int lo, int hi, int depthwise)
{
    cmsis_nn_context ctx;
    cmsis_nn_per_channel_quant_params quant;
    cmsis_nn_dims in, filter, bias, out;
    arm_cmsis_nn_status status;
    ctx.buf = lw_ctx;
    ctx.size = (int32_t)sizeof(lw_ctx);
    quant.multiplier = (int32_t *)mult;    /* CMSIS-NN's struct is not const; it only reads them */
    quant.shift = (int32_t *)shift;
    in.n = 1; in.h = H; in.w = W; in.c = C;
    out.n = 1; out.h = OH; out.w = OW; out.c = O;
    bias.n = 1; bias.h = 1; bias.w = 1; bias.c = O;
    if (depthwise) {
        cmsis_nn_dw_conv_params p;
        p.input_offset = -zx; p.output_offset = zy; p.ch_mult = O / C;
        p.stride.h = SH; p.stride.w = SW; p.padding.h = PH; p.padding.w = PW;
        p.dilation.h = DH; p.dilation.w = DW; p.activation.min = lo; p.activation.max = hi;
        filter.n = 1; filter.h = KH; filter.w = KW; filter.c = O;
        if (arm_depthwise_conv_wrapper_s8_get_buffer_size(&p, &in, &filter, &out) > ctx.size) {
            lw_cmsis_error = 1;
            return;
        }
        status = arm_depthwise_conv_wrapper_s8(&ctx, &p, &quant, &in, x, &filter, w, &bias, b, &out, y);
    } else {
        cmsis_nn_conv_params p;
        p.input_offset = -zx; p.output_offset = zy;
        p.stride.h = SH; p.stride.w = SW; p.padding.h = PH; p.padding.w = PW;
        p.dilation.h = DH; p.dilation.w = DW; p.activation.min = lo; p.activation.max = hi;
        filter.n = O; filter.h = KH; filter.w = KW; filter.c = C / G;
        if (arm_convolve_wrapper_s8_get_buffer_size(&p, &in, &filter, &out) > ctx.size) {
            lw_cmsis_error = 1;
            return;
        }
        status = G == 1 ? arm_convolve_wrapper_s8(&ctx, &p, &quant, &in, x, &filter, w, &bias, b, &out, y)
                        : arm_convolve_s8(&ctx, &p, &quant, &in, x, &filter, w, &bias, b, NULL, &out, y);
    }
    if (status != ARM_CMSIS_NN_SUCCESS) lw_cmsis_error = 1;
}
""",
    "cmsis_pool": """/* Max or average pooling through CMSIS-NN on NHWC tensors (windows clipped to the input, as lwdc's kernels). */
static void lw_cmsis_pool(const int8_t *x, int C, int H, int W, int8_t *y, int OH, int OW,
                          int KH, int KW, int SH, int SW, int PH, int PW, int average)
{
    cmsis_nn_context ctx;
    cmsis_nn_pool_params p;
    cmsis_nn_dims in, filter, out;
    arm_cmsis_nn_status status;
    ctx.buf = lw_ctx;
    ctx.size = (int32_t)sizeof(lw_ctx);
    p.stride.h = SH; p.stride.w = SW; p.padding.h = PH; p.padding.w = PW;
    p.activation.min = -128; p.activation.max = 127;
    in.n = 1; in.h = H; in.w = W; in.c = C;
    filter.n = 1; filter.h = KH; filter.w = KW; filter.c = 1;
    out.n = 1; out.h = OH; out.w = OW; out.c = C;
    if (average) {
        if (arm_avgpool_s8_get_buffer_size(OW, C) > ctx.size) {
            lw_cmsis_error = 1;
            return;
        }
        status = arm_avgpool_s8(&ctx, &p, &in, x, &filter, &out, y);
    } else {
        status = arm_max_pool_s8(&ctx, &p, &in, x, &filter, &out, y);
    }
    if (status != ARM_CMSIS_NN_SUCCESS) lw_cmsis_error = 1;
}
""",
}


def emit_conv(e, node: Node) -> None:
    """A conv node as a CMSIS-NN call, staging its input or output through a transpose where that tensor is not
    kept NHWC."""
    q, a = e.qnode, node.attrs
    (C, H, W), (O, OH, OW) = e.shape(node.inputs[0]), e.shape(node.output)
    depthwise = e.cmsis.mapped[e.index] == "depthwise"
    e.use("cmsis_conv")
    x, y, staged_out = _staged(e, node)
    # OHWI, or 1HWO for depthwise (each output channel's taps last)
    weight = q.weight.transpose(1, 2, 3, 0) if depthwise else q.weight.transpose(0, 2, 3, 1)
    arrays = [e.array("w", "int8_t", np.ascontiguousarray(weight)), e.array("b", "int32_t", q.bias),
              e.array("m", "int32_t", q.mult), e.array("s", "int32_t", 31 - np.asarray(q.shift))]
    geometry = [*node.weight.shape[2:], *a["stride"], *a["padding"], *a["dilation"], a["groups"]]
    e.call("cmsis_conv", x, C, H, W, y, O, OH, OW, *arrays, *geometry, e.zp(node.inputs[0]), e.zp(node.output),
           *q.clamp, int(depthwise))
    if staged_out:
        e.use("to_nchw")
        e.call("to_nchw", y, O, OH, OW, e.at(node.output))


def _staged(e, node: Node) -> tuple[str, str, bool]:
    """The input and output addresses a CMSIS-NN call gets (staging through NHWC copies where needed) and whether
    the output must be copied back to (C, H, W) afterwards."""
    src, dst = node.inputs[0], node.output
    x = e.at(src)
    if not e.cmsis.nhwc(src):
        e.use("to_nhwc")
        e.call("to_nhwc", x, *e.shape(src), "lw_stage")
        x = "lw_stage"
    staged_out = not e.cmsis.nhwc(dst)
    y = e.at(dst) if not staged_out else ("lw_stage" if x != "lw_stage" else f"lw_stage + {e.g.tensors[src].size}")
    return x, y, staged_out


def emit_pool(e, node: Node) -> None:
    """A pooling node (max, average, global average) as a CMSIS-NN call."""
    kind = e.cmsis.mapped[e.index]
    (C, H, W), (_, OH, OW) = e.shape(node.inputs[0]), e.shape(node.output)
    e.use("cmsis_conv", "cmsis_pool")
    x, y, staged_out = _staged(e, node)
    if kind == "gap":
        window = [H, W, 1, 1, 0, 0]
    else:
        a = node.attrs
        window = [*a["kernel"], *a["stride"], *a["padding"]]
    e.call("cmsis_pool", x, C, H, W, y, OH, OW, *window, int(kind != "maxpool"))
    if staged_out:
        e.use("to_nchw")
        e.call("to_nchw", y, C, OH, OW, e.at(node.output))


def emit_add(e, node: Node, args: list, zps: list[int], q) -> None:
    """An equal-shape int8 add as ``arm_elementwise_add_s8`` (layout-blind: its tensors share one layout)."""
    a, b, y, size = args
    m, n = [int(v) for v in q.mult], [31 - int(v) for v in q.shift]
    from .ops.add import Add
    e.line(f"if (arm_elementwise_add_s8({a}, {b}, {-zps[0]}, {m[0]}, {n[0]}, {-zps[1]}, {m[1]}, {n[1]}, "
           f"{Add.LEFT_SHIFT}, {y}, {zps[2]}, {m[2]}, {n[2]}, {q.clamp[0]}, {q.clamp[1]}, {size}) "
           "!= ARM_CMSIS_NN_SUCCESS) lw_cmsis_error = 1;")
    e.use("cmsis_conv")      # lw_cmsis_error lives there


# ------------------------------------------------------------------------------------------ building
def _sources(root: Path) -> list[Path]:
    """CMSIS-NN's integer kernels (float16/float32 ones and the Python bindings are not needed)."""
    return sorted(p for p in (root / "Source").rglob("*.c")
                  if "Bindings" not in p.parts and not p.stem.endswith(("_f16", "_f32")))


def cmsis_build_args(root: Path, target: str = "host", opt: str = "-O2") -> tuple[list[str], list[str]]:
    """``(compile flags, link archives)`` that build against CMSIS-NN for ``target``: its headers as system headers
    and the single-rounding define; a static library compiled once per (checkout, target, flags) into lwdc's cache,
    to go after the sources that call it."""
    root = check_cmsis_nn(root)
    tgt = get_target(target)
    cc = tgt.find_compiler()
    if cc is None:
        raise FileNotFoundError(f"no C compiler for target {tgt.name!r}")
    flags = [f for f in tgt.flags if f not in STRICT_FLAGS] + ["-std=c99", opt, f"-D{SINGLE_ROUNDING}"]
    sources = _sources(root)
    stamp = hashlib.sha256("\n".join([cc, *flags, str(root), *(f"{p}:{p.stat().st_mtime_ns}" for p in sources)])
                           .encode()).hexdigest()[:16]
    lib = CACHE / f"{tgt.name}-{stamp}" / "libcmsis-nn.a"
    if not lib.is_file():
        ar = shutil.which(Path(cc).name[:-3] + "ar") if Path(cc).name.endswith("gcc") else None
        ar = ar or shutil.which("ar")
        if ar is None:
            raise FileNotFoundError("no archiver (binutils 'ar') to build CMSIS-NN's library with")
        lib.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="lwdc-cmsis-", dir=lib.parent) as tmp:
            objs = []
            for i, src in enumerate(sources):
                obj = Path(tmp) / f"{i:03d}_{src.stem}.o"
                done = subprocess.run([cc, *flags, f"-I{root / 'Include'}", "-c", str(src), "-o", str(obj)],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"compiling CMSIS-NN's {src.name} for {tgt.name} failed:\n"
                                       f"{done.stderr[-2000:]}")
                objs.append(str(obj))
            staged = Path(tmp) / "libcmsis-nn.a"
            subprocess.run([ar, "rcs", str(staged), *objs], check=True, capture_output=True)
            os.replace(staged, lib)
    return ["-isystem", str(root / "Include"), f"-D{SINGLE_ROUNDING}"], [str(lib)]
