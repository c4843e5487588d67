"""Command line: a thin shell over the Python API (``lwdc --help``), one module per group of commands."""
from . import compress, export, profile, report  # noqa: F401  (importing a module registers its commands)
from .base import main

__all__ = ["main"]
