"""Start a model from weights trained on another task: every tensor but the head's is loaded, the head (the last
layer, whose size follows the task's outputs) is replaced when its shape differs, and the rest can be frozen.

A CIFAR-10 classifier's ResNet-20 becomes the start of a landmark regressor: same layers, a 10-output head
swapped for one of 2K outputs. Sources are files from strangers: a weights file is read with
``torch.load(weights_only=True)`` (tensors and plain containers only, no code), a run folder through
:class:`lwdc.runs.Run` (its ``weights_only`` state files); nothing else is ever unpickled.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

__all__ = ["TransferError", "FREEZE_MODES", "head_name", "load_source_state", "transfer_state", "init_from",
           "freeze"]

FREEZE_MODES = ("none", "backbone")


class TransferError(ValueError):
    """The source's weights do not fit the model apart from its head, or the source cannot be read."""


def head_name(model: nn.Module) -> str:
    """The head: the last module (in registration order) that holds parameters itself, a Linear or a
    convolution (the layer that maps features to the task's outputs in every lwdc model)."""
    owners = [(name, m) for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    if not owners or not isinstance(owners[-1][1], (nn.Linear, nn.Conv1d, nn.Conv2d)):
        found = type(owners[-1][1]).__name__ if owners else "no layer with parameters"
        raise TransferError(f"cannot tell the model's head: its last layer with parameters is {found}, not a "
                            "Linear or convolution")
    return owners[-1][0]


def load_source_state(source: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of ``source``: an lwdc run folder (its trained original model, the one compression
    started from) or a weights file (a state dict, or an lwdc checkpoint holding one under ``state_dict`` or
    ``model``), read without running code."""
    from .runs import CheckpointError, Run, RunError, _reason

    path = Path(source).expanduser()
    if path.is_dir():
        try:
            return dict(Run.open_finished(path).model_state("original")["state_dict"])
        except (RunError, CheckpointError) as exc:
            raise TransferError(f"--init-from {source}: {exc}") from None
    if not path.is_file():
        raise TransferError(f"--init-from {source}: no such run folder or weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign or truncated files
        raise TransferError(f"--init-from {source}: not a readable weights file ({_reason(exc)})") from None
    if isinstance(state, Mapping) and not all(torch.is_tensor(v) for v in state.values()):
        inner = next((state[k] for k in ("state_dict", "model") if isinstance(state.get(k), Mapping)), None)
        state = inner if inner is not None else state
    if not isinstance(state, Mapping) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise TransferError(f"--init-from {source}: expected a state dict (names -> tensors), found "
                            f"{type(state).__name__}")
    return dict(state)


def transfer_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict:
    """Load ``state`` into ``model`` in place: every tensor outside the head must be present with its shape (else
    ``TransferError`` names the first that is not); head tensors are loaded when their shapes match and kept as
    initialised (replaced) when not. Returns what happened: head, loaded and replaced tensor names."""
    head = head_name(model)
    own = model.state_dict()
    in_head = lambda key: key.startswith(head + ".")  # noqa: E731
    for key, value in own.items():
        if in_head(key):
            continue
        if key not in state:
            raise TransferError(f"the source has no tensor {key} (this model has {len(own)}): another architecture "
                                "or width")
        if tuple(state[key].shape) != tuple(value.shape):
            raise TransferError(f"{key} is {list(state[key].shape)} in the source and {list(value.shape)} here: "
                                "another architecture or width")
    extra = [k for k in state if k not in own and not in_head(k)]
    if extra:
        raise TransferError(f"the source has tensors this model lacks ({', '.join(extra[:3])}"
                            f"{'...' if len(extra) > 3 else ''}): another architecture")
    loaded, replaced = [], []
    with torch.no_grad():
        for key, value in own.items():
            if key in state and tuple(state[key].shape) == tuple(value.shape):
                value.copy_(state[key].to(value.dtype))
                loaded.append(key)
            else:
                replaced.append(key)
    return {"head": head, "loaded": loaded, "replaced": replaced}


def init_from(model: nn.Module, source: str | Path) -> dict:
    """``transfer_state`` from a run folder or weights file (``load_source_state``), with the source named."""
    report = transfer_state(model, load_source_state(source))
    return {"source": str(source), **report}


def freeze(model: nn.Module, mode: str = "backbone") -> list[str]:
    """``backbone``: stop gradients to every parameter outside the head (BatchNorm statistics still adapt in
    training mode); ``none``: train everything. Returns the frozen parameter names."""
    if mode not in FREEZE_MODES:
        raise ValueError(f"freeze must be one of {', '.join(FREEZE_MODES)}, got {mode!r}")
    head = head_name(model)
    frozen = []
    for name, p in model.named_parameters():
        keep = mode == "none" or name.startswith(head + ".")
        p.requires_grad_(keep)
        if not keep:
            frozen.append(name)
    return frozen
