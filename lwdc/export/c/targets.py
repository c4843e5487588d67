"""Where generated C is compiled and run. A target is one entry: the compilers to try, their flags and
libraries, and the command prefix that runs a built program (empty on the host; a simulator or a board runner
for a microcontroller), so a new target is one ``register_target`` call and nothing else changes."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

STRICT_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")


@dataclass(frozen=True)
class Target:
    name: str
    compilers: tuple[str, ...]  # tried in order; "$CC" reads the environment variable CC
    flags: tuple[str, ...] = STRICT_FLAGS
    libs: tuple[str, ...] = ("-lm",)
    runner: tuple[str, ...] = ()  # prefix of the command that runs a built program
    description: str = ""

    def find_compiler(self) -> str | None:
        for cc in self.compilers:
            cc = os.environ.get(cc[1:]) if cc.startswith("$") else cc
            if cc and shutil.which(cc):
                return shutil.which(cc)
        return None

    def run_command(self, exe, *args: str) -> list[str]:
        return [*self.runner, str(exe), *args]


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
