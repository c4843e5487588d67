"""A measured cost table on disk, shared by the cost models that measure (latency on this host, instructions on
an emulated core): one JSON file per environment (``host``), one entry per measured thing. Writes merge with what
another process may have written meanwhile and replace the file atomically; an unreadable file is measured again.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["MeasurementCache"]


class MeasurementCache:
    def __init__(self, path: Path, host: dict):
        self.path, self.host = Path(path), host
        self._table: dict[str, float] | None = None

    def _read(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text())
            return {k: float(v) for k, v in data.get("entries", {}).items()}
        except (OSError, ValueError, AttributeError):
            return {}            # absent or unreadable: measure again (and overwrite it)

    def get(self, key: str) -> float | None:
        if self._table is None:
            self._table = self._read()
        return self._table.get(key)

    def put(self, key: str, value: float) -> None:
        entries = {**self._read(), key: value}
        self._table = entries
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"host": self.host, "entries": entries}, f, indent=0, sort_keys=True)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)
