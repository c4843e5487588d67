"""Signal data: FSDD-style spoken digits (WAV) and P300 EEG epochs, made small in tmp_path; every bad input
gets a named error and leaves nothing behind."""
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from lwdc.data import DataLayoutError, eeg_folds, load_data
from lwdc.data.audio import CLIP_SAMPLES, SHIFT_SAMPLES, read_wav

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def pcm(samples: np.ndarray, width: int) -> bytes:
    """Little-endian PCM of ``width`` bytes (8-bit WAV is unsigned)."""
    s = np.clip(samples, -1, 1)
    if width == 1:
        return (s * 127 + 128).astype(np.uint8).tobytes()
    if width == 3:
        v = (s * (2 ** 23 - 1)).astype("<i4")
        return np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], 1).astype(np.uint8).tobytes()
    return (s * (2 ** (8 * width - 1) - 1)).astype({2: "<i2", 4: "<i4"}[width]).tobytes()


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm(samples, width))
    return path


def make_fsdd(root: Path, indices=range(7), digits=range(3), length=3000) -> Path:
    rec = root / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for d in digits:
        for i in indices:
            write_wav(rec / f"{d}_alice_{i}.wav", 0.1 * rng.standard_normal(length + 500 * d))
    return rec


def test_fsdd_official_split_and_fixed_length(tmp_path):
    make_fsdd(tmp_path, indices=range(8), length=9000)
    b = load_data(str(tmp_path), cache_dir=tmp_path / "cache")
    assert b.train.x.shape == (9, 1, CLIP_SAMPLES) and b.test.x.shape == (15, 1, CLIP_SAMPLES)  # index 0-4 test
    assert b.class_names == [str(d) for d in range(10)] and sorted(b.test.y.tolist()) == [0] * 5 + [1] * 5 + [2] * 5
    assert b.info["sample_rate"] == 8000 and b.info["cropped"] == 24         # 9,000-10,000 samples: centre second
    cached = list((tmp_path / "cache").glob("fsdd-*.npz"))
    assert len(cached) == 1 and not list((tmp_path / "cache").glob(".*tmp*"))   # written atomically, once
    again = load_data(str(tmp_path), cache_dir=tmp_path / "cache")
    assert torch.equal(again.train.x, b.train.x) and torch.equal(again.test.y, b.test.y)
    (tmp_path / "fsdd" / "recordings" / "0_alice_9.wav").write_bytes(
        (tmp_path / "fsdd" / "recordings" / "0_alice_7.wav").read_bytes())       # a new file: decoded again
    assert len(load_data(str(tmp_path), cache_dir=tmp_path / "cache").train) == 10
    assert len(list((tmp_path / "cache").glob("fsdd-*.npz"))) == 1             # the stale cache is dropped


def test_fsdd_default_augment_is_a_time_shift(tmp_path):
    make_fsdd(tmp_path, indices=range(6), digits=range(2))
    b = load_data(str(tmp_path), cache_dir=tmp_path / "cache")
    x = torch.ones(8, 1, CLIP_SAMPLES)
    g = torch.Generator().manual_seed(0)
    shifted, y = b.augment(x, torch.arange(8), g)
    zeros = (shifted == 0).sum(dim=(1, 2))
    assert shifted.shape == x.shape and torch.equal(y, torch.arange(8)) and int(zeros.max()) <= SHIFT_SAMPLES
    assert zeros.unique().numel() > 1                                          # shifts differ per sample
    assert torch.equal(b.augment(x, y, torch.Generator().manual_seed(0))[0], shifted)   # the generator decides


def test_fsdd_clips_are_peak_normalised_by_default(tmp_path):
    rec = make_fsdd(tmp_path, indices=range(6), digits=range(2))
    write_wav(rec / "1_bob_5.wav", np.zeros(2000))                             # silence stays silence
    b = load_data(str(tmp_path), cache_dir=tmp_path / "cache")
    raw = load_data(str(tmp_path), cache_dir=tmp_path / "cache", options={"normalize": "none"})
    peaks = b.train.x.abs().amax(dim=(1, 2))
    assert b.info["normalization"] == "peak" and raw.info["normalization"] == "none"
    assert sorted(peaks.tolist()).count(0.0) == 1 and torch.allclose(peaks[peaks > 0], torch.ones(2))
    loud = peaks > 0
    raw_peaks = raw.train.x.abs().amax(dim=(1, 2), keepdim=True)
    assert 0.2 < float(raw_peaks.max()) < 0.6                                  # the files were recorded quietly
    assert torch.allclose(b.train.x[loud], raw.train.x[loud] / raw_peaks[loud])  # the same clips, rescaled


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_pcm_widths_read_to_the_same_scale(tmp_path, width):
    x = 0.5 * np.sin(np.linspace(0, 20, 400))
    got = read_wav(write_wav(tmp_path / "w.wav", x, width=width))
    assert got.dtype == np.float32 and np.abs(got - x).max() < (0.02 if width == 1 else 1e-4)


def test_fsdd_pads_and_centre_crops(tmp_path):
    x = np.linspace(-0.5, 0.5, 10000, dtype=np.float32)
    long = read_wav(write_wav(tmp_path / "a.wav", x))
    from lwdc.data.audio import fit_length
    assert np.allclose(fit_length(long), long[1000:9000])
    short = fit_length(long[:100])
    assert short.shape == (CLIP_SAMPLES,) and not short[100:].any()


def test_another_rate_is_resampled_with_a_warning(tmp_path):
    pytest.importorskip("scipy")
    t = np.arange(16000) / 16000
    path = write_wav(tmp_path / "sine.wav", 0.5 * np.sin(2 * np.pi * 440 * t), rate=16000)
    with pytest.warns(UserWarning, match="sine.wav: sampled at 16000 Hz; resampled to 8000 Hz"):
        x = read_wav(path)
    assert len(x) == 8000
    assert np.argmax(np.abs(np.fft.rfft(x))) == 440        # 1 s at 8 kHz: bin k is k Hz


def test_resampled_recordings_warn_from_the_cache_too(tmp_path):
    pytest.importorskip("scipy")
    rec = make_fsdd(tmp_path, indices=range(6), digits=range(2))
    write_wav(rec / "1_alice_5.wav", 0.1 * np.ones(11025), rate=11025)
    for _ in range(2):                                      # decoded, then read from the cache
        with pytest.warns(UserWarning, match="1_alice_5.wav: sampled at 11025 Hz; resampled to 8000 Hz"):
            b = load_data(str(tmp_path), cache_dir=tmp_path / "cache")
        assert b.train.x.shape[1:] == (1, CLIP_SAMPLES)


@pytest.mark.parametrize("kind", ["stereo", "empty", "truncated", "not-wav"])
def test_bad_wav_named_and_nothing_written(tmp_path, kind):
    rec = make_fsdd(tmp_path, indices=range(6), digits=range(2))
    bad = rec / "1_alice_9.wav"
    if kind == "stereo":
        write_wav(bad, np.zeros(200), channels=2)
        expect = "2 channels"
    elif kind == "empty":
        write_wav(bad, np.zeros(0))
        expect = "empty"
    elif kind == "truncated":
        write_wav(bad, np.zeros(4000))
        bad.write_bytes(bad.read_bytes()[:2000])
        expect = "truncated"
    else:
        bad.write_bytes(b"hello, not a wav file at all")
        expect = "not a readable PCM WAV"
    with pytest.raises(DataLayoutError, match=expect) as err:
        load_data(str(tmp_path), cache_dir=tmp_path / "cache")
    assert "1_alice_9.wav" in str(err.value)
    assert not (tmp_path / "cache").exists()


def make_epochs(root: Path, subjects=(1, 2), recordings_per_subject=4, per_recording=30, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    xs, ys, subj, rec = [], [], [], []
    r = 0
    for s in subjects:
        for _ in range(recordings_per_subject):
            y = (np.arange(per_recording) % 5 == 0).astype(np.int8)
            x = rng.normal(0, 10, (per_recording, 4, 116))
            x[y == 1, :, 45:70] += 8          # a P300-like bump at 250-450 ms
            xs.append(x), ys.append(y), subj.append(np.full(per_recording, s)), rec.append(np.full(per_recording, r))
            r += 1
    folder = root / "eeg"
    folder.mkdir()
    np.savez(folder / "epochs.npz", X=np.concatenate(xs).astype(np.float16), y=np.concatenate(ys),
             subject=np.concatenate(subj).astype(np.int8), recording=np.concatenate(rec).astype(np.int8),
             channels=np.array(["TP9", "AF7", "AF8", "TP10"]), sfreq=np.float32(128), tmin=np.float32(-0.1))
    return folder


def test_eeg_folds_by_recording_never_leak(tmp_path):
    folder = make_epochs(tmp_path)
    seen = set()
    for fold in range(4):
        b = load_data(str(folder), options={"fold": fold})
        train, test = set(b.info["groups"]["train"]), set(b.info["groups"]["test"])
        assert not train & test and train | test == {0, 1, 2, 3}      # subject 1 only
        seen |= test
        assert b.input_shape == (4, 116) and b.class_names == ["non-target", "target"]
    assert seen == {0, 1, 2, 3} and eeg_folds(folder) == 4 and b.info["folds"] == 4
    assert set(b.info["subjects"]["train"]) == set(b.info["subjects"]["test"]) == {1}
    assert len(b.info["groups"]["train"]) == len(b.train) and len(b.info["groups"]["test"]) == len(b.test)
    assert b.augment is None                  # epochs are time-locked to the stimulus: no shift
    assert b.info["sample_rate"] == 128 and b.info["time_offset"] == pytest.approx(-0.1)


def test_eeg_rejection_and_loso(tmp_path):
    folder = make_epochs(tmp_path)
    z = dict(np.load(folder / "epochs.npz"))
    z["X"][3, 1, 10] = 150                    # one artefact in subject 1
    np.savez(folder / "epochs.npz", **z)
    b = load_data(str(folder), options={"fold": 0, "folds": 2})
    assert b.info["rejected"] == {"reject_uv": 100.0, "kept": 119, "dropped": 1}
    assert len(b.train) + len(b.test) == 119
    loso = load_data(str(folder), options={"split": "loso", "subject": 2})
    assert set(loso.info["groups"]["test"]) == {4, 5, 6, 7} and set(loso.info["groups"]["train"]) == {0, 1, 2, 3}
    assert set(loso.info["subjects"]["test"]) == {2} and set(loso.info["subjects"]["train"]) == {1}


def test_eeg_fold_count_follows_the_recordings(tmp_path):
    folder = make_epochs(tmp_path, subjects=(1, 2, 3), recordings_per_subject=3)
    z = dict(np.load(folder / "epochs.npz"))
    keep = ~((z["subject"] == 3) & (z["recording"] != 6))       # subject 3: one recording
    np.savez(folder / "epochs.npz", **{k: v[keep] if v.ndim and len(v) == len(keep) else v for k, v in z.items()})
    assert eeg_folds(folder, subject=2) == 3                     # fewer than 4: one fold per recording
    tests = [set(load_data(str(folder), options={"subject": 2, "fold": k}).info["groups"]["test"]) for k in range(3)]
    assert tests == [{3}, {4}, {5}]
    with pytest.raises(DataLayoutError, match="subject 3 has 1 recording"):
        eeg_folds(folder, subject=3)
    with pytest.raises(DataLayoutError, match="subject 3 has 1 recording"):
        load_data(str(folder), options={"subject": 3})


@pytest.mark.parametrize("kind", ["nan", "flat"])
def test_eeg_bad_channels_are_named(tmp_path, kind):
    folder = make_epochs(tmp_path)
    z = dict(np.load(folder / "epochs.npz"))
    sel = z["recording"] == 2
    z["X"][sel, 2] = np.nan if kind == "nan" else 0.0
    np.savez(folder / "epochs.npz", **z)
    with pytest.raises(DataLayoutError, match=f"recording 2, channel AF8 {'holds NaN' if kind == 'nan' else 'is flat'}"):
        load_data(str(folder), options={"fold": 0})


def test_eeg_option_errors(tmp_path):
    folder = make_epochs(tmp_path)
    with pytest.raises(DataLayoutError, match="accepted: subject, split, fold, folds, reject_uv"):
        load_data(str(folder), options={"fould": 1})
    with pytest.raises(DataLayoutError, match="fold must be 0..3"):
        load_data(str(folder), options={"fold": 4})
    with pytest.raises(DataLayoutError, match="no subject 7"):
        load_data(str(folder), options={"subject": 7})
    with pytest.raises(DataLayoutError, match="split must be one of within, loso"):
        load_data(str(folder), options={"split": "random"})
    make_fsdd(tmp_path / "audio")
    with pytest.raises(DataLayoutError, match="take no option.*fold; accepted: normalize"):
        load_data(str(tmp_path / "audio"), options={"fold": 1})
    with pytest.raises(DataLayoutError, match="normalize must be one of peak, none, got 'rms'"):
        load_data(str(tmp_path / "audio"), options={"normalize": "rms"})


@pytest.mark.skipif(not (SHARED / "fsdd.tar.gz").exists(), reason="../shared/data is absent")
@pytest.mark.slow
def test_real_archives(tmp_path):
    b = load_data(str(SHARED / "fsdd.tar.gz"), cache_dir=tmp_path)
    assert (len(b.train), len(b.test)) == (2700, 300)
    e = load_data(str(SHARED / "eeg_p300_muse.tar.gz"), cache_dir=tmp_path, options={"fold": 0})
    assert (len(e.train), len(e.test), e.info["rejected"]["dropped"]) == (2302, 766, 19)
    assert eeg_folds(SHARED / "eeg_p300_muse.tar.gz", cache_dir=tmp_path) == 4
