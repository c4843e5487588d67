"""A small registry of reference CNNs: one name -> one builder, the same keywords everywhere (timm-style).

Every builder takes ``num_classes`` and ``in_channels`` (plus ``width`` where it makes sense), so the CLI and the
benchmarks can build any of them by name. The models obey the rules the compressor relies on: each layer is its
own module attribute, called once per forward pass, and forward passes use only module calls, ``+``,
flatten and ``torch.cat`` on channels. This package imports nothing else from lwdc.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Callable

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "is_code_reference", "load_factory"]

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


def is_code_reference(name: str) -> bool:
    """``path/to/file.py:factory`` or ``package.module:factory``: a model built by the user's own code."""
    return ":" in name and name not in _REGISTRY


def load_factory(reference: str) -> ModelBuilder:
    """Import the user's model factory named by ``file.py:function`` or ``module:function``.

    This runs the named code, as any Python import does: only use it with code you trust (lwdc never takes such a
    reference from a file it reads without the user naming it again).
    """
    where, _, attr = reference.rpartition(":")
    if not where or not attr.isidentifier():
        raise ValueError(f"model {reference!r}: use path/to/file.py:factory or package.module:factory")
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise ValueError(f"model {reference!r}: {path} is not a file")
        name = f"lwdc_user_model_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise ValueError(f"model {reference!r}: importing {path} failed ({type(exc).__name__}: {exc})") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise ValueError(f"model {reference!r}: cannot import {where} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"model {reference!r}: {where} has no callable {attr}")
    return factory


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build the registered model ``name``, or call the factory of a code reference (``file.py:factory``);
    extra keywords (``width``, ``dropout``...) go to the builder. A user factory gets only the keywords its
    signature takes (``num_classes``, ``in_channels``, ``width``...)."""
    if name in _REGISTRY:
        return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
    if not is_code_reference(name):
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}, or a factory of your "
                         "own as path/to/file.py:factory or package.module:factory")
    factory = load_factory(name)
    offered = {"num_classes": num_classes, "in_channels": in_channels, **kwargs}
    params = inspect.signature(factory).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    model = factory(**{k: v for k, v in offered.items() if takes_all or k in params})
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {name!r}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


# Imported last: these modules register their builders with the functions above.
from . import audio, eeg, mobilenetv2, resnet, tinycnn1d, vgg  # noqa: E402,F401
