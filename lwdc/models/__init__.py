"""A small registry of reference CNNs: one name -> one builder, the same keywords everywhere (timm-style)."""
from __future__ import annotations

from typing import Callable

from torch import nn

__all__ = ["register_model", "create_model", "list_models"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build a registered model; every builder takes ``num_classes``, ``in_channels`` and ``width``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, **kwargs)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


from . import cifar  # noqa: E402,F401  (registers the models)
