"""Hostile files for the security tests: each would create a marker file if lwdc ran the code it carries."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch


class _Plant:
    """Unpickling this creates ``path`` (through ``pathlib.Path.touch``, no shell)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


class _WithConstant(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("c", torch.ones(3), persistent=False)    # exported as a tensor constant

    def forward(self, x):
        return x + self.c


def hostile_pt2(path: Path, marker: Path) -> Path:
    """A genuine ``torch.export`` archive whose constant is marked as pickled and replaced by a payload that
    plants ``marker``: ``torch.export.load`` runs it (``tests/test_security.py`` checks that it really does)."""
    program = torch.export.export(_WithConstant(), (torch.randn(2, 3),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    payload = io.BytesIO()
    torch.save(_Plant(marker), payload)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source, zipfile.ZipFile(path, "w") as out:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("model_constants_config.json"):
                config = json.loads(data)
                for entry in config["config"].values():
                    entry["use_pickle"] = True
                data = json.dumps(config).encode()
            elif "/data/constants/tensor_" in info.filename:
                data = payload.getvalue()
            out.writestr(info, data)
    return path
