"""Data security and robustness (issue 23): hostile pickles, invalid CIFAR contents, 16-bit PNGs, stale caches,
decompression bombs, oversized archives, degenerate class folders and loaders that would yield no batch.
"""
from __future__ import annotations

import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lwdc.data import ArrayDataset, BatchLoader, DataLayoutError, UnsafeArchiveError, load_data, make_bundle
from lwdc.data import archives

from test_data import make_cifar10, make_image_folder, make_tar


class _System:
    """Pickles as a call of ``os.system(command)``: what a hostile data file does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _cifar_with(tmp_path: Path, name: str, raw: bytes) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(folder)
    (folder / name).write_bytes(raw)
    return folder


# ------------------------------------------------------------------------------------------------ 1. unpickler
def test_pickle_that_runs_a_command_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "MARKER"
    evil = {"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": _System(f"touch {marker}")}
    folder = _cifar_with(tmp_path, "test_batch", pickle.dumps(evil, protocol=2))
    with pytest.raises(DataLayoutError, match=r"test_batch.*refusing to load global (posix|nt)\.system"):
        load_data(str(folder), cache_dir=tmp_path / "cache")
    assert not marker.exists()


def test_pickle_naming_a_numpy_submodule_does_not_import_it(tmp_path, monkeypatch):
    """The old check let any ``numpy.*`` module be imported; importing one can run code (``numpy.f2py.__main__``).
    Plant a numpy submodule that writes a marker when imported and reference it from a CIFAR file."""
    import numpy

    plugin = tmp_path / "plugin"
    plugin.mkdir()
    marker = tmp_path / "MARKER"
    (plugin / "lwdc_planted.py").write_text(f"open({str(marker)!r}, 'w').close()\n_reconstruct = None\n")
    monkeypatch.setattr(numpy, "__path__", [*numpy.__path__, str(plugin)])
    monkeypatch.delitem(__import__("sys").modules, "numpy.lwdc_planted", raising=False)
    folder = _cifar_with(tmp_path, "data_batch_2", b"cnumpy.lwdc_planted\n_reconstruct\n.")
    with pytest.raises(DataLayoutError, match="refusing to load global numpy.lwdc_planted._reconstruct"):
        load_data(str(folder), cache_dir=tmp_path / "cache")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_pickles_of_every_protocol_still_load(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(folder)
    data = np.arange(2 * 3072).reshape(2, 3072).astype(np.uint8)
    batch = {"data": data, "labels": [np.int64(3), 9], "filenames": np.array(["a.png", "b.png"])}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
    b = load_data(str(folder), cache_dir=tmp_path / "cache")
    assert b.test.y.tolist() == [3, 9] and np.array_equal(b.test.x.numpy().reshape(2, -1), data)


# ------------------------------------------------------------------------------------------------ 2. CIFAR contents
@pytest.mark.parametrize("batch,message", [
    ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "uint8 pixels, got float32"),
    ({"data": np.full((2, 3072), 300), "labels": [0, 1]}, r"0\.\.255, found 300\.\.300"),
    ({"data": np.zeros((2, 3000), np.uint8), "labels": [0, 1]}, r"\(N, 3072\) uint8 pixels, got uint8 of shape"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, r"0\.\.9 \(10 classes\), found 0\.\.10"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [-1, 0]}, r"found -1\.\.0"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "must hold 2 integer labels"),
    ({"data": np.zeros((2, 3072), np.uint8)}, "lacks 'labels'"),
])
def test_cifar_contents_are_validated_naming_the_file(tmp_path, batch, message):
    folder = _cifar_with(tmp_path, "data_batch_3", pickle.dumps(batch, protocol=2))
    with pytest.raises(DataLayoutError, match=message) as err:
        load_data(str(folder), cache_dir=tmp_path / "cache")
    assert str(folder / "data_batch_3") in str(err.value)


def test_cifar100_labels_are_checked_against_the_meta_classes(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for split in ("train", "test"):
        (folder / split).write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 5]}))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": ["a", "b", "c"]}))
    with pytest.raises(DataLayoutError, match=r"train: 'fine_labels' must lie in 0\.\.2"):
        load_data(str(folder), cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------------------------------------ 3. 16-bit PNGs
def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    rng = np.random.default_rng(0)
    deep = {}
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            values = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
            Image.fromarray(values).save(tmp_path / split / cls / "0.png")
            deep[(split, cls)] = values
    assert Image.open(tmp_path / "train" / "a" / "0.png").mode.startswith("I;16")     # really 16 bits on disk
    b = load_data(str(tmp_path), cache_dir=tmp_path / "cache")
    expected = np.round(deep[("train", "a")] / 257.0).astype(np.uint8)
    assert b.input_shape == (1, 6, 5) and np.array_equal(b.train.x[0, 0].numpy(), expected)
    assert 100 < float(b.train.x.float().mean()) < 155                       # clipping made nearly all 255


# ------------------------------------------------------------------------------------------------ 4. stale cache
def test_image_edited_in_place_is_decoded_again(tmp_path):
    make_image_folder(tmp_path / "set")
    cache = tmp_path / "cache"
    path = tmp_path / "set" / "train" / "bird" / "000.png"
    Image.open(path).save(path, compress_level=0)                     # stored PNG: size depends on shape only
    first = load_data(str(tmp_path / "set"), cache_dir=cache)
    st = path.stat()
    edited = np.full((6, 8, 3), 42, np.uint8)
    Image.fromarray(edited).save(path, compress_level=0)              # same name, same size, other pixels ...
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))               # ... and even the old mtime
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    again = load_data(str(tmp_path / "set"), cache_dir=cache)
    assert not torch.equal(first.train.x[0], again.train.x[0])
    assert np.array_equal(again.train.x[0].numpy(), edited.transpose(2, 0, 1))
    assert len(list(cache.glob("imagefolder-*.npz"))) == 1            # the stale cache was replaced


# ------------------------------------------------------------------------------------------------ 5. bombs
def _png_header_only(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [12_000, 100_000])     # over PIL's warning limit, and over its error limit
def test_decompression_bomb_is_a_one_line_error_naming_the_file(tmp_path, side):
    make_image_folder(tmp_path / "set")
    bomb = tmp_path / "set" / "train" / "dog" / "zz_bomb.png"
    _png_header_only(bomb, side, side)
    with pytest.raises(DataLayoutError) as err:
        load_data(str(tmp_path / "set"), cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert str(bomb) in message and "decompression bomb" in message and "\n" not in message
    assert err.value.__suppress_context__


# ------------------------------------------------------------------------------------------------ 6. archive cap
def test_archive_unpack_is_capped(tmp_path, monkeypatch):
    make_image_folder(tmp_path / "src" / "pics")
    archive = make_tar(tmp_path / "pics.tgz", tmp_path / "src" / "pics", "pics")
    total = sum(m.size for m in tarfile.open(archive) if m.isfile())
    cache = tmp_path / "cache"
    with pytest.raises(UnsafeArchiveError, match=f"refusing to unpack more than {total - 1} bytes"):
        load_data(str(archive), cache_dir=cache, max_unpack_bytes=total - 1)
    assert [p.name for p in cache.iterdir() if p.suffix != ".lock"] == []     # the partial unpack was removed
    monkeypatch.setenv("LWDC_MAX_UNPACK_BYTES", "100")
    with pytest.raises(UnsafeArchiveError, match="LWDC_MAX_UNPACK_BYTES"):
        load_data(str(archive), cache_dir=cache)
    assert len(load_data(str(archive), cache_dir=cache, max_unpack_bytes=total).train) == 9   # the parameter wins
    monkeypatch.setenv("LWDC_MAX_UNPACK_BYTES", "lots")
    with pytest.raises(ValueError, match="whole number of bytes"):
        archives.max_unpack_bytes()
    monkeypatch.delenv("LWDC_MAX_UNPACK_BYTES")
    assert archives.max_unpack_bytes() == 4 << 30


# ------------------------------------------------------------------------------------------------ 7. classes
def test_empty_class_folder_is_refused_by_name(tmp_path):
    make_image_folder(tmp_path / "set")
    empty = tmp_path / "set" / "train" / "cow"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DataLayoutError, match=f"{empty} holds no images"):
        load_data(str(tmp_path / "set"), cache_dir=tmp_path / "cache")
    (empty / "readme.txt").unlink()
    empty.rmdir()
    for p in (tmp_path / "set" / "test" / "dog").glob("*.png"):
        p.unlink()
    with pytest.raises(DataLayoutError, match="test/dog holds no images"):
        load_data(str(tmp_path / "set"), cache_dir=tmp_path / "cache")


def test_single_class_is_refused_for_classification(tmp_path):
    make_image_folder(tmp_path / "set", classes=("cat",))
    with pytest.raises(DataLayoutError, match=r"at least two classes; found only \['cat'\]"):
        load_data(str(tmp_path / "set"), cache_dir=tmp_path / "cache")
    x = np.zeros((2, 1, 4), np.float32)
    with pytest.raises(DataLayoutError, match=r"test labels must lie in 0\.\.1"):
        make_bundle("toy", x, [0, 1], x, [0, 2], ["a", "b"])
    assert make_bundle("toy", x, np.ones((2, 3)), x, np.ones((2, 3)), None, task="regression").num_classes is None


# ------------------------------------------------------------------------------------------------ 8. loader
def test_drop_last_without_a_full_batch_is_refused():
    data = ArrayDataset(torch.zeros(10, 1, 4, 4), torch.arange(10), (0.0,), (1.0,))
    with pytest.raises(ValueError, match="drop_last=True yields no batch: 10 samples per rank"):
        BatchLoader(data, 16, drop_last=True)
    with pytest.raises(ValueError, match=r"5 samples per rank \(10 over 2 rank"):
        BatchLoader(data, 8, drop_last=True, rank=1, world_size=2)
    assert len(BatchLoader(data, 10, drop_last=True)) == 1 and len(BatchLoader(data, 16)) == 1
