"""P300 EEG epochs (a visual oddball on a 4-electrode Muse headset), split so that no recording leaks.

The layout is one ``epochs.npz`` (as eeg-notebooks' data become with the shipped ``make_epochs.py``): ``X`` (N, C,
L) microvolts, ``y`` (1 = target), and per epoch ``subject``, ``session`` and ``recording``; optional ``channels``,
``sfreq``, ``tmin``. Neighbouring epochs overlap in time and share a recording's noise, so splitting by epoch leaks
the test set into training: folds here are made of whole recordings. Epochs with any sample at or beyond
``reject_uv`` microvolts (blinks, movement; 100 uV keeps about 87% of the shipped set) are dropped first.

Options (``load_data(path, options={...})``, ``--data-option KEY=VALUE``):

* ``split="within"`` (default): one subject's recordings in ``folds`` folds, recording ``k`` of the subject's
  sorted recordings in fold ``k % folds``; ``fold`` is the test fold. ``folds`` defaults to 4, or one per
  recording for a subject with fewer (``eeg_folds`` tells how many). Subject 1 has 16 recordings (3 sessions),
  so its 4 folds test on 4 recordings each (about 770 epochs, 120 targets; 19 of its 3,087 epochs are rejected).
  4 rather than leave-one-recording-out: a single recording holds only 22-38 clean targets, too few for a
  stable AUC per fold.
* ``split="loso"``: leave one subject out: ``subject`` is the test set, every other subject trains.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import archives
from .errors import DataLayoutError
from .registry import Arrays, default_cache_dir, find_layout, register_layout

__all__ = ["read_p300_epochs", "eeg_folds", "EPOCHS_FILE", "SPLITS", "DEFAULT_FOLDS"]

EPOCHS_FILE = "epochs.npz"
SPLITS = ("within", "loso")
DEFAULT_FOLDS = 4
_KEYS = ("X", "y", "subject", "recording")


def _is_epochs(folder: Path) -> bool:
    return (folder / EPOCHS_FILE).is_file()


def _load(folder: Path) -> dict:
    path = folder / EPOCHS_FILE
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise DataLayoutError(f"{path}: cannot read ({exc}); it must be a numpy .npz without pickled objects") from None
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise DataLayoutError(f"{path} lacks {', '.join(missing)}; an epochs file holds X (N, C, L), y, subject and "
                              "recording per epoch")
    x = data["X"]
    if x.ndim != 3 or any(len(data[k]) != len(x) for k in _KEYS[1:]):
        raise DataLayoutError(f"{path}: X must be (N, channels, samples) with one y, subject and recording per "
                              f"epoch; got X {x.shape}")
    return data


def _check_channels(data: dict, keep: np.ndarray, path: Path) -> None:
    """NaN anywhere, or a channel without variance over a whole recording (a dead electrode), is refused."""
    x, names = data["X"], [str(c) for c in data.get("channels", range(data["X"].shape[1]))]
    for rec in np.unique(data["recording"][keep]):
        sel = keep & (data["recording"] == rec)
        block = x[sel].astype(np.float64)
        subject = int(data["subject"][sel][0])
        for c in range(block.shape[1]):
            where = f"{path}: subject {subject}, recording {int(rec)}, channel {names[c]}"
            if not np.isfinite(block[:, c]).all():
                raise DataLayoutError(f"{where} holds NaN or infinite values; interpolate or drop that channel (or "
                                      "the recording) before epoching")
            if float(block[:, c].std()) == 0.0:
                raise DataLayoutError(f"{where} is flat (zero variance): the electrode recorded nothing; drop that "
                                      "channel or the recording")


def _recordings_of(data: dict, subject: int) -> np.ndarray:
    return np.unique(data["recording"][data["subject"] == subject])


def read_p300_epochs(folder: Path, cache_dir: Path | None = None, *, subject: int = 1, split: str = "within",
                     fold: int = 0, folds: int | None = None, reject_uv: float = 100.0) -> Arrays:
    """Train/test epochs of one split (see the module docstring); float32 microvolts, labels 0/1."""
    path = Path(folder) / EPOCHS_FILE
    if split not in SPLITS:
        raise DataLayoutError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    data = _load(Path(folder))
    subjects = sorted(int(s) for s in np.unique(data["subject"]))
    if int(subject) not in subjects:
        raise DataLayoutError(f"{path} has no subject {subject}; subjects: {subjects}")
    if split == "within":
        recordings = _recordings_of(data, subject)
        if len(recordings) < 2:
            raise DataLayoutError(f"{path}: subject {subject} has {len(recordings)} recording(s); a within-subject "
                                  "split needs 2 or more: choose another subject or split='loso'")
        folds = min(DEFAULT_FOLDS, len(recordings)) if folds is None else int(folds)
        if not 2 <= folds <= len(recordings):
            raise DataLayoutError(f"folds must be 2..{len(recordings)} (subject {subject} has {len(recordings)} "
                                  f"recordings); got {folds}")
        if not 0 <= fold < folds:
            raise DataLayoutError(f"fold must be 0..{folds - 1}; got {fold}")
        test_recordings = recordings[fold::folds]
        selected = data["subject"] == subject
        is_test = np.isin(data["recording"], test_recordings) & selected
    else:
        selected = np.ones(len(data["y"]), bool)
        is_test = data["subject"] == subject
    _check_channels(data, selected, path)
    x = data["X"].astype(np.float32)
    clean = np.abs(x).max(axis=(1, 2)) < reject_uv
    train, test = selected & ~is_test & clean, is_test & clean
    for name, mask in (("training", train), ("test", test)):
        labels = data["y"][mask]
        if not (labels == 1).any() or not (labels == 0).any():
            raise DataLayoutError(f"{path}: the {name} epochs of this split lack a class after rejecting "
                                  f"|x| >= {reject_uv} uV; choose another split or a higher reject_uv")
    info = {"sample_rate": float(data.get("sfreq", 128.0)), "time_offset": float(data.get("tmin", 0.0)),
            "channels": [str(c) for c in data.get("channels", range(x.shape[1]))], "units": "microvolts",
            "split": split, "subject": int(subject), "fold": int(fold) if split == "within" else None,
            "folds": int(folds) if split == "within" else None,
            "groups": {"train": data["recording"][train].astype(np.int64).tolist(),     # recording per epoch
                       "test": data["recording"][test].astype(np.int64).tolist()},
            "subjects": {"train": data["subject"][train].astype(np.int64).tolist(),
                         "test": data["subject"][test].astype(np.int64).tolist()},
            "rejected": {"reject_uv": reject_uv, "kept": int((selected & clean).sum()),
                         "dropped": int((selected & ~clean).sum())}}
    y = data["y"].astype(np.int64)
    return x[train], y[train], x[test], y[test], ["non-target", "target"], info


def eeg_folds(source: str | Path, subject: int = 1, cache_dir: str | Path | None = None) -> int:
    """How many folds the default within-subject split of ``subject`` makes (``fold`` runs over ``range`` of it).

    ``source`` is what ``load_data`` takes: a folder holding ``epochs.npz`` (or its parent) or a .tar.gz of one.
    """
    root = Path(source).expanduser()
    if root.is_file() and root.name.lower().endswith((".tar.gz", ".tgz")):
        root = archives.unpack(root, Path(cache_dir).expanduser() if cache_dir else default_cache_dir())
    found = find_layout(root) if root.is_dir() else None
    if found is None or found[0] != "p300-epochs":
        raise DataLayoutError(f"{source} holds no {EPOCHS_FILE}; give the folder or archive of the P300 epochs")
    data = _load(found[1])
    n = len(_recordings_of(data, subject))
    if n < 2:
        raise DataLayoutError(f"{found[1] / EPOCHS_FILE}: subject {subject} has {n} recording(s); a within-subject"
                              " split needs 2 or more: choose another subject or split='loso'")
    return min(DEFAULT_FOLDS, n)


register_layout("p300-epochs", _is_epochs, read_p300_epochs,
                description="EEG epochs: epochs.npz with X (N, C, L), y, subject, recording (P300, eeg-notebooks)")
