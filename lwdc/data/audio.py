"""Spoken-digit audio: WAV files read with the standard library, and the Free Spoken Digit Dataset's layout.

FSDD (Jackson et al., doi:10.5281/zenodo.1342401) is ``recordings/{digit}_{speaker}_{index}.wav``, 8 kHz mono
16-bit; its official split puts recording indices 0-4 in the test set. Samples become float32 (N, 1, 8000) in
[-1, 1]: one second, which holds 2,980 of the 3,000 clips whole (measured: median 3,358 samples, 99th percentile
7,361, longest 18,262); shorter clips are zero-padded at the end, the 20 longer ones keep their centre second.
Decoded arrays are cached as ``.npz`` in the cache folder (decoding takes about a second, reading the cache a
tenth of that), written atomically and only after every file was read. The default training augmentation is a
random time shift of up to 0.1 s (800 samples, zero fill): a word may start anywhere in its second.

Each clip is divided by its own peak (``normalize="peak"``, the default; ``"none"`` keeps the recorded level).
Speakers recorded at very different levels: unnormalised, the raw-waveform M5 reached 99% in float but its int8
C lost 8-23 points, as one activation scale cannot fit both the loud and the quiet clips; peak-normalised, float
and int8 C both reached 99.33% (seed 0, bench/signals.py). A device does the same with one pass over the clip.
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
from .augment import random_shift
from .cache import save_npz
from .errors import DataLayoutError
from .registry import Arrays, register_dataset, register_layout

__all__ = ["SAMPLE_RATE", "CLIP_SAMPLES", "SHIFT_SAMPLES", "NORMALIZATIONS", "read_wav", "fit_length", "peak_normalize",
           "read_fsdd", "FSDD_URL"]

SAMPLE_RATE = 8000
CLIP_SAMPLES = 8000
SHIFT_SAMPLES = 800        # default augmentation: random_shift of up to 0.1 s
_CACHE_VERSION = 1
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz"
NORMALIZATIONS = ("peak", "none")
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


def peak_normalize(x: np.ndarray) -> np.ndarray:
    """Each clip (last axis) divided by its largest absolute sample; a silent clip stays zero."""
    peak = np.abs(x).max(axis=-1, keepdims=True)
    return (x / np.where(peak > 0, peak, 1.0)).astype(np.float32)


def _recordings(folder: Path) -> Path | None:
    for d in (folder / "recordings", folder):
        if d.is_dir() and any(_NAME.match(p.name) for p in d.iterdir()):
            return d
    return None


def _is_fsdd(folder: Path) -> bool:
    return _recordings(folder) is not None and not (folder / "train").is_dir()


def _cache_path(rec: Path, files: list[Path], cache_dir: Path) -> tuple[Path, str]:
    """Keyed on every file's name, size and times, so an edited or added recording is decoded again."""
    h = hashlib.sha256(f"{_CACHE_VERSION}|{rec.resolve()}|{SAMPLE_RATE}|{CLIP_SAMPLES}".encode())
    for p in files:
        st = p.stat()
        h.update(f"|{p.name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}".encode())
    prefix = f"fsdd-{hashlib.sha256(str(rec.resolve()).encode()).hexdigest()[:8]}"
    return Path(cache_dir) / f"{prefix}-{h.hexdigest()[:20]}.npz", prefix


def _decode(files: list[Path]) -> dict:
    """Every file, or a ``DataLayoutError`` before anything is kept; resampled files are listed."""
    xs, lengths, ys, speakers, test, resampled = [], [], [], [], [], []
    for p in files:
        m = _NAME.match(p.name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x = read_wav(p)
        for w in caught:                 # kept, so that a load from the cache warns again
            if "resampled to" in str(w.message):
                resampled.append(str(w.message))
            else:
                warnings.warn(w.message, w.category)
        xs.append(fit_length(x))
        lengths.append(len(x))
        ys.append(int(m.group(1)))
        speakers.append(m.group(2))
        test.append(int(m.group(3)) <= 4)
    return {"x": np.stack(xs)[:, None, :], "length": np.array(lengths, np.int64), "y": np.array(ys, np.int64),
            "speaker": np.array(speakers), "test": np.array(test, bool), "resampled": np.array(resampled, dtype=str)}


def read_fsdd(folder: Path, cache_dir: Path | None = None, *, normalize: str = "peak") -> Arrays:
    """FSDD's ``recordings/`` folder (or the folder of WAVs itself) with the official split (index 0-4: test);
    ``normalize``: ``peak`` (each clip divided by its peak) or ``none``."""
    if normalize not in NORMALIZATIONS:
        raise DataLayoutError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    rec = _recordings(folder)
    if rec is None:
        raise DataLayoutError(f"{folder} holds no {{digit}}_{{speaker}}_{{index}}.wav recordings")
    files = sorted(p for p in rec.iterdir() if _NAME.match(p.name))
    cached, prefix = _cache_path(rec, files, cache_dir) if cache_dir is not None else (None, "")
    if cached is not None and cached.is_file():
        with np.load(cached, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    else:
        data = _decode(files)
    for message in data["resampled"]:
        warnings.warn(str(message), stacklevel=2)
    test = data["test"]
    for name, mask in (("train", ~test), ("test", test)):
        if not mask.any():
            raise DataLayoutError(f"{rec}: no {name} recordings (index {'0-4' if name == 'test' else '5 and up'})")
    if cached is not None and not cached.is_file():
        save_npz(cached, prefix, data, "decoded recordings")
    info = {"sample_rate": SAMPLE_RATE, "time_offset": 0.0, "clip_samples": CLIP_SAMPLES,
            "speakers": sorted(set(data["speaker"].tolist())), "cropped": int((data["length"] > CLIP_SAMPLES).sum()),
            "normalization": normalize, "source": "Free Spoken Digit Dataset (CC BY-SA 4.0)"}
    x, y = (peak_normalize(data["x"]) if normalize == "peak" else data["x"]), data["y"]
    return x[~test], y[~test], x[test], y[test], [str(d) for d in range(10)], info


def _load_fsdd(cache_dir: Path, download: bool, *, normalize: str = "peak") -> Arrays:
    """The FSDD release under the cache folder, downloaded from GitHub with ``download=True``."""
    cache_dir = Path(cache_dir)
    archive = cache_dir / "free-spoken-digit-dataset-1.0.10.tar.gz"
    for candidate in (cache_dir / "fsdd", cache_dir / archives.stem(archive)):
        if candidate.is_dir() and _recordings(candidate) is not None:
            return read_fsdd(candidate, cache_dir, normalize=normalize)
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
    return read_fsdd(found, cache_dir, normalize=normalize)


register_layout("fsdd", _is_fsdd, read_fsdd, augment=random_shift(SHIFT_SAMPLES),
                description="spoken digits: recordings/{digit}_{speaker}_{index}.wav (FSDD; index 0-4 = test)")
register_dataset("fsdd", _load_fsdd, augment=random_shift(SHIFT_SAMPLES),
                 description="Free Spoken Digit Dataset, 8 kHz, official split")
