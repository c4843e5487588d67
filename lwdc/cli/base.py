"""The ``lwdc`` command group and what every command shares; commands live one concern per module."""
from __future__ import annotations

import click


def fail(message: str) -> None:
    """Stop with a clean one-line error (exit 1), never a traceback."""
    raise click.ClickException(message)


def parse_shape(text: str, option: str = "--input-shape") -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        fail(f"{option} must be comma-separated integers like 3,32,32; got {text!r}")
        raise


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lwdc")
def main() -> None:
    """lwdc: turn a bulky CNN into a lightweight plain PyTorch model by layer-wise differentiable compression."""
