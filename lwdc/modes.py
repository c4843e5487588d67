"""Train/eval mode for a block of code, restored module by module afterwards (one helper for the whole package)."""
from __future__ import annotations

from contextlib import contextmanager

from torch import nn

__all__ = ["module_mode", "eval_mode"]


@contextmanager
def module_mode(model: nn.Module, training: bool):
    """``model.train(training)`` for the block, then every submodule's previous mode. A ``torch.export`` module
    has its mode baked in and refuses ``train()``/``eval()``: it is used as it is."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.train(training)
    except NotImplementedError:
        yield model
        return
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.train(mode)


def eval_mode(model: nn.Module):
    """Eval mode for the block (see :func:`module_mode`)."""
    return module_mode(model, False)
