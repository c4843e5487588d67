"""The run folder, owned by one object: settings, a lock, atomic checkpoints, saved models and report.json.

Only this module reads or writes the files of a run folder; the pipeline, the CLI, the benchmarks, the report,
profile and export all go through :class:`Run`. Every file is written to a temporary name in the same folder
(created 0600) and renamed into place, so a run killed at any moment leaves either the previous complete file or
the new complete one, never a torn one. Models are saved as data (an architecture description rebuilt from
lwdc's own layer vocabulary, :mod:`lwdc.arch`, plus a ``weights_only`` state dict): opening a run folder from a
stranger runs no code from it. ``model.pt2`` is also written, for users who load it with torch alone; lwdc
itself loads a ``.pt2`` only when told the file is trusted.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked there
    fcntl = None

__all__ = ["Run", "RunError", "RunLockedError", "atomic_write_bytes", "atomic_save", "write_json", "read_json",
           "load_checkpoint", "save_portable", "load_pt2", "CheckpointError", "CHECKPOINT_VERSION",
           "remove_stale_temporaries"]

CHECKPOINT_VERSION = 1   # bump when the layout of a checkpoint dict changes; older ones are then refused clearly


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: truncated, foreign, or from another configuration."""


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and a rename."""
    _atomic(path, lambda f: torch.save(obj, f))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files a killed run left behind (their targets are intact: see ``_atomic``)."""
    stale = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: Path, kind: str, required: tuple[str, ...] = ()) -> dict:
    """Load a checkpoint written by lwdc, with a clear error for anything else (truncated, foreign, another
    format version, or missing one of the ``required`` keys)."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not an lwdc checkpoint; delete it to start this stage again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path} is not a readable lwdc checkpoint ({_reason(exc)}); "
                              "delete it to start this stage again") from None
    if not isinstance(state, dict) or state.get("lwdc_checkpoint") != kind:
        found = repr(state.get("lwdc_checkpoint")) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not an lwdc {kind!r} checkpoint (found {found})")
    if state.get("version") != CHECKPOINT_VERSION:
        found = "no format version" if state.get("version") is None else f"format version {state['version']!r}"
        raise CheckpointError(f"{path} has {found}, this lwdc reads version {CHECKPOINT_VERSION}; resume it with the "
                              "lwdc that wrote it, or delete it to start this stage again")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: it is damaged or was not written by lwdc; "
                              "delete it to start this stage again")
    return state


def _reason(exc: Exception) -> str:
    """torch's load errors run to paragraphs of advice about ``weights_only``; keep what says what was wrong."""
    if isinstance(exc, pickle.UnpicklingError):
        return "it holds Python objects or bytes that are not tensors and plain containers; lwdc never writes such"
    first = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def save_portable(model: nn.Module, example_input: torch.Tensor, path: Path) -> None:
    """Save ``model`` as a ``torch.export`` program: ``torch.export.load(path).module()`` runs it with only
    torch installed (no lwdc, no model source code), for any batch size."""
    from .modes import eval_mode

    with eval_mode(model):
        batch = torch.export.Dim("batch", min=1, max=65536)
        sample = example_input[:1].expand(2, *example_input.shape[1:]).contiguous()  # batch 1 would specialise
        program = torch.export.export(model, (sample,), dynamic_shapes=({0: batch},))
    _atomic(path, lambda f: torch.export.save(program, f))


def load_pt2(path: Path, trusted: bool = False):
    """A ``torch.export`` program from ``path``, only if the user said the file is trusted: loading one
    unpickles whatever the archive marks as pickled, so a crafted file runs code (``--trust-pt2``)."""
    if not trusted:
        raise RunError(f"{path} is a torch.export program; loading one can run code it contains. lwdc loads .pt2 "
                       "files only when you trust them: pass --trust-pt2 (Python: trusted=True) if you trust its source, "
                       "or give the run folder it came from (its models load as data)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # torch's own pytree deprecation notes
        try:
            return torch.export.load(str(path))
        except Exception as exc:
            raise RunError(f"cannot load {path} as a torch.export program ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None


class RunError(RuntimeError):
    """A run folder that cannot be used as asked: missing, damaged, not lwdc's, or unfinished."""


class RunLockedError(RunError):
    """Another process holds the run folder."""


class Run:
    """One run folder: ``config.json`` (the spec), ``checkpoints/<stage>.pt``, saved models, ``report.json``.

    ``Run.create`` makes a new folder and ``Run.open`` an existing one; ``with run:`` (or ``lock()``) holds an
    exclusive lock on it for the life of a process, released on exit or crash (an OS file lock), so a second
    process on the same folder is refused instead of mixing files with the first.
    """

    CONFIG, REPORT, LOCK = "config.json", "report.json", ".lock"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._lock_file = None

    # -------------------------------------------------------------------------------------------- lifecycle
    @classmethod
    def create(cls, folder: str | Path, spec: dict, lock: bool = True) -> "Run":
        """A new run folder holding ``spec`` as config.json; refuses a non-empty folder or a path below a file."""
        folder = Path(folder)
        for parent in [folder, *folder.parents]:
            if parent.exists() and not parent.is_dir():
                raise RunError(f"cannot create run folder {folder}: {parent} is a file, not a folder")
        if folder.exists() and any(p.name != cls.LOCK for p in folder.iterdir()):
            raise RunError(f"run folder {folder} exists and is not empty; pass --resume {folder} or another --run-dir")
        folder.mkdir(parents=True, exist_ok=True)
        run = cls(folder)
        if lock:
            run.lock()
        write_json(folder / cls.CONFIG, spec)
        return run

    @classmethod
    def open(cls, folder: str | Path) -> "Run":
        folder = Path(folder)
        if not folder.is_dir():
            raise RunError(f"{folder} is not a folder; give an lwdc run folder")
        if not (folder / cls.CONFIG).is_file():
            raise RunError(f"{folder} has no {cls.CONFIG}: is it an lwdc run folder?")
        return cls(folder)

    @classmethod
    def open_finished(cls, folder: str | Path) -> "Run":
        """A finished run folder to read from (report.json present), written by ``lwdc compress`` (with
        config.json) or by the Python API's ``compress(run_dir=...)`` (without one); one message per mistake,
        the same in every command that takes a run folder."""
        folder = Path(folder)
        if not folder.exists():
            raise RunError(f"{folder}: no such file or folder")
        if not folder.is_dir():
            raise RunError(f"{folder} is not a folder; give an lwdc run folder")
        run = cls(folder)
        if not run.finished:
            if (folder / cls.CONFIG).is_file():
                raise RunError(f"{folder} is not a finished lwdc run: report.json is missing (compress writes it "
                               f"last); finish it with `lwdc compress --resume {folder}`")
            found = sorted(p.name for p in folder.iterdir())[:8]
            raise RunError(f"{folder} is not an lwdc run folder (no report.json; found: {', '.join(found) or 'nothing'})")
        return run

    def lock(self) -> "Run":
        """Hold the folder exclusively until ``release`` or the process ends."""
        if self._lock_file is not None or fcntl is None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(os.open(self.folder / self.LOCK, os.O_RDWR | os.O_CREAT, 0o600), "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLockedError(f"run folder {self.folder} is in use by {holder}; wait for it to finish (or stop "
                                 "it) before resuming, or use another --run-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        self._lock_file = handle
        return self

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()      # closing drops the flock
            self._lock_file = None

    def __enter__(self) -> "Run":
        return self.lock()

    def __exit__(self, *exc) -> None:
        self.release()

    def discard(self) -> None:
        """Remove a folder whose start failed before any work was saved (it holds config.json at most), so the
        same command can be run again; a folder with checkpoints or models is kept."""
        keep = [p for p in self.folder.iterdir() if p.name not in (self.CONFIG, self.LOCK)] if self.folder.is_dir() else []
        self.release()
        if not keep:
            shutil.rmtree(self.folder, ignore_errors=True)

    def remove_stale_temporaries(self) -> list[Path]:
        return remove_stale_temporaries(self.folder)

    # ----------------------------------------------------------------------------------------- spec, report
    def _json(self, name: str) -> dict:
        path = self.folder / name
        try:
            value = read_json(path)
        except FileNotFoundError:
            raise RunError(f"{path} does not exist: is {self.folder} a finished lwdc run folder?") from None
        except (OSError, ValueError) as exc:
            raise RunError(f"{path} is not readable JSON ({type(exc).__name__}: {exc}); the run folder is damaged") from None
        if not isinstance(value, dict):
            raise RunError(f"{path} should hold a JSON object, found {type(value).__name__}; the run folder is damaged")
        return value

    @property
    def spec(self) -> dict:
        """The settings the run was started with (config.json)."""
        return self._json(self.CONFIG)

    @property
    def finished(self) -> bool:
        return (self.folder / self.REPORT).is_file()

    def report(self) -> dict:
        return self._json(self.REPORT)

    def write_report(self, report: dict) -> None:
        """Written last: its presence marks a finished run."""
        write_json(self.folder / self.REPORT, report)

    def write_file(self, name: str, data: bytes | dict) -> Path:
        """Any other file of the run (JSON for a dict), atomically."""
        path = self.folder / name
        write_json(path, data) if isinstance(data, dict) else atomic_write_bytes(path, data)
        return path

    def read_file(self, name: str) -> dict | None:
        return self._json(name) if (self.folder / name).is_file() else None

    # ------------------------------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, stage: str) -> Path:
        return self.folder / "checkpoints" / f"{stage}.pt"

    def has_checkpoint(self, stage: str) -> bool:
        return self.checkpoint_path(stage).exists()

    def load_stage(self, stage: str, required: tuple[str, ...] = ()) -> dict | None:
        """The checkpoint of ``stage`` (None if there is none), vetted by :func:`load_checkpoint`."""
        path = self.checkpoint_path(stage)
        return load_checkpoint(path, stage, required) if path.exists() else None

    def save_stage(self, stage: str, state: dict) -> None:
        atomic_save({"lwdc_checkpoint": stage, "version": CHECKPOINT_VERSION, **state}, self.checkpoint_path(stage))

    # ----------------------------------------------------------------------------------------------- models
    def save_model(self, name: str, model: nn.Module, example_input: torch.Tensor, extra: dict | None = None,
                   portable: bool = True) -> None:
        """``{name}_state.pt`` (weights and ``extra``, loaded with ``weights_only``), ``{name}_arch.json`` (the
        architecture as data, when lwdc's vocabulary can describe it) and ``{name}.pt2`` (for torch users)."""
        from .arch import ArchitectureError, describe

        try:
            arch = {**describe(model), "input_shape": list(example_input.shape[1:])}
        except ArchitectureError as exc:
            arch = {"unavailable": str(exc), "input_shape": list(example_input.shape[1:])}
        write_json(self.folder / f"{name}_arch.json", arch)
        atomic_save({"lwdc_checkpoint": "model", "version": CHECKPOINT_VERSION, **(extra or {}),
                     "state_dict": model.state_dict()}, self.folder / f"{name}_state.pt")
        if portable:
            try:
                save_portable(model, example_input, self.folder / f"{name}.pt2")
            except Exception as exc:  # torch.export refuses some models; the safe artefact is what lwdc needs
                warnings.warn(f"{name}.pt2 not written: torch.export failed ({type(exc).__name__})")

    def has_model(self, name: str) -> bool:
        return (self.folder / f"{name}_state.pt").is_file()

    def model_state(self, name: str) -> dict:
        path = self.folder / f"{name}_state.pt"
        if not path.is_file():
            raise RunError(f"{path} does not exist: is {self.folder} a finished lwdc run folder?")
        try:
            return load_checkpoint(path, "model", required=("state_dict",))
        except CheckpointError as exc:
            raise RunError(str(exc).replace("; delete it to start this stage again", "; the run folder is damaged")) \
                from None

    def input_shape(self, name: str = "model") -> tuple[int, ...]:
        arch = self.read_file(f"{name}_arch.json") or {}
        shape = arch.get("input_shape") or (self.report().get("example_input_shape") or [None])[1:]
        if not shape or not all(isinstance(v, int) and v > 0 for v in shape):
            raise RunError(f"{self.folder} does not record the model's input shape; the run folder is damaged")
        return tuple(shape)

    def load_model(self, name: str = "model", model_name: str | None = None) -> nn.Module:
        """Rebuild a saved model (``"model"``: the compressed one, ``"original"``) without running code from the
        folder: from its architecture description, else from lwdc's registered model named in the spec, or by
        ``model_name`` for a folder that has none (``lwdc.compress`` called from Python writes no config.json)."""
        from .arch import ArchitectureError, build

        state = self.model_state(name)
        arch = self.read_file(f"{name}_arch.json")
        if arch is not None and "unavailable" not in arch:
            try:
                model = build(arch)
            except ArchitectureError as exc:
                raise RunError(f"{self.folder / (name + '_arch.json')}: {exc}") from None
        else:
            model = self._rebuild_registered(name, state, arch, model_name)
        try:
            model.load_state_dict(state["state_dict"])
        except (RuntimeError, KeyError, TypeError) as exc:
            raise RunError(f"{self.folder / (name + '_state.pt')} does not fit the saved architecture "
                           f"({str(exc).splitlines()[0][:200]}); the run folder is damaged") from None
        return model.eval()

    def _rebuild_registered(self, name: str, state: dict, arch: dict | None, model_name: str | None) -> nn.Module:
        """Models lwdc's vocabulary cannot describe: rebuilt only from a registered model (never from code the
        folder names), expanded and derived with the saved choices for the compressed one."""
        from .derivation import derive
        from .models import create_model, list_models
        from .space import expand

        spec = self.read_file(self.CONFIG) or {}
        why = (arch or {}).get("unavailable", "no architecture description was saved")
        model_name = spec.get("model_name") or model_name
        if model_name not in list_models():
            raise RunError(f"cannot rebuild {name} of {self.folder}: {why}, and its model "
                           f"{str(model_name)[:80]!r} is not a registered lwdc model")
        shape = self.input_shape(name)
        out = state["state_dict"]
        weights = [v for k, v in out.items() if k.endswith("weight") and v.dim() == 2]
        num_classes = weights[-1].shape[0] if weights else 10
        model = create_model(model_name, num_classes=num_classes, in_channels=shape[0], width=spec.get("width", 1.0))
        if name == "original" or not state.get("choices"):
            return model
        config = self.report().get("config", {})
        supernet = expand(model, torch.zeros(1, *shape), config.get("ops", "default"),
                          include_pooling=config.get("include_pooling", False))
        supernet.set_choices(state["choices"])
        return derive(supernet)
