"""Data loading (every layout, archives, caching, errors), the shipped subset, BatchLoader and augmentation.

All data sets here are made in tmp_path; the one check against ../shared skips when it is absent.
"""
from __future__ import annotations

import importlib.util
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lwdc.data import (LAYOUTS, SUBSET_PATH, ArrayDataset, BatchLoader, DataLayoutError, UnsafeArchiveError,
                       load_data, random_crop_flip, random_shift)
from lwdc.data import archives
from lwdc.data import images as image_layout

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


# ------------------------------------------------------------------------------------------------ fixtures
def _dump(path: Path, obj, legacy: bool = False) -> None:
    raw = pickle.dumps(obj, protocol=2)
    if legacy:   # as the official files (written by numpy 1.x) name it
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(raw)


def make_cifar10(folder: Path, per_batch: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A tiny ``cifar-10-batches-py`` folder; returns all images (train then test) and labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        _dump(folder / name, {"batch_label": name, "data": data, "labels": labels,
                              "filenames": [f"{i}.png" for i in range(per_batch)]}, legacy=name == "data_batch_1")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.array(labels))
    _dump(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072})
    return np.concatenate(xs), np.concatenate(ys)


def make_image_folder(folder: Path, classes=("dog", "cat", "bird"), n_train: int = 3, n_test: int = 2,
                      size=(8, 6), seed: int = 0) -> dict:
    """``train/<class>/*.png`` + ``test/<class>/*.png``; returns {(split, class): [CHW arrays in file order]}."""
    rng = np.random.default_rng(seed)
    images = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in classes:
            (folder / split / cls).mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(a).save(folder / split / cls / f"{i:03d}.png")
                images.setdefault((split, cls), []).append(a.transpose(2, 0, 1))
    (folder / "train" / "cat" / "notes.txt").write_text("not an image")
    return images


def make_tar(archive: Path, folder: Path, arcname: str) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return archive


@pytest.fixture(scope="module")
def subset():
    return load_data("cifar10-subset")


# ------------------------------------------------------------------------------------------------ pickled CIFAR
def test_pickled_cifar10_folder(tmp_path):
    x, y = make_cifar10(tmp_path / "cifar-10-batches-py")
    for source in (tmp_path / "cifar-10-batches-py", tmp_path):      # the folder itself, or its parent
        b = load_data(str(source), cache_dir=tmp_path / "cache")
        assert b.name == str(source)
        assert (len(b.train), len(b.test), b.num_classes, b.input_shape) == (20, 4, 10, (3, 32, 32))
        assert b.class_names == [f"c{i}" for i in range(10)]
        assert b.train.x.dtype == torch.uint8 and b.train.y.dtype == torch.int64
        assert np.array_equal(b.train.x.numpy(), x[:20]) and np.array_equal(b.test.x.numpy(), x[20:])
        assert np.array_equal(b.train.y.numpy(), y[:20]) and np.array_equal(b.test.y.numpy(), y[20:])
        expected = (x[:20] / 255.0).mean(axis=(0, 2, 3))
        assert np.allclose(b.train.mean, expected) and b.test.mean == b.train.mean
        assert np.allclose(b.train.std, (x[:20] / 255.0).std(axis=(0, 2, 3)))


def test_pickled_cifar100_folder(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 6), ("test", 3)):
        _dump(folder / split, {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                               "fine_labels": rng.integers(0, 100, n).tolist(), "coarse_labels": [0] * n})
    _dump(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": ["x"] * 20})
    b = load_data(str(tmp_path), cache_dir=tmp_path / "cache")
    assert (len(b.train), len(b.test), b.num_classes, b.class_names[99]) == (6, 3, 100, "f99")


def test_pickle_with_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(folder)
    _dump(folder / "test_batch", {"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": Path("/")})
    with pytest.raises(DataLayoutError, match="refusing"):
        load_data(str(folder), cache_dir=tmp_path / "cache")


def test_named_cifar_from_cache_dir_and_missing(tmp_path, monkeypatch):
    with pytest.raises(DataLayoutError, match="download=True"):
        load_data("cifar10", cache_dir=tmp_path)
    make_cifar10(tmp_path / "cifar-10-batches-py")
    monkeypatch.setenv("LWDC_DATA", str(tmp_path))
    b = load_data("cifar10")
    assert b.name == "cifar10" and len(b.train) == 20


# ------------------------------------------------------------------------------------------------ image folders
def test_image_folder_sorted_classes_pixels_and_cache(tmp_path, monkeypatch):
    images = make_image_folder(tmp_path / "pics" / "set")
    cache = tmp_path / "cache"
    b = load_data(str(tmp_path / "pics"), cache_dir=cache)            # parent of the layout
    assert b.class_names == ["bird", "cat", "dog"] and b.num_classes == 3
    assert (len(b.train), len(b.test), b.input_shape) == (9, 6, (3, 6, 8))
    expected = np.stack([a for cls in b.class_names for a in images[("train", cls)]])
    assert np.array_equal(b.train.x.numpy(), expected)
    assert b.train.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and b.test.y.tolist() == [0, 0, 1, 1, 2, 2]
    assert len(list(cache.glob("imagefolder-*.npz"))) == 1

    def no_decoding(path):
        raise AssertionError("the second load should come from the cache")
    monkeypatch.setattr(image_layout, "_decode", no_decoding)
    again = load_data(str(tmp_path / "pics"), cache_dir=cache)
    assert torch.equal(again.train.x, b.train.x) and again.class_names == b.class_names
    monkeypatch.undo()

    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "pics" / "set" / "train" / "dog" / "new.png")
    assert len(load_data(str(tmp_path / "pics"), cache_dir=cache).train) == 10   # a changed folder is re-read


def test_image_folder_mixed_sizes_names_the_file(tmp_path):
    make_image_folder(tmp_path / "set")
    odd = tmp_path / "set" / "test" / "dog" / "zz_big.png"
    Image.fromarray(np.zeros((7, 8, 3), np.uint8)).save(odd)
    with pytest.raises(DataLayoutError, match="zz_big.png"):
        load_data(str(tmp_path / "set"), cache_dir=tmp_path / "cache")


def test_image_folder_grey_images(tmp_path):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / split / cls / "0.png")
    assert load_data(str(tmp_path), cache_dir=tmp_path / "c1").input_shape == (1, 8, 8)
    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(tmp_path / "train" / "a" / "1.jpg")
    b = load_data(str(tmp_path), cache_dir=tmp_path / "c2")      # one colour image: all become RGB
    assert b.input_shape == (3, 8, 8) and int(b.train.x[0, 2, 0, 0]) == 7


# ------------------------------------------------------------------------------------------------ archives
@pytest.mark.parametrize("kind", ["pickled", "images"])
def test_archives(tmp_path, kind, monkeypatch):
    src = tmp_path / "src"
    if kind == "pickled":
        make_cifar10(src / "cifar-10-batches-py")
        archive = make_tar(tmp_path / "cifar-10-python.tar.gz", src / "cifar-10-batches-py", "cifar-10-batches-py")
    else:
        make_image_folder(src / "pics")
        archive = make_tar(tmp_path / "pics.tgz", src / "pics", "pics")
    direct = load_data(str(src), cache_dir=tmp_path / "cache0")
    cache = tmp_path / "cache"
    b = load_data(str(archive), cache_dir=cache)
    assert b.name == str(archive)
    assert torch.equal(b.train.x, direct.train.x) and torch.equal(b.test.y, direct.test.y)
    assert (cache / archive.name.split(".")[0]).is_dir()                # unpacked into cache_dir/<stem>/
    monkeypatch.setattr(archives, "_extract", lambda *a: pytest.fail("the archive was unpacked twice"))
    assert torch.equal(load_data(str(archive), cache_dir=cache).train.x, b.train.x)


def _evil_tar(path: Path, name: str, kind=tarfile.REGTYPE) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("data/train/a/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        bad = tarfile.TarInfo(name)
        bad.type = kind
        if kind == tarfile.SYMTYPE:
            bad.linkname = "/etc/passwd"
        else:
            bad.size = 4
        tar.addfile(bad, io.BytesIO(b"evil") if kind == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize("name,kind", [("../evil", tarfile.REGTYPE), ("data/../../evil", tarfile.REGTYPE),
                                       ("/tmp/evil", tarfile.REGTYPE), ("data/link", tarfile.SYMTYPE)])
def test_unsafe_archive_is_rejected(tmp_path, name, kind):
    archive = _evil_tar(tmp_path / "bad.tar.gz", name, kind)
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(UnsafeArchiveError, match="refusing"):
        load_data(str(archive), cache_dir=cache)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "deep" / "evil").exists()
    assert not any(p.name != "cache" for p in (tmp_path / "deep").iterdir())
    assert [p.name for p in cache.iterdir() if p.suffix != ".lock"] == []   # the partial unpack was removed


def test_corrupt_archive(tmp_path):
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar at all")
    with pytest.raises(DataLayoutError, match="not a readable"):
        load_data(str(tmp_path / "broken.tar.gz"), cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------------------------------------ errors
def test_unrecognised_layout_lists_the_layouts(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "readme.txt").write_text("hello")
    for source in (tmp_path, tmp_path / "readme.txt", tmp_path / "missing"):
        with pytest.raises(DataLayoutError) as err:
            load_data(str(source), cache_dir=tmp_path / "cache")
        assert str(source) in str(err.value)
        for layout in LAYOUTS[:3]:
            assert layout in str(err.value)


def test_two_data_sets_under_one_parent_is_ambiguous(tmp_path):
    make_cifar10(tmp_path / "cifar-10-batches-py")
    make_image_folder(tmp_path / "pics")
    with pytest.raises(DataLayoutError, match="several"):
        load_data(str(tmp_path), cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------------------------------------ shipped subset
def test_shipped_subset(subset):
    assert subset.name == "cifar10-subset" and subset.num_classes == 10 and subset.input_shape == (3, 32, 32)
    assert (len(subset.train), len(subset.test)) == (5000, 1000)
    assert torch.bincount(subset.train.y).tolist() == [500] * 10
    assert torch.bincount(subset.test.y).tolist() == [100] * 10
    assert subset.class_names[:3] == ["airplane", "automobile", "bird"]
    assert all(0.4 < m < 0.55 for m in subset.train.mean) and all(0.2 < s < 0.3 for s in subset.train.std)
    assert SUBSET_PATH.stat().st_size < 10_000_000
    with np.load(SUBSET_PATH, allow_pickle=False) as z:
        assert z["offsets"][-1] == z["jpeg"].size


def test_array_dataset_item_and_subset(subset):
    x, label = subset.train[3]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and label == int(subset.train.y[3])
    mean, std = torch.tensor(subset.train.mean).view(3, 1, 1), torch.tensor(subset.train.std).view(3, 1, 1)
    assert torch.allclose(x, (subset.train.x[3].float() / 255 - mean) / std)
    assert torch.allclose(subset.train[-1][0], subset.train[len(subset.train) - 1][0])
    assert len(subset.train.subset(10)) == 10 and torch.equal(subset.train.subset(10).x, subset.train.x[:10])
    picked = subset.train.subset([5, 1])
    assert torch.equal(picked.y, subset.train.y[[5, 1]]) and picked.mean == subset.train.mean


def test_make_subset_selection_is_balanced_and_deterministic(tmp_path):
    spec = importlib.util.spec_from_file_location("make_subset", ROOT / "tools" / "make_subset.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    make_image_folder(tmp_path / "src" / "cifar10-jpeg", n_train=4, n_test=3)
    for p in (tmp_path / "src").rglob("*.png"):
        Image.open(p).convert("RGB").save(p.with_suffix(".jpg"))
    archive = make_tar(tmp_path / "c.tar.gz", tmp_path / "src" / "cifar10-jpeg", "cifar10-jpeg")
    blobs, labels, names, classes = tool.select(archive, {"train": 2, "test": 1})
    assert classes == ["bird", "cat", "dog"] and labels == [0, 0, 1, 1, 2, 2, 0, 1, 2]
    assert names[:2] == ["cifar10-jpeg/train/bird/000.jpg", "cifar10-jpeg/train/bird/001.jpg"]
    assert tool.select(archive, {"train": 2, "test": 1})[0] == blobs


@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason="../shared/data/cifar10-jpeg.tar.gz is not here")
def test_subset_holds_the_archives_images():
    with np.load(SUBSET_PATH, allow_pickle=False) as z:
        names, offsets, blob = list(z["names"]), z["offsets"], z["jpeg"]
    wanted = {names[i]: blob[offsets[i]:offsets[i + 1]].tobytes() for i in (5000, 5999)}   # first and last test
    with tarfile.open(SHARED_CIFAR, "r|gz") as tar:
        for m in tar:
            if m.name in wanted:
                assert tar.extractfile(m).read() == wanted.pop(m.name)
            if not wanted or "/train/" in m.name:
                break
    assert not wanted


# ------------------------------------------------------------------------------------------------ BatchLoader
def _toy(n: int = 50) -> ArrayDataset:
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return ArrayDataset(x, torch.arange(n), (0.0,), (1 / 255,))      # normalised x == the sample index


def _order(loader, start: int = 0) -> list[int]:
    return [int(v) for _, y in loader.iter_from(start) for v in y]


def test_loader_batches_and_length():
    loader = BatchLoader(_toy(50), 16)
    batches = list(loader)
    assert len(loader) == len(batches) == 4 and [len(y) for _, y in batches] == [16, 16, 16, 2]
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and torch.allclose(x[:, 0, 0, 0], y.float())
    assert _order(loader) == list(range(50))
    dropped = BatchLoader(_toy(50), 16, drop_last=True)
    assert len(dropped) == len(list(dropped)) == 3


def test_loader_shuffle_is_reproducible_per_seed_and_epoch():
    a, b = BatchLoader(_toy(), 8, shuffle=True, seed=3), BatchLoader(_toy(), 8, shuffle=True, seed=3)
    assert _order(a) == _order(b) and sorted(_order(a)) == list(range(50)) and _order(a) != list(range(50))
    first = _order(a)
    a.set_epoch(1)
    assert _order(a) != first and sorted(_order(a)) == list(range(50))
    a.set_epoch(0)
    assert _order(a) == first
    assert _order(BatchLoader(_toy(), 8, shuffle=True, seed=4)) != first


@pytest.mark.parametrize("n,drop_last", [(50, False), (51, False), (51, True), (3, False)])
def test_loader_shards_are_disjoint_and_cover(n, drop_last):
    ranks = [BatchLoader(_toy(n), 4, shuffle=True, seed=1, rank=r, world_size=2, drop_last=drop_last)
             for r in range(2)]
    for r in ranks:
        r.set_epoch(5)
    orders = [_order(r) for r in ranks]
    assert len(ranks[0]) == len(ranks[1]) == len(list(ranks[0]))
    assert len(orders[0]) == len(orders[1])
    if not drop_last:
        assert set(orders[0]) | set(orders[1]) == set(range(n))
        if n % 2 == 0:
            assert not set(orders[0]) & set(orders[1])
        else:   # the shorter shard is padded with one wrapped-around sample
            assert len(orders[0]) + len(orders[1]) == n + 1
    idx = [r.indices() for r in ranks]
    assert len(set(idx[0].tolist()) & set(idx[1].tolist())) == (len(idx[0]) * 2 - n)


def test_iter_from_equals_skipping():
    loader = BatchLoader(_toy(), 8, shuffle=True, augment=random_crop_flip(1), seed=2)
    loader.set_epoch(3)
    full = list(loader)
    for k in (0, 2, len(full)):
        tail = list(loader.iter_from(k))
        assert len(tail) == len(full) - k
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(tail, full[k:]))


def test_loader_on_float_signals():
    x = torch.randn(30, 2, 40) * 3 + 1
    bundle_train = ArrayDataset(x, torch.zeros(30, dtype=torch.long), (1.0, 1.0), (3.0, 3.0))
    loader = BatchLoader(bundle_train, 8, shuffle=True, augment=random_shift(4))
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(8, 2, 40)] * 3 + [(6, 2, 40)]
    assert batches[0][0].dtype == torch.float32


# ------------------------------------------------------------------------------------------------ augmentation
def _aug(fn, x, g):
    """Apply an augmentation to samples with class labels, which it must pass through unchanged."""
    y = torch.arange(len(x))
    out, y_out = fn(x, y, g)
    assert y_out is y
    return out


def test_crop_flip_shape_identity_and_flip():
    x = torch.rand(64, 3, 8, 10)
    g = torch.Generator().manual_seed(0)
    assert _aug(random_crop_flip(4), x, g).shape == x.shape
    assert torch.equal(_aug(random_crop_flip(0, flip=False), x, g), x)
    flipped = _aug(random_crop_flip(0, flip=True), x, g)
    same = [torch.equal(o, s) for o, s in zip(flipped, x)]
    mirrored = [torch.equal(o, s.flip(2)) for o, s in zip(flipped, x)]
    assert all(a or b for a, b in zip(same, mirrored)) and 10 < sum(mirrored) < 54


def test_crop_flip_takes_a_window_of_the_padded_image():
    p = 2
    x = torch.rand(16, 2, 5, 6)
    out = _aug(random_crop_flip(p), x, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    for o, src in zip(out, padded):
        windows = [w for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                   for w in (src[:, dy:dy + 5, dx:dx + 6], src[:, dy:dy + 5, dx:dx + 6].flip(2))]
        assert any(torch.equal(o, w) for w in windows)


def test_augmentation_is_driven_by_the_generator():
    x = torch.rand(8, 3, 8, 8)
    aug = random_crop_flip(2)
    a = _aug(aug, x, torch.Generator().manual_seed(5))
    assert torch.equal(a, _aug(aug, x, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, _aug(aug, x, torch.Generator().manual_seed(6)))


def test_random_shift():
    x = torch.rand(12, 2, 20)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(_aug(random_shift(0), x, g), x)
    out = _aug(random_shift(3), x, g)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (3, 3))
    for o, src in zip(out, padded):
        assert any(torch.equal(o, src[:, s:s + 20]) for s in range(7))


def test_concurrent_unpacks_of_a_changed_archive_all_succeed(tmp_path, monkeypatch):
    """Two benchmark runs started at once found a changed archive and both unpacked it; one deleted files under
    the other (FileNotFoundError in rmtree). Now they take turns and every caller gets the complete folder."""
    import os
    import threading
    import time

    make_image_folder(tmp_path / "src" / "pics")
    archive = make_tar(tmp_path / "pics.tgz", tmp_path / "src" / "pics", "pics")
    cache = tmp_path / "cache"
    first = archives.unpack(archive, cache)
    expected = sorted(p.relative_to(first) for p in first.rglob("*"))
    st = archive.stat()
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))     # the archive "changed": unpack again
    extract, calls = archives._extract, []

    def slow_extract(*args):
        calls.append(1)
        time.sleep(0.2)                                                # widen the window a race needs
        return extract(*args)

    monkeypatch.setattr(archives, "_extract", slow_extract)
    barrier, errors, results = threading.Barrier(4), [], []

    def worker():
        barrier.wait()
        try:
            results.append(archives.unpack(archive, cache))
        except Exception as exc:                                       # noqa: BLE001 (collected and asserted)
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 4 and len(calls) == 1
    assert sorted(p.relative_to(first) for p in first.rglob("*")) == expected
    assert not list(cache.glob(".*.tmp"))
