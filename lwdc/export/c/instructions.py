"""Instructions per node and per inference of a C export on an emulated Cortex-M core (``lwdc profile --target``).

QEMU is not cycle-accurate, so lwdc counts executed instructions instead of time: with ``-icount shift=0`` every
instruction advances QEMU's virtual clock by 1 ns, and the MPS2 boards' SysTick (25 MHz) then counts down one tick
per 40 instructions (the AN505 Cortex-M33 board runs it at 20 MHz: 50), the same from run to run. ``mcu/profile.c`` reads SysTick after every node of an inference
(the generated code calls ``LW_PROFILE_MARK(node)`` there, a no-op unless a profiler defines it), so each figure
has a resolution of 40 instructions. The same run measures the inference's stack depth (``stack_bytes``: the 64 KiB
below the caller's stack pointer painted with a pattern beforehand, the deepest word overwritten afterwards). What it measures is instructions, not cycles: a Cortex-M4 takes 1 cycle for
most, 2-3 for loads after loads, branches and multiply-accumulates of 64 bits; compare kernels by it, not clocks.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from .build import CompilerError
from .cmsis import cmsis_build_args, cmsis_path
from .safe import check_name
from .targets import get_target

__all__ = ["INSTRUCTIONS_PER_TICK", "count_instructions"]

INSTRUCTIONS_PER_TICK = 40    # MPS2 SysTick at 25 MHz under -icount shift=0 (1 instruction = 1 ns); per target:
                              # ``Target.instructions_per_tick``
_PROFILE_C = Path(__file__).resolve().parent / "mcu" / "profile.c"


def count_instructions(export, sample: torch.Tensor | None = None, opt: str = "-O2", timeout: float = 600) -> dict:
    """Executed instructions of one inference of ``export`` (a ``CExport`` built for a semihosting target, e.g.
    ``cortex-m4``), per node and in total, on ``sample`` (one model input; zeros if None). int8 builds run their
    int8 entry point on the quantised sample, so the float conversion at the edges is not counted."""
    target = get_target(export.summary.get("target", "host"))
    if not target.semihosting:
        raise ValueError(f"instruction counts need an emulated Cortex-M target (cortex-m4, cortex-m7, cortex-m33); this export "
                         f"was built for {target.name!r}: export it with target='cortex-m4'")
    if not target.can_run():
        raise CompilerError(f"{target.name} needs {target.compilers[0]} and {target.runner[0]}: {target.description}")
    name, g = check_name(export.name), export.graph
    int8 = export.qgraph is not None
    x = np.zeros(int(np.prod(g.input_shape)), np.float32) if sample is None else \
        sample.detach().float().reshape(-1).numpy()
    data = export.qgraph.qp(g.input).quantize(x[None])[0] if int8 else x
    upper = name.upper()
    defines = [f'-DLW_HEADER="{name}.h"', f"-DLW_INPUT_SIZE={upper}_INPUT_SIZE",
               f"-DLW_OUTPUT_SIZE={upper}_OUTPUT_SIZE", f"-DLW_NODES={len(g.nodes)}",
               f"-DLW_RUN={name}_run_int8" if int8 else f"-DLW_RUN={name}_run", *(["-DLW_INT8"] if int8 else []),
               "-DLW_PROFILE_MARK(node)=lw_profile_mark(node)"]
    cmsis = cmsis_path(export.summary)
    flags, archives = cmsis_build_args(cmsis, target.name, opt) if cmsis else ([], [])
    with tempfile.TemporaryDirectory(prefix="lwdc-icount-") as tmp:
        exe, sample_file = Path(tmp) / f"{name}.elf", Path(tmp) / "sample.bin"
        np.ascontiguousarray(data, np.int8 if int8 else np.float32).tofile(sample_file)
        cmd = [target.find_compiler(), *target.flags, opt, *defines, *flags,
               f"-I{export.directory}", "-Wno-missing-prototypes", str(export.directory / f"{name}.c"),
               str(_PROFILE_C), *target.sources, *archives, *target.libs, "-o", str(exe)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise CompilerError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
        run = target.run_command(exe, str(sample_file), runner_flags=("-icount", "shift=0"))
        done = subprocess.run(run, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise CompilerError(f"{' '.join(run)} exited with {done.returncode}: {done.stderr[-2000:]}")
        shutil.rmtree(tmp, ignore_errors=True)
    ticks, stack = {}, None
    for line in done.stdout.splitlines():
        if line.startswith("stack "):
            stack = int(line.split()[1])
            continue
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            ticks[key] = int(value)
    if "total" not in ticks or len(ticks) != len(g.nodes) + 1:
        raise CompilerError(f"the profiler printed {len(ticks)} counts, expected {len(g.nodes) + 1}: "
                            f"{done.stdout[-500:]}")
    per_tick = target.instructions_per_tick
    per_node = [{"node": i, "op": n.op, "where": n.where, "instructions": ticks[str(i)] * per_tick}
                for i, n in enumerate(g.nodes)]
    return {"target": target.name, "precision": "int8" if int8 else "float32",
            "kernels": (export.summary.get("kernels") or {}).get("name", "portable"),
            "instructions": ticks["total"] * per_tick, "per_node": per_node,
            "resolution": per_tick, "stack_bytes": stack,
            "compiled_with": " ".join([Path(cmd[0]).name, *target.flags, opt]),
            "method": "QEMU -icount shift=0 (1 instruction = 1 ns of virtual time); SysTick at "
                      f"{1000 // per_tick} MHz read after every node of the second inference: 1 tick = {per_tick} "
                      "executed instructions"}
