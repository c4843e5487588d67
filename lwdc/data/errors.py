"""The errors data loading raises: one line that names the file and says what lwdc accepts instead."""
from __future__ import annotations

__all__ = ["DataLayoutError", "UnsafeArchiveError"]


class DataLayoutError(ValueError):
    """The path holds no data lwdc can read, or data it refuses; the message names the file and what is accepted."""


class UnsafeArchiveError(DataLayoutError):
    """An archive lwdc refuses to unpack: a member outside the target folder, a link or device, or too many bytes."""
