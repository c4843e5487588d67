"""A small registry of reference CNNs: one name -> one builder, the same keywords everywhere (timm-style).

Every builder takes ``num_classes`` and ``in_channels`` (plus ``width`` where it makes sense), so the CLI and the
benchmarks can build any of them by name. The models obey the rules the compressor relies on: each layer is its
own module attribute, called once per forward pass, and forward passes use only module calls, ``+`` and
flatten. This package imports nothing else from lwdc.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

__all__ = ["register_model", "create_model", "list_models"]

ModelBuilder = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(fn: ModelBuilder) -> ModelBuilder:
    """Decorator: register ``fn`` under its ``__name__``.

    Registering a different builder under a taken name is an error, so a user's model cannot silently replace a
    built-in one (re-registering the same function, e.g. on module reload, is allowed).
    """
    name = fn.__name__
    old = _REGISTRY.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
        raise ValueError(f"a model named {name!r} is already registered (by {old.__module__})")
    _REGISTRY[name] = fn
    return fn


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build the registered model ``name``; extra keywords (``width``, ``dropout``...) go to its builder."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, **kwargs)


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


# Imported last: these modules register their builders with the functions above.
from . import mobilenetv2, resnet, tinycnn1d, vgg  # noqa: E402,F401
