"""Signal data: FSDD-style spoken digits (WAV) and P300 EEG epochs, made small in tmp_path; every bad input
gets a named error and leaves nothing behind."""
import wave
from pathlib import Path

import numpy as np
import pytest

from lwdc.data import DataLayoutError, load_data
from lwdc.data.audio import CLIP_SAMPLES, read_wav

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
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
    assert b.info["sample_rate"] == 8000 and not (tmp_path / "cache").exists()    # nothing cached


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
    with pytest.warns(UserWarning, match="16000 Hz; resampled to 8000 Hz"):
        x = read_wav(path)
    assert len(x) == 8000
    assert np.argmax(np.abs(np.fft.rfft(x))) == 440        # 1 s at 8 kHz: bin k is k Hz


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
    assert seen == {0, 1, 2, 3}
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
    make_fsdd(tmp_path / "audio")
    with pytest.raises(DataLayoutError, match="take no option"):
        load_data(str(tmp_path / "audio"), options={"fold": 1})


@pytest.mark.skipif(not (SHARED / "fsdd.tar.gz").exists(), reason="../shared/data is absent")
@pytest.mark.slow
def test_real_archives(tmp_path):
    b = load_data(str(SHARED / "fsdd.tar.gz"), cache_dir=tmp_path)
    assert (len(b.train), len(b.test)) == (2700, 300)
    e = load_data(str(SHARED / "eeg_p300_muse.tar.gz"), cache_dir=tmp_path, options={"fold": 0})
    assert len(e.train) + len(e.test) == 3068
