"""Where training runs: the ``device`` setting, and moving batches and checkpoints between devices.

Training (warm-up, search, fine-tuning) may run on a CUDA device; everything else in lwdc (deriving and its
equivalence check, profiling, export, saved models and checkpoints) works on CPU tensors, so a run folder
written on a GPU machine resumes and reports on a CPU-only one and the other way round.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

__all__ = ["DEVICE_CHOICES", "resolve_device", "module_device", "to_device", "to_cpu"]

DEVICE_CHOICES = "auto (cuda if available, else cpu), cpu, cuda or cuda:N"


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> a concrete device, or a ValueError saying why not.

    ``"auto"`` and ``"cuda"`` without an index take ``cuda:LOCAL_RANK`` under torchrun (one GPU per rank), else
    the current CUDA device. Only CPU and CUDA are supported.
    """
    text = str(spec).strip().lower()
    if text == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        text = "cuda"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {spec}: not a device; use {DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ValueError(f"--device {spec}: lwdc trains on CPU or CUDA only; use {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: no CUDA device is visible (torch.cuda.is_available() is False); "
                         "use --device cpu")
    index = device.index
    if index is None:
        index = int(os.environ["LOCAL_RANK"]) if "LOCAL_RANK" in os.environ else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"--device {spec}: cuda:{index} does not exist, {count} CUDA device(s) are visible "
                         "(check CUDA_VISIBLE_DEVICES and torchrun --nproc_per_node)")
    return torch.device("cuda", index)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); CPU for a module with neither."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors in a batch (a tensor, or tuples/lists/dicts of them) moved to ``device``; a no-op where they are."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def to_cpu(obj: Any) -> Any:
    """A checkpoint's tensors on the CPU, so it loads on any machine (CPU tensors are returned as they are)."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    if isinstance(obj, dict):
        out = type(obj)((k, to_cpu(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):        # a state_dict's per-module versions, read by load_state_dict
            out._metadata = obj._metadata
        return out
    return obj
