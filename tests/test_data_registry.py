"""Task-generic data (issue 22): targets of any shape or a dict of them, augmentations that see the targets,
and the registries of data sets and layouts with the defaults each bundle carries.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from lwdc.data import (AUTO, ArrayDataset, BatchLoader, DataBundle, DataLayoutError, as_augment, default_augment,
                       describe_layouts, list_datasets, list_layouts, load_data, make_bundle, random_crop_flip,
                       random_shift, register_dataset, register_layout)
from lwdc.data import registry


@pytest.fixture(autouse=True)
def scratch_registries(monkeypatch):
    """Registrations made by a test vanish after it (the built-in entries stay)."""
    monkeypatch.setattr(registry, "_DATASETS", dict(registry._DATASETS))
    monkeypatch.setattr(registry, "_LAYOUTS", dict(registry._LAYOUTS))


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]


def landmarks(n: int = 10, k: int = 3, size: int = 8, seed: int = 0):
    """Images with one bright pixel per landmark, the landmark coordinates (x, y) and a visibility mask."""
    g = torch.Generator().manual_seed(seed)
    points = torch.randint(0, size, (n, k, 2), generator=g)
    x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    for i in range(n):
        for px, py in points[i].tolist():
            x[i, 0, py, px] = 255
    return x, {"points": points.float(), "visible": torch.rand(n, k, generator=g) < 0.8}


# ------------------------------------------------------------------------------------------------ unchanged RNG use
def test_builtin_augmentations_consume_the_generator_as_before():
    """Digests recorded with the (x, generator) -> x versions: the recorded digest of a training run relies on
    the same calls in the same order, hence the same pixels and the same generator state afterwards."""
    x = torch.rand(32, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(32)
    g = torch.Generator().manual_seed(7)
    a, ya = random_crop_flip(4)(x, labels, g)
    b, _ = random_crop_flip(2, flip=False)(x, labels, g)
    assert (_digest(a), _digest(b), _digest(torch.rand(3, generator=g))) == (
        "c6a4c34751750360", "413cfbec3dad5f04", "f4c9f7105aee85f3")
    assert ya is labels
    s = torch.rand(16, 2, 30, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(8)
    shifted, _ = random_shift(5)(s, labels[:16], g)
    assert (_digest(shifted), _digest(torch.rand(3, generator=g))) == ("7fa41ec7fb13ad30", "c66784b7b2699460")


def test_loader_batches_are_unchanged():
    x = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    data = ArrayDataset(x, torch.arange(40) % 10, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    loader = BatchLoader(data, 16, shuffle=True, augment=random_crop_flip(4), seed=3)
    loader.set_epoch(2)
    xs, ys = zip(*loader)
    assert (_digest(torch.cat(xs)), _digest(torch.cat(ys))) == ("dbfa76809edbf297", "2fb1ff2455145be9")


# ------------------------------------------------------------------------------------------------ ArrayDataset
def test_label_vectors_behave_as_before():
    data = ArrayDataset(torch.zeros(5, 1, 4, 4, dtype=torch.uint8), torch.arange(5, dtype=torch.int32), (0.0,), (1.0,))
    assert data.y.dtype == torch.int64 and data.has_labels
    x, label = data[2]
    assert isinstance(label, int) and label == 2 and x.shape == (1, 4, 4)
    assert torch.equal(data.subset([4, 0]).y, torch.tensor([4, 0]))


def test_dict_targets_index_subset_and_batch():
    x, y = landmarks(10)
    data = ArrayDataset(x, y, (0.0,), (1.0,))
    assert len(data) == 10 and not data.has_labels
    assert data.y["points"].dtype == torch.float32 and data.y["visible"].dtype == torch.bool
    _, target = data[3]
    assert torch.equal(target["points"], y["points"][3]) and torch.equal(target["visible"], y["visible"][3])
    part = data.subset(torch.tensor([7, 2]))
    assert torch.equal(part.y["points"], y["points"][[7, 2]]) and torch.equal(part.x, x[[7, 2]])
    loader = BatchLoader(data, 4, shuffle=True, seed=1)
    seen = []
    for xb, yb in loader:
        assert set(yb) == {"points", "visible"} and yb["points"].shape == (len(xb), 3, 2)
        for img, pts in zip(xb, yb["points"]):        # each image still has its own bright landmarks
            assert all(img[0, int(py), int(px)] > 0 for px, py in pts.tolist())
        seen += yb["points"][:, 0, 0].tolist()
    assert sorted(seen) == sorted(y["points"][:, 0, 0].tolist())


def test_float_tensor_targets_keep_their_dtype_and_shape_errors_are_clear():
    data = ArrayDataset(torch.randn(6, 2, 16), torch.randn(6, 4, 2), (0.0, 0.0), (1.0, 1.0))
    assert data.y.dtype == torch.float32 and data[1][1].shape == (4, 2)
    with pytest.raises(ValueError, match="every target"):
        ArrayDataset(torch.randn(6, 2, 16), {"points": torch.randn(5, 4, 2)}, (0.0, 0.0), (1.0, 1.0))


# ------------------------------------------------------------------------------------------------ augment protocol
def hflip_with_points(x, y, generator):
    """A point-moving augmentation: mirror a random half of the images and their points' x coordinates."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    points = y["points"].clone()
    points[flip, :, 0] = (x.shape[3] - 1) - points[flip, :, 0]
    return x, {**y, "points": points}


def test_an_augmentation_can_move_points_with_pixels():
    x, y = landmarks(12, size=9)
    loader = BatchLoader(ArrayDataset(x, y, (0.0,), (1 / 255,)), 12, augment=hflip_with_points, seed=4)
    (xb, yb), = list(loader)
    assert not torch.equal(yb["points"], y["points"])                # some were flipped ...
    for img, pts in zip(xb, yb["points"]):                          # ... and the points moved with the pixels
        assert all(img[0, int(py), int(px)] > 127 for px, py in pts.tolist())


def test_pixel_only_augmentations_refuse_spatial_targets_and_pass_scalars():
    x, y = landmarks(4)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="moves pixels but not targets"):
        random_crop_flip(1)(x.float(), y, g)
    with pytest.raises(ValueError, match="moves pixels but not targets"):
        random_shift(1)(torch.rand(4, 1, 8), torch.zeros(4, 8), g)
    scalars = {"label": torch.arange(4), "weight": torch.ones(4)}
    assert random_crop_flip(1)(x.float(), scalars, g)[1] is scalars


def test_old_style_augmentations_are_wrapped_with_a_deprecation_warning():
    def old(x, generator):
        return x + torch.rand(1, generator=generator)

    with pytest.warns(DeprecationWarning, match="x, y, generator"):
        loader = BatchLoader(ArrayDataset(torch.zeros(4, 1, 2, 2), torch.arange(4), (0.0,), (1.0,)), 4, augment=old)
    (xb, yb), = list(loader)
    assert torch.equal(yb, torch.arange(4)) and float(xb.std()) == 0 and float(xb.mean()) > 0
    with pytest.warns(DeprecationWarning):
        wrapped = as_augment(old)
    with pytest.raises(ValueError, match="moves pixels but not targets"):
        wrapped(torch.zeros(2, 1, 2, 2), torch.zeros(2, 3, 2), torch.Generator())
    assert as_augment(hflip_with_points) is hflip_with_points and as_augment(None) is None


# ------------------------------------------------------------------------------------------------ bundles
def test_bundle_defaults_follow_dimensionality_and_task():
    images = ArrayDataset(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), (0.0,) * 3,
                          (1.0,) * 3)
    bundle = DataBundle(images, images, 2)
    assert bundle.task == "classification" and bundle.augment is not None
    x = torch.rand(6, 3, 8, 8)
    got, _ = bundle.augment(x, torch.arange(6), torch.Generator().manual_seed(1))
    want, _ = random_crop_flip(4)(x, torch.arange(6), torch.Generator().manual_seed(1))
    assert torch.equal(got, want)
    signals = ArrayDataset(torch.randn(4, 2, 50), torch.tensor([0, 1, 0, 1]), (0.0,) * 2, (1.0,) * 2)
    assert DataBundle(signals, signals, 2).augment is None
    assert DataBundle(images, images, None, task="landmarks").augment is None
    assert DataBundle(images, images, 2, augment=None).augment is None
    assert default_augment((1, 100)) is None and default_augment((3, 8, 8), "landmarks") is None
    subset = load_data("cifar10-subset")
    assert subset.task == "classification" and subset.augment is not None and subset.num_classes == 10


def test_make_bundle_for_regression_targets():
    x, y = landmarks(8)
    b = make_bundle("marks", x[:6], {k: v[:6].numpy() for k, v in y.items()}, x[6:], {k: v[6:] for k, v in y.items()},
                    None, task="landmarks")
    assert (b.num_classes, b.class_names, b.task, b.augment) == (None, [], "landmarks", None)
    assert torch.equal(b.test.y["points"], y["points"][6:]) and b.train.y["visible"].dtype == torch.bool


# ------------------------------------------------------------------------------------------------ registries
def test_builtin_entries_are_registered():
    assert {"cifar10-subset", "cifar10", "cifar100", "fsdd"} <= set(list_datasets())
    assert list_layouts()[:5] == ["cifar10-pickled", "cifar100-pickled", "imagefolder", "fsdd", "p300-epochs"]


def test_register_dataset_is_one_entry(tmp_path):
    x, y = landmarks(8)

    @register_dataset("toy-landmarks", task="landmarks", augment=hflip_with_points)
    def toy(cache_dir: Path, download: bool):
        assert cache_dir == tmp_path and download is False
        return x[:6], {k: v[:6] for k, v in y.items()}, x[6:], {k: v[6:] for k, v in y.items()}, None

    assert "toy-landmarks" in list_datasets()
    b = load_data("toy-landmarks", cache_dir=tmp_path)
    assert (b.name, b.task, b.num_classes, b.augment) == ("toy-landmarks", "landmarks", None, hflip_with_points)
    assert b.input_shape == (1, 8, 8) and b.train.y["points"].shape == (6, 3, 2)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("toy-landmarks", toy)
    register_dataset("toy-landmarks", lambda c, d: (x, y, x, y, None), task="landmarks", overwrite=True)
    assert len(load_data("toy-landmarks", cache_dir=tmp_path).train) == 8
    with pytest.raises(DataLayoutError, match="toy-landmarks"):     # the error lists the registered names
        load_data("no-such-set", cache_dir=tmp_path)


def test_register_layout_is_one_entry(tmp_path):
    """A new layout: ``signals.npz`` with 1-D train/test signals; found under a parent folder, like the others."""
    def detect(folder: Path) -> bool:
        return (folder / "signals.npz").is_file()

    def read(folder: Path, cache_dir: Path):
        with np.load(folder / "signals.npz") as z:
            return z["xtr"], z["ytr"], z["xte"], z["yte"], ["low", "high"]

    with pytest.raises(DataLayoutError) as err:
        load_data(str(tmp_path), cache_dir=tmp_path / "cache")
    assert "signals.npz" not in str(err.value)
    register_layout("signals", detect, read, description="a folder with signals.npz (1-D signals)")
    rng = np.random.default_rng(0)
    (tmp_path / "eeg").mkdir()
    np.savez(tmp_path / "eeg" / "signals.npz", xtr=rng.standard_normal((10, 2, 64)).astype(np.float32),
             ytr=rng.integers(0, 2, 10), xte=rng.standard_normal((4, 2, 64)).astype(np.float32), yte=[0, 1, 1, 0])
    b = load_data(str(tmp_path), cache_dir=tmp_path / "cache")
    assert (b.input_shape, b.num_classes, b.task, b.augment) == ((2, 64), 2, "classification", None)
    assert b.train.x.dtype == torch.float32 and b.test.y.tolist() == [0, 1, 1, 0]
    assert "a folder with signals.npz (1-D signals)" in describe_layouts()
    assert list_layouts()[-1] == "signals" and AUTO is not None
