"""Where generated C is compiled and run. A target is one entry: the compilers to try, their flags and
libraries, and the command prefix that runs a built program (empty on the host; a simulator or a board runner
for a microcontroller), so a new target is one ``register_target`` call and nothing else changes."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

STRICT_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")


@dataclass(frozen=True)
class Target:
    name: str
    compilers: tuple[str, ...]  # tried in order; "$CC" reads the environment variable CC
    flags: tuple[str, ...] = STRICT_FLAGS
    libs: tuple[str, ...] = ("-lm",)
    runner: tuple[str, ...] = ()  # prefix of the command that runs a built program
    description: str = ""
    # files built beside the library only to run it here (a bare-metal start-up), never part of what users get
    sources: tuple[str, ...] = ()
    semihosting: bool = False     # the runner is QEMU: arguments reach main() through its semihosting command line
    # instructions per SysTick tick under QEMU -icount shift=0 (1 instruction = 1 ns): 1e9 / the board's clock
    instructions_per_tick: int = 40

    def find_compiler(self) -> str | None:
        for cc in self.compilers:
            cc = os.environ.get(cc[1:]) if cc.startswith("$") else cc
            if cc and shutil.which(cc):
                return shutil.which(cc)
        return None

    def find_runner(self) -> str | None:
        """The runner's program (None: a built program runs directly, or the runner is not installed)."""
        return shutil.which(self.runner[0]) if self.runner else None

    def can_run(self) -> bool:
        """A compiler is found and, where one is needed, the runner."""
        return self.find_compiler() is not None and (not self.runner or self.find_runner() is not None)

    def run_command(self, exe, *args: str, runner_flags: tuple[str, ...] = ()) -> list[str]:
        """The command running ``exe`` with ``args``; ``runner_flags`` go to the runner (e.g. QEMU's -icount)."""
        if self.semihosting:    # QEMU splits the option at commas; ",," is a literal comma
            line = ",".join("arg=" + str(a).replace(",", ",,") for a in (exe, *args))
            return [*self.runner, *runner_flags, "-semihosting-config", f"enable=on,target=native,{line}",
                    "-kernel", str(exe)]
        return [*self.runner, *runner_flags, str(exe), *args]


_TARGETS: dict[str, Target] = {}


def register_target(target: Target) -> Target:
    if target.name in _TARGETS:
        raise ValueError(f"target {target.name!r} is already registered")
    _TARGETS[target.name] = target
    return target


def get_target(name: str | Target = "host") -> Target:
    if isinstance(name, Target):
        return name
    if name not in _TARGETS:
        raise ValueError(f"unknown C target {name!r}; known: {', '.join(sorted(_TARGETS))}")
    return _TARGETS[name]


def targets() -> list[str]:
    return sorted(_TARGETS)


register_target(Target("host", ("$CC", "cc", "gcc", "clang"),
                       description="this machine's C compiler; built programs run directly"))


_MCU = Path(__file__).resolve().parent / "mcu"


def _cortex_m(name: str, cpu: str, fpu: str, machine: str, script: str = "mps2.ld", clock_mhz: int = 25) -> Target:
    """A Cortex-M core on QEMU's MPS2 board for it: arm-none-eabi-gcc, newlib with semihosting (librdimon), lwdc's
    start-up code and the board's memory map (``mcu/``), hard-float ABI."""
    return Target(name, ("arm-none-eabi-gcc",),
                  flags=(*STRICT_FLAGS, f"-mcpu={cpu}", "-mthumb", "-mfloat-abi=hard", f"-mfpu={fpu}",
                         "-ffunction-sections", "-fdata-sections"),
                  libs=("--specs=rdimon.specs", "-nostartfiles", f"-L{_MCU}", "-T", str(_MCU / script),
                        "-Wl,--gc-sections", "-lm"),
                  runner=("qemu-system-arm", "-machine", machine, "-nographic", "-monitor", "none"),
                  sources=(str(_MCU / "startup.c"),), semihosting=True, instructions_per_tick=1000 // clock_mhz,
                  description=f"{cpu} on QEMU's {machine} (Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi "
                              "qemu-system-arm)")


register_target(_cortex_m("cortex-m4", "cortex-m4", "fpv4-sp-d16", "mps2-an386"))
register_target(_cortex_m("cortex-m7", "cortex-m7", "fpv5-d16", "mps2-an500"))
register_target(_cortex_m("cortex-m33", "cortex-m33", "fpv5-sp-d16", "mps2-an505", "mps2-an505.ld", clock_mhz=20))
