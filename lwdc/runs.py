"""The run folder: config, atomic checkpoints, the final model and report.json.

Every file is written to a temporary name in the same folder and renamed into place, so a run killed at any
moment leaves either the previous complete file or the new complete one, never a torn one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["atomic_write_bytes", "atomic_save", "write_json", "read_json", "load_checkpoint", "save_portable",
           "CheckpointError"]


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


def load_checkpoint(path: Path, kind: str) -> dict:
    """Load a checkpoint written by lwdc, with a clear error for anything else."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path} is not a readable lwdc checkpoint ({type(exc).__name__}: {exc}); "
                              "delete it to start this stage again") from None
    if not isinstance(state, dict) or state.get("lwdc_checkpoint") != kind:
        raise CheckpointError(f"{path} is not an lwdc {kind!r} checkpoint (found "
                              f"{state.get('lwdc_checkpoint') if isinstance(state, dict) else type(state).__name__})")
    return state


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
