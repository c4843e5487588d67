"""Compile a generated C library with the host compiler and run it on arrays: how tests, ``--verify`` and the
benchmark check the C against PyTorch."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

STRICT_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")


class CompilerError(RuntimeError):
    """No C compiler, or the generated code did not compile or run."""


def find_compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return shutil.which(cc)
    return None


def compile_library(src_dir: str | Path, name: str = "model", out: str | Path | None = None, opt: str = "-O2",
                    extra: tuple[str, ...] = ()) -> Path:
    """Build ``main.c`` + ``NAME.c`` into an executable (in a temporary folder unless ``out`` is given)."""
    cc = find_compiler()
    if cc is None:
        raise CompilerError("no C compiler found (tried $CC, cc, gcc, clang); install gcc or set CC")
    src_dir = Path(src_dir)
    exe = Path(out) if out else Path(tempfile.mkdtemp(prefix="lwdc-c-")) / name
    cmd = [cc, *STRICT_FLAGS, opt, *extra, str(src_dir / "main.c"), str(src_dir / f"{name}.c"), "-lm", "-o", str(exe)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise CompilerError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    return exe


def run_library(exe: str | Path, inputs: np.ndarray, output_size: int, int8: bool = False) -> np.ndarray:
    """Every row of ``inputs`` through the compiled library; returns (N, output_size) float32 or int8."""
    dtype = np.int8 if int8 else np.float32
    with tempfile.TemporaryDirectory(prefix="lwdc-run-") as tmp:
        src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        np.ascontiguousarray(inputs, dtype).tofile(src)
        args = [str(exe), *(["--int8"] if int8 else []), str(src), str(dst)]
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode != 0:
            raise CompilerError(f"{' '.join(args)} exited with {done.returncode}: {done.stderr[-2000:]}")
        return np.fromfile(dst, dtype).reshape(len(inputs), output_size)


def time_library(exe: str | Path, sample: np.ndarray, runs: int) -> float:
    """Seconds per run on one sample (CPU time measured inside the program, one thread)."""
    with tempfile.TemporaryDirectory(prefix="lwdc-bench-") as tmp:
        src = Path(tmp) / "in.bin"
        np.ascontiguousarray(sample, np.float32).tofile(src)
        done = subprocess.run([str(exe), "--bench", str(runs), str(src)], capture_output=True, text=True)
        if done.returncode != 0:
            raise CompilerError(done.stderr[-2000:])
        return float(done.stdout.strip())
