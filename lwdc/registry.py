"""A name -> class registry, usable as a decorator: what tasks and compression methods are looked up in."""
from __future__ import annotations

__all__ = ["Registry"]


class Registry:
    def __init__(self, kind: str):
        self.kind, self.entries = kind, {}

    def register(self, name: str, cls: type | None = None):
        """Register ``cls`` under ``name`` (or, without ``cls``, return a class decorator that does)."""
        def add(c: type) -> type:
            self.entries[name] = c
            return c
        return add(cls) if cls is not None else add

    def get(self, name: str, known: list[str] | None = None) -> type:
        if name not in self.entries:
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(known or sorted(self.entries))}")
        return self.entries[name]
