"""Compression methods, one module each, behind one interface; and the training methods they plug into ``fit``.

A compression method turns a trained model into a smaller plain one: ``apply(model, ctx) -> MethodResult``,
where ``ctx`` (:class:`lwdc.stages.StageContext`) gives the task, the data, the settings, the run folder and a
checkpointed ``ctx.train``. The pipeline (:func:`lwdc.compress`) measures the model before, applies the method
named by ``CompressConfig.method``, fine-tunes what it returns, measures it after and writes the report, so a
method holds only what is its own. A new method is one module and one ``register_method`` call.

Built in: ``lwdc`` (layer-wise differentiable compression: expand, warm up, search, derive) and ``share`` (the
second method, issue 20: the greedy accuracy-driven weight-sharing loop of ``share`` over the pruning and codebook
parametrisations of ``codebook``; its model is fine-tuned with the codebooks trainable, then made plain).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol

from torch import nn

from ..registry import Registry
from .base import PlainTraining, TrainingMethod

__all__ = ["CompressionMethod", "MethodResult", "register_method", "get_method", "list_methods",
           "TrainingMethod", "PlainTraining"]


@dataclass
class MethodResult:
    """What a method hands back to the pipeline: the model to fine-tune and what the report should say."""

    model: nn.Module                                 # a plain torch.nn model, before fine-tuning
    choices: dict[str, str] = field(default_factory=dict)   # layer -> what the method chose for it
    report: dict = field(default_factory=dict)       # method-specific report fields
    history: dict = field(default_factory=dict)      # stage -> list of EpochLog
    wall_time_s: dict = field(default_factory=dict)  # stage -> seconds
    supernet: nn.Module | None = None


class CompressionMethod(Protocol):
    name: str

    def apply(self, model: nn.Module, ctx) -> MethodResult: ...

    # optional: ``finish(model) -> model``, called after fine-tuning (e.g. to make shared weights plain ones)


_METHODS = Registry("compression method")
_BUILTIN = {"lwdc": "lwdc.methods.lwdc", "share": "lwdc.methods.share"}     # imported on first use (they import the pipeline's pieces)


def register_method(name: str, cls: type | None = None):
    """Register a compression method class under ``name`` (also usable as a class decorator)."""
    return _METHODS.register(name, cls)


def list_methods() -> list[str]:
    return sorted(set(_METHODS.entries) | set(_BUILTIN))


def get_method(name: str) -> type:
    if name not in _METHODS.entries and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    return _METHODS.get(name, list_methods())
