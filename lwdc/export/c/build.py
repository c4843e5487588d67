"""Compile a generated C library for a target (``targets``) and run it on arrays: how tests, ``--verify`` and
the benchmark check the C against PyTorch. Temporary build folders never outlive a call that fails."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .safe import check_name
from .targets import STRICT_FLAGS, Target, get_target

__all__ = ["CompilerError", "STRICT_FLAGS", "find_compiler", "compile_library", "run_library", "time_library",
           "library_size"]


class CompilerError(RuntimeError):
    """No C compiler, or the generated code did not compile or run."""


def find_compiler(target: str | Target = "host") -> str | None:
    return get_target(target).find_compiler()


def _cmsis_args(cmsis_nn: str | Path | None, tgt: Target, opt: str) -> tuple[list[str], list[str]]:
    """Compile flags and link archives for a library exported with CMSIS-NN kernels (none without)."""
    if cmsis_nn is None:
        return [], []
    from .cmsis import cmsis_build_args
    return cmsis_build_args(Path(cmsis_nn), tgt.name, opt)


def compile_library(src_dir: str | Path, name: str = "model", out: str | Path | None = None, opt: str = "-O2",
                    extra: tuple[str, ...] = (), target: str | Target = "host", cmsis_nn: str | Path | None = None) -> Path:
    """Build ``main.c`` + ``NAME.c`` into an executable (in a temporary folder unless ``out`` is given); a library
    exported with CMSIS-NN kernels links the CMSIS-NN checkout at ``cmsis_nn``."""
    tgt = get_target(target)
    flags, libs = _cmsis_args(cmsis_nn, tgt, opt)
    cc = tgt.find_compiler()
    if cc is None:
        raise CompilerError(f"no C compiler for target {tgt.name!r} (tried {', '.join(tgt.compilers)}); install gcc "
                            "or set CC")
    src_dir = Path(src_dir)
    scratch = None if out else Path(tempfile.mkdtemp(prefix="lwdc-c-"))
    exe = Path(out) if out else scratch / check_name(name)
    cmd = [cc, *tgt.flags, opt, *extra, *flags, str(src_dir / "main.c"), str(src_dir / f"{check_name(name)}.c"),
           *tgt.sources, *libs, *tgt.libs, "-o", str(exe)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise CompilerError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    return exe


def run_library(exe: str | Path, inputs: np.ndarray, output_size: int, int8: bool = False,
                target: str | Target = "host") -> np.ndarray:
    """Every row of ``inputs`` through the compiled library; returns (N, output_size) float32 or int8."""
    dtype = np.int8 if int8 else np.float32
    with tempfile.TemporaryDirectory(prefix="lwdc-run-") as tmp:
        src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        np.ascontiguousarray(inputs, dtype).tofile(src)
        args = get_target(target).run_command(exe, *(["--int8"] if int8 else []), str(src), str(dst))
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode != 0:
            raise CompilerError(f"{' '.join(args)} exited with {done.returncode}: {done.stderr[-2000:]}")
        got = np.fromfile(dst, dtype) if dst.exists() else np.zeros(0, dtype)
        if got.size != len(inputs) * output_size:
            raise CompilerError(f"{' '.join(args)} wrote {got.size} output values, expected {len(inputs)} x "
                                f"{output_size}: do the input rows ({inputs.shape[-1] if inputs.ndim > 1 else '?'} "
                                "values) have the model's input size?")
        return got.reshape(len(inputs), output_size)


def time_library(exe: str | Path, sample: np.ndarray, runs: int, target: str | Target = "host") -> float:
    """Seconds per run on one sample (CPU time measured inside the program, one thread)."""
    with tempfile.TemporaryDirectory(prefix="lwdc-bench-") as tmp:
        src = Path(tmp) / "in.bin"
        np.ascontiguousarray(sample, np.float32).tofile(src)
        done = subprocess.run(get_target(target).run_command(exe, "--bench", str(runs), str(src)),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise CompilerError(done.stderr[-2000:])
        return float(done.stdout.strip())


def library_size(src_dir: str | Path, name: str = "model", opt: str = "-O2", target: str | Target = "host",
                 cmsis_nn: str | Path | None = None) -> dict:
    """What ``NAME.c`` adds to a firmware, read with the toolchain's ``size -A``: its object file, partially
    linked with ``--gc-sections`` from the two entry points (with CMSIS-NN kernels, together with the CMSIS-NN
    functions the library calls, so its flash counts them); flash = code + constants + initialised data, RAM =
    initialised data + zeroed data (the arena and scratch buffers); the stack is not included."""
    tgt = get_target(target)
    cc = tgt.find_compiler()
    if cc is None:
        raise CompilerError(f"no C compiler for target {tgt.name!r}")
    size_tool = shutil.which(Path(cc).name[:-3] + "size") if Path(cc).name.endswith("gcc") else None
    size_tool = size_tool or shutil.which("size")
    if size_tool is None:
        raise CompilerError("no size tool (binutils) to measure the library with")
    flags, archives = _cmsis_args(cmsis_nn, tgt, opt)
    with tempfile.TemporaryDirectory(prefix="lwdc-size-") as tmp:
        obj, linked = Path(tmp) / f"{check_name(name)}.o", Path(tmp) / "linked.o"
        cmd = [cc, *tgt.flags, opt, *flags, "-c",
               str(Path(src_dir) / f"{check_name(name)}.c"), "-o", str(obj)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise CompilerError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
        link = [cc, *(f for f in tgt.flags if f.startswith(("-m", "-f"))), "-nostdlib", "-r", "-Wl,--gc-sections",
                f"-Wl,-u,{name}_run", f"-Wl,-u,{name}_run_int8", f"-Wl,-e,{name}_run", str(obj), *archives,
                "-o", str(linked)]
        measured = linked if subprocess.run(link, capture_output=True, text=True).returncode == 0 else obj
        if measured is obj and archives:
            raise CompilerError(f"{' '.join(link)} failed: cannot measure the library with CMSIS-NN's functions")
        table = subprocess.run([size_tool, "-A", str(measured)], capture_output=True, text=True, check=True).stdout
    sections: dict[str, int] = {}
    for line in table.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = sections.get(parts[0], 0) + int(parts[1])
    total = lambda *prefixes: sum(v for k, v in sections.items() if k.startswith(prefixes))  # noqa: E731
    code, const, data, bss = total(".text"), total(".rodata"), total(".data"), total(".bss")
    return {"target": tgt.name, "code_bytes": code, "const_bytes": const, "data_bytes": data, "bss_bytes": bss,
            "flash_bytes": code + const + data, "ram_bytes": data + bss, "tool": Path(size_tool).name,
            "compiled_with": " ".join([Path(cc).name, *tgt.flags, opt]),
            "measured": "object and the CMSIS-NN functions it calls, partially linked with --gc-sections"
                        if archives else ("object partially linked with --gc-sections" if measured is linked
                                          else "object file")}
