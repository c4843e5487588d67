"""Instructions on a microcontroller core: every candidate branch exported to C, built for the core and run on
its emulated board (``lwdc.export.c.instructions``), so the search minimises what the device will execute.

A branch is exported alone (int8 by default: what runs on a Cortex-M; calibrated on seeded random inputs, which
set the scales, not the instruction count), its inference counted under QEMU ``-icount`` with SysTick (resolution
40 instructions), and the count cached like the latency table: one file per (core, precision, compiler and QEMU
versions, and a hash of lwdc's C kernels), one entry per (branch structure, input shape). The whole original
network is counted the same way to normalise the objective. Spec: ``mcu:cortex-m4[:int8|float32]``.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..ops import LayerSpec
from .cache import MeasurementCache
from .latency import default_cache_dir

__all__ = ["McuCost"]


def _version(program: str | None) -> str:
    if program is None:
        return "absent"
    try:
        return subprocess.run([program, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


class McuCost:
    name, unit = "mcu", "instructions"

    def __init__(self, core: str = "cortex-m4", precision: str = "int8", cache_dir: str | Path | None = None):
        from ..export.c.targets import get_target, targets
        if core not in targets() or not get_target(core).semihosting:
            raise ValueError(f"mcu cost: {core!r} is not an emulated core; choose "
                             + ", ".join(t for t in targets() if get_target(t).semihosting))
        if precision not in ("int8", "float32"):
            raise ValueError(f"mcu cost precision {precision!r}: choose int8 or float32")
        self.target, self.precision = get_target(core), precision
        if not self.target.can_run():
            raise ValueError(f"mcu:{core} measures on {self.target.description}; install them to use this cost")
        from ..export.c.emit import kernels_digest
        self.host = {"core": core, "precision": precision, "compiler": _version(self.target.find_compiler()),
                     "runner": _version(self.target.find_runner()), "kernels": kernels_digest()}
        digest = hashlib.sha256(json.dumps(self.host, sort_keys=True).encode()).hexdigest()[:12]
        root = (Path(cache_dir) if cache_dir is not None else default_cache_dir().parent) / "mcu"
        self.cache = MeasurementCache(root / f"{core}-{precision}-{digest}.json", self.host)
        self.measurements = 0

    @classmethod
    def from_spec(cls, args: list[str], **kwargs) -> "McuCost":
        if len(args) > 2:
            raise ValueError(f"mcu takes a core and a precision (mcu:cortex-m4:int8), got {':'.join(args)}")
        return cls(*args, **kwargs)

    def __repr__(self) -> str:
        return f"McuCost({self.target.name}, {self.precision}, cache {self.cache.path})"

    def measure(self, module: nn.Module, in_shape: tuple[int, ...], label: str = "") -> float:
        """Instructions of one inference of ``module`` on one sample of shape ``in_shape`` (cached)."""
        from ..export import export_c
        from ..export.c.instructions import count_instructions

        structure = hashlib.sha256(repr(module).encode()).hexdigest()[:16]
        key = f"{label}|in={'x'.join(map(str, in_shape))}|{structure}"
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        from ..export.c import UnsupportedLayerError
        x = torch.randn(8, *in_shape, generator=torch.Generator().manual_seed(0))
        with tempfile.TemporaryDirectory(prefix="lwdc-mcu-cost-") as tmp:
            try:
                export = export_c(module.eval(), x, Path(tmp) / "c", int8=self.precision == "int8", calib=x,
                                  verify=False, target=self.target.name)
                value = float(count_instructions(export, x[0])["instructions"])
            except UnsupportedLayerError as exc:
                if "returns its input" not in str(exc):
                    raise ValueError(f"mcu cost of {label or type(module).__name__}: {exc}") from None
                value = 0.0          # a skipped layer: the device executes nothing for it
        self.measurements += 1
        self.cache.put(key, value)
        return value

    def branch_cost(self, spec: LayerSpec, op_name: str, branch: nn.Module) -> float:
        return self.measure(branch, (spec.in_ch, *spec.in_size), op_name)

    def network_cost(self, model: nn.Module, example_input: torch.Tensor) -> float:
        return self.measure(model, tuple(example_input.shape[1:]), "network")
