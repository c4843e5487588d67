"""Spoken-digit audio: WAV files read with the standard library, and the Free Spoken Digit Dataset's layout.

FSDD (Jackson et al., doi:10.5281/zenodo.1342401) is ``recordings/{digit}_{speaker}_{index}.wav``, 8 kHz mono
16-bit; its official split puts recording indices 0-4 in the test set. Samples become float32 (N, 1, 8000) in
[-1, 1]: one second, which holds 2,980 of the 3,000 clips whole (measured: median 3,358 samples, 99th percentile
7,361); shorter clips are zero-padded at the end, the 20 longer ones keep their centre second. Decoding all
3,000 files takes about a second, so nothing is cached and a failed read leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import re
import sys
import urllib.request
import warnings
import wave
from pathlib import Path

import numpy as np

from . import archives
from .errors import DataLayoutError
from .registry import Arrays, register_dataset, register_layout

__all__ = ["SAMPLE_RATE", "CLIP_SAMPLES", "read_wav", "fit_length", "read_fsdd", "FSDD_URL"]

SAMPLE_RATE = 8000
CLIP_SAMPLES = 8000
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz"
_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def _resample(x: np.ndarray, rate: int, to: int, path: Path) -> np.ndarray:
    try:
        from scipy.signal import resample_poly
    except ImportError:
        raise DataLayoutError(f"{path} is sampled at {rate} Hz, not {to} Hz; resampling needs scipy "
                              "(pip install lwdc[signals]) or convert the file first") from None
    g = np.gcd(rate, to)
    return resample_poly(x, to // g, rate // g).astype(np.float32)


def read_wav(path: str | Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono PCM WAV -> float32 samples in [-1, 1] at ``rate`` Hz (another rate is resampled, with a warning).

    Refused with a ``DataLayoutError`` naming the file: not a RIFF/WAVE PCM file, stereo, empty, or truncated
    (fewer frames than its header declares).
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, file_rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise DataLayoutError(f"{path}: not a readable PCM WAV file ({exc}); re-save it as 16-bit PCM WAV") from None
    if channels != 1:
        raise DataLayoutError(f"{path}: {channels} channels; lwdc reads mono recordings: convert it to mono "
                              "(e.g. average the channels) first")
    if frames == 0:
        raise DataLayoutError(f"{path}: the recording is empty (0 samples); remove the file")
    if len(raw) < frames * width:
        raise DataLayoutError(f"{path}: truncated: its header declares {frames} samples but the file holds "
                              f"{len(raw) // width}; re-export or remove it")
    if width == 1:       # 8-bit WAV is unsigned
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    else:
        raise DataLayoutError(f"{path}: {8 * width}-bit samples; lwdc reads 8/16/24/32-bit PCM")
    if file_rate != rate:
        warnings.warn(f"{path}: sampled at {file_rate} Hz; resampled to {rate} Hz", stacklevel=2)
        x = _resample(x, file_rate, rate, path)
    return x


def fit_length(x: np.ndarray, length: int = CLIP_SAMPLES) -> np.ndarray:
    """Zero-pad at the end, or keep the centre ``length`` samples."""
    if len(x) >= length:
        start = (len(x) - length) // 2
        return x[start:start + length]
    return np.pad(x, (0, length - len(x)))


def _recordings(folder: Path) -> Path | None:
    for d in (folder / "recordings", folder):
        if d.is_dir() and any(_NAME.match(p.name) for p in d.iterdir()):
            return d
    return None


def _is_fsdd(folder: Path) -> bool:
    return _recordings(folder) is not None and not (folder / "train").is_dir()


def read_fsdd(folder: Path, cache_dir: Path | None = None) -> Arrays:
    """FSDD's ``recordings/`` folder (or the folder of WAVs itself) with the official split (index 0-4: test)."""
    rec = _recordings(folder)
    if rec is None:
        raise DataLayoutError(f"{folder} holds no {{digit}}_{{speaker}}_{{index}}.wav recordings")
    split: dict[str, tuple[list, list, list]] = {"train": ([], [], []), "test": ([], [], [])}
    for p in sorted(rec.iterdir()):
        m = _NAME.match(p.name)
        if m is None:
            continue
        xs, ys, who = split["test" if int(m.group(3)) <= 4 else "train"]
        xs.append(fit_length(read_wav(p)))
        ys.append(int(m.group(1)))
        who.append(m.group(2))
    for name, (xs, _, _) in split.items():
        if not xs:
            raise DataLayoutError(f"{rec}: no {name} recordings (index {'0-4' if name == 'test' else '5 and up'})")
    arrays = {k: np.stack(v[0])[:, None, :] for k, v in split.items()}
    speakers = sorted(set(split["train"][2]) | set(split["test"][2]))
    info = {"sample_rate": SAMPLE_RATE, "time_offset": 0.0, "clip_samples": CLIP_SAMPLES,
            "speakers": speakers, "source": "Free Spoken Digit Dataset (CC BY-SA 4.0)"}
    return (arrays["train"], np.array(split["train"][1]), arrays["test"], np.array(split["test"][1]),
            [str(d) for d in range(10)], info)


def _load_fsdd(cache_dir: Path, download: bool) -> Arrays:
    """The FSDD release under the cache folder, downloaded from GitHub with ``download=True``."""
    cache_dir = Path(cache_dir)
    archive = cache_dir / "free-spoken-digit-dataset-1.0.10.tar.gz"
    for candidate in (cache_dir / "fsdd", cache_dir / archives.stem(archive)):
        if candidate.is_dir() and _recordings(candidate) is not None:
            return read_fsdd(candidate)
    if not archive.is_file():
        if not download:
            raise DataLayoutError(f"fsdd was not found under {cache_dir} (looked for fsdd/recordings/ and "
                                  f"{archive.name}); pass download=True (--download) when online, or give the path "
                                  "of a folder or .tar.gz holding recordings/*.wav")
        cache_dir.mkdir(parents=True, exist_ok=True)
        part = archive.with_name(archive.name + ".part")
        print(f"downloading {FSDD_URL} to {archive} ...", file=sys.stderr, flush=True)
        urllib.request.urlretrieve(FSDD_URL, part)  # nosec B310: fixed https address of the data set's release
        print(f"sha256 {hashlib.sha256(part.read_bytes()).hexdigest()}", file=sys.stderr)
        part.replace(archive)
    root = archives.unpack(archive, cache_dir)
    found = next((p for p in [root, *sorted(root.iterdir())] if p.is_dir() and _recordings(p)), None)
    if found is None:
        raise DataLayoutError(f"{archive} holds no recordings/ folder of WAVs")
    return read_fsdd(found)


register_layout("fsdd", _is_fsdd, read_fsdd,
                description="spoken digits: recordings/{digit}_{speaker}_{index}.wav (FSDD; index 0-4 = test)")
register_dataset("fsdd", _load_fsdd, description="Free Spoken Digit Dataset, 8 kHz, official split")
