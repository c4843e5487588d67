"""The run folder: config, atomic checkpoints, the final model and report.json.

Every file is written to a temporary name in the same folder and renamed into place, so a run killed at any
moment leaves either the previous complete file or the new complete one, never a torn one.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["atomic_write_bytes", "atomic_save", "write_json", "read_json", "load_checkpoint", "save_portable",
           "CheckpointError", "CHECKPOINT_VERSION", "remove_stale_temporaries"]

CHECKPOINT_VERSION = 1   # bump when the layout of a checkpoint dict changes; older ones are then refused clearly


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: truncated, foreign, or from another configuration."""


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and a rename."""
    _atomic(path, lambda f: torch.save(obj, f))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files a killed run left behind (their targets are intact: see ``_atomic``)."""
    stale = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: Path, kind: str, required: tuple[str, ...] = ()) -> dict:
    """Load a checkpoint written by lwdc, with a clear error for anything else (truncated, foreign, another
    format version, or missing one of the ``required`` keys)."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not an lwdc checkpoint; delete it to start this stage again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path} is not a readable lwdc checkpoint ({_reason(exc)}); "
                              "delete it to start this stage again") from None
    if not isinstance(state, dict) or state.get("lwdc_checkpoint") != kind:
        found = repr(state.get("lwdc_checkpoint")) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not an lwdc {kind!r} checkpoint (found {found})")
    if state.get("version") != CHECKPOINT_VERSION:
        found = "no format version" if state.get("version") is None else f"format version {state['version']!r}"
        raise CheckpointError(f"{path} has {found}, this lwdc reads version {CHECKPOINT_VERSION}; resume it with the "
                              "lwdc that wrote it, or delete it to start this stage again")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: it is damaged or was not written by lwdc; "
                              "delete it to start this stage again")
    return state


def _reason(exc: Exception) -> str:
    """torch's load errors run to paragraphs of advice about ``weights_only``; keep what says what was wrong."""
    if isinstance(exc, pickle.UnpicklingError):
        return "it holds Python objects or bytes that are not tensors and plain containers; lwdc never writes such"
    first = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def save_portable(model: nn.Module, example_input: torch.Tensor, path: Path) -> None:
    """Save ``model`` as a ``torch.export`` program: ``torch.export.load(path).module()`` runs it with only
    torch installed (no lwdc, no model source code), for any batch size."""
    was = model.training
    model.eval()
    try:
        batch = torch.export.Dim("batch", min=1, max=65536)
        sample = example_input[:1].expand(2, *example_input.shape[1:]).contiguous()  # batch 1 would specialise
        program = torch.export.export(model, (sample,), dynamic_shapes=({0: batch},))
    finally:
        model.train(was)
    _atomic(path, lambda f: torch.export.save(program, f))
