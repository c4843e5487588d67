"""Landmark data (issue 17): the CSV and DeepLabCut layouts, resizing with the points carried, augmentations
that move points with pixels, named errors for bad input with nothing written, k folds, pose balancing.
Synthetic sets are made here; the shipped DeepLabCut archive is used only where ../shared has it."""
from __future__ import annotations

import csv
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lwdc.data import (BatchLoader, DataLayoutError, LandmarkDataError, MissingColumnsError, PointCountMismatchError,
                       PointOutsideImageError, UnreadableImageError, balance_indices, kfold_indices,
                       landmark_augment, load_data)
from lwdc.data.landmark_augment import warp, warp_matrices
from lwdc.data.poses import procrustes_align

PARTS = ("left_eye", "right_eye", "nose")
SHIPPED = Path(__file__).resolve().parents[2] / "shared" / "data" / "landmarks_dlc.tar.gz"


def make_landmark_set(folder: Path, n: int = 8, size=(40, 30), parts=PARTS, seed: int = 0,
                      hidden=((1, 2),)) -> np.ndarray:
    """``landmarks.csv`` + ``images/``: dark RGB images with each visible point a white 3x3 square centred on it
    (integer pixel coordinates); ``hidden`` (image, point) pairs are left empty. Returns the points (NaN hidden)."""
    rng = np.random.default_rng(seed)
    w, h = size
    (folder / "images").mkdir(parents=True)
    points = rng.integers(2, [w - 2, h - 2], (n, len(parts), 2)).astype(np.float64)
    for i, p in hidden:
        points[i, p] = np.nan
    with open(folder / "landmarks.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["image", "width", "height"] + [f"{p}_{c}" for p in parts for c in "xy"])
        for i in range(n):
            a = np.full((h, w, 3), 20, np.uint8)
            for x, y in points[i][np.isfinite(points[i]).all(1)].astype(int):
                a[y - 1:y + 2, x - 1:x + 2] = 255
            Image.fromarray(a).save(folder / "images" / f"f{i:02d}.png")
            out.writerow([f"f{i:02d}.png", w, h] + ["" if np.isnan(v) else f"{v:g}" for v in points[i].ravel()])
    return points


def write_dlc_csv(folder: Path, points: np.ndarray, parts=PARTS, index_columns: int = 3) -> None:
    """DeepLabCut's CollectedData_<scorer>.csv for images f00.png... in ``folder`` (3 index columns: DeepLabCut
    2.2 and later; 1: older versions' single path column)."""
    pad = [""] * (index_columns - 1)
    rows = [["scorer", *pad] + ["Me"] * 2 * len(parts),
            ["bodyparts", *pad] + [p for p in parts for _ in "xy"],
            ["coords", *pad] + ["x", "y"] * len(parts)]
    for i, pts in enumerate(points):
        name = f"f{i:02d}.png"
        where = ["labeled-data", "video1", name] if index_columns == 3 else [f"labeled-data/video1/{name}"]
        rows.append(where + ["" if np.isnan(v) else f"{v:g}" for v in pts.ravel()])
    with open(folder / "CollectedData_Me.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def _load(path, tmp_path, **options):
    return load_data(str(path), cache_dir=tmp_path / "cache", options={"folds": 2, **options})


# ------------------------------------------------------------------------------------------------ reading
def test_csv_folder_gives_normalised_points_sizes_and_targets(tmp_path):
    points = make_landmark_set(tmp_path / "set", n=8, size=(40, 30))
    data = _load(tmp_path / "set", tmp_path, size=20)
    assert data.task == "landmarks" and data.num_classes is None and data.input_shape == (3, 20, 20)
    assert data.info["points"] == list(PARTS) and data.info["flip_pairs"] == [["left_eye", "right_eye"]]
    train_files = data.info["files"]["train"]
    y = data.train.y
    for j, name in enumerate(train_files):
        i = int(name[-6:-4])
        want = (points[i] + 0.5) / np.array([40, 30])
        np.testing.assert_allclose(y["points"][j].numpy(), want, rtol=1e-6)     # NaN where hidden, too
    assert y["size"].tolist() == [[40.0, 30.0]] * len(train_files)
    assert y["mirror"][0].tolist() == [1, 0, 2]                       # left_eye <-> right_eye, nose stays
    assert len(data.train) + len(data.test) == 8 and data.info["invisible"] == 1
    # the normaliser of a set lwdc does not know: the visible points' bounding-box diagonal, in original pixels
    i = int(train_files[0][-6:-4])
    vis = points[i][np.isfinite(points[i]).all(1)]
    assert float(y["norm"][0]) == pytest.approx(math.hypot(*(vis.max(0) - vis.min(0))), rel=1e-5)


def test_resizing_carries_the_points_with_the_pixels(tmp_path):
    make_landmark_set(tmp_path / "set", n=4, size=(60, 45), parts=("spot",), hidden=())
    data = _load(tmp_path / "set", tmp_path, size="30x15")          # width x height, another aspect ratio
    x, y = data.train.x.float(), data.train.y["points"]
    assert x.shape[2:] == (15, 30)
    for img, pt in zip(x, y):                                        # brightest pixel centre = the point
        row, col = divmod(int(img[0].argmax()), 30)
        assert abs((col + 0.5) / 30 - float(pt[0, 0])) <= 1 / 30 and abs((row + 0.5) / 15 - float(pt[0, 1])) <= 1 / 15


def test_deeplabcut_csv_layouts_read_the_same_points(tmp_path):
    points = make_landmark_set(tmp_path / "ours", n=6)
    want = _load(tmp_path / "ours", tmp_path / "a", seed=3).train.y["points"]
    for index_columns in (3, 1):
        video = tmp_path / f"dlc{index_columns}" / "labeled-data" / "video1"
        video.mkdir(parents=True)
        for p in (tmp_path / "ours" / "images").iterdir():
            (video / p.name).write_bytes(p.read_bytes())
        write_dlc_csv(video, points, index_columns=index_columns)
        got = _load(tmp_path / f"dlc{index_columns}", tmp_path / f"c{index_columns}", seed=3)
        torch.testing.assert_close(got.train.y["points"], want, equal_nan=True)
        assert got.info["points"] == list(PARTS) and got.info["sets"] == ["video1"]


def test_deeplabcut_header_without_a_partner_is_refused(tmp_path):
    video = tmp_path / "labeled-data" / "video1"
    video.mkdir(parents=True)
    points = make_landmark_set(tmp_path / "ours", n=4)
    write_dlc_csv(video, points)
    with open(video / "CollectedData_Me.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    rows[2][-1] = "likelihood"                             # nose: x, then no y
    with open(video / "CollectedData_Me.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(PointCountMismatchError, match="must pair x, y for each bodypart; column 8 .nose x."):
        _load(tmp_path / "labeled-data", tmp_path)
    assert not (tmp_path / "cache").exists()


def test_a_collection_picks_a_subset_or_merges_sets_with_the_same_points(tmp_path):
    make_landmark_set(tmp_path / "sets" / "a", n=4)
    make_landmark_set(tmp_path / "sets" / "b", n=5, seed=1)
    merged = _load(tmp_path / "sets", tmp_path)
    assert len(merged.train) + len(merged.test) == 9 and merged.info["sets"] == ["a", "b"]
    assert len(_load(tmp_path / "sets", tmp_path, subset="b").test) in (2, 3)
    make_landmark_set(tmp_path / "sets" / "c", n=4, parts=("snout", "tail"), hidden=())
    with pytest.raises(LandmarkDataError, match=r"different points.*subset=NAME"):
        _load(tmp_path / "sets", tmp_path)
    assert _load(tmp_path / "sets", tmp_path, subset="c").info["points"] == ["snout", "tail"]
    with pytest.raises(LandmarkDataError, match="no landmark set 'd'; sets: a, b, c"):
        _load(tmp_path / "sets", tmp_path, subset="d")


def test_a_tar_gz_archive_of_a_collection(tmp_path):
    make_landmark_set(tmp_path / "dlc" / "one", n=4)
    with tarfile.open(tmp_path / "dlc.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "dlc", arcname="dlc")
    data = _load(tmp_path / "dlc.tar.gz", tmp_path)
    assert len(data.train) + len(data.test) == 4


def test_kfold_splits_are_seeded_disjoint_and_covering():
    folds = kfold_indices(23, 5, seed=7)
    assert sorted(np.concatenate(folds).tolist()) == list(range(23))
    assert sorted(len(f) for f in folds) == [4, 4, 5, 5, 5]
    assert all(not set(a) & set(b) for i, a in enumerate(folds) for b in folds[i + 1:])
    assert [f.tolist() for f in kfold_indices(23, 5, seed=7)] == [f.tolist() for f in folds]
    assert [f.tolist() for f in kfold_indices(23, 5, seed=8)] != [f.tolist() for f in folds]
    with pytest.raises(ValueError, match="folds must be 2..3"):
        kfold_indices(3, 4)


def test_reader_folds_hold_every_sample_once_as_test(tmp_path):
    make_landmark_set(tmp_path / "set", n=9)
    tests = [_load(tmp_path / "set", tmp_path, folds=3, fold=k).info["files"]["test"] for k in range(3)]
    assert sorted(sum(tests, [])) == sorted(f"set/f{i:02d}.png" for i in range(9))
    train = _load(tmp_path / "set", tmp_path, folds=3, fold=1).info["files"]["train"]
    assert not set(train) & set(tests[1]) and len(train) == 6


# ------------------------------------------------------------------------------------------------ bad input
def _csv(folder: Path) -> list[list[str]]:
    with open(folder / "landmarks.csv", newline="") as fh:
        return list(csv.reader(fh))


def _write(folder: Path, rows) -> None:
    with open(folder / "landmarks.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def _drop_column(rows, name):
    i = rows[0].index(name)
    return [r[:i] + r[i + 1:] for r in rows]


def _spoil(kind: str, folder: Path) -> None:
    rows = _csv(folder)
    if kind == "missing column":
        _write(folder, _drop_column(rows, "height"))
    elif kind == "outside":
        rows[3][rows[0].index("nose_x")] = "40.2"             # width 40: x may reach 39.5
        _write(folder, rows)
    elif kind == "broken image":
        (folder / "images" / "f04.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif kind == "missing image":
        (folder / "images" / "f04.png").unlink()
    elif kind == "x without y":
        _write(folder, _drop_column(rows, "nose_y"))
    elif kind == "short row":
        rows[5] = rows[5][:-1]
        _write(folder, rows)
    elif kind == "half a point":
        rows[3][rows[0].index("nose_y")] = ""
        _write(folder, rows)
    elif kind == "wrong size":
        rows[2][rows[0].index("width")] = "41"
        _write(folder, rows)


@pytest.mark.parametrize("kind, error, message", [
    ("missing column", MissingColumnsError, "lacks column.*height"),
    ("outside", PointOutsideImageError, r"f02.png: point nose at \(40.2, .*outside its 40x30 image"),
    ("broken image", UnreadableImageError, "f04.png: cannot decode image"),
    ("missing image", UnreadableImageError, "f04.png: no such image file"),
    ("x without y", PointCountMismatchError, "nose_y missing"),
    ("short row", PointCountMismatchError, "row 6: 8 cells, the header has 9"),
    ("half a point", PointCountMismatchError, "row 4: point nose has x but no y"),
    ("wrong size", UnreadableImageError, "is 40x30 pixels but the CSV says 41x30"),
])
def test_bad_input_gets_a_named_error_and_nothing_is_written(tmp_path, kind, error, message):
    make_landmark_set(tmp_path / "set", n=8)
    _spoil(kind, tmp_path / "set")
    with pytest.raises(error, match=message):
        _load(tmp_path / "set", tmp_path)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    assert issubclass(error, DataLayoutError)                       # the CLI turns these into one-line errors


def test_image_names_cannot_leave_the_set_folder(tmp_path):
    make_landmark_set(tmp_path / "set", n=4)
    Image.new("RGB", (40, 30)).save(tmp_path / "secret.png")
    rows = _csv(tmp_path / "set")
    for name in ("../../secret.png", "/etc/passwd", "images/../../secret.png"):
        rows[1][0] = name
        _write(tmp_path / "set", rows)
        with pytest.raises(LandmarkDataError, match="must be a file name inside"):
            _load(tmp_path / "set", tmp_path)


# ------------------------------------------------------------------------------------------------ augmentation
def _spot(w=8, h=8, col=5, row=1):
    x = torch.zeros(1, 1, h, w)
    x[0, 0, row, col] = 1.0
    return x, {"points": torch.tensor([[[(col + 0.5) / w, (row + 0.5) / h], [0.3, 0.3]]]),
               "mirror": torch.tensor([[1, 0]])}


def test_a_90_degree_rotation_moves_pixel_and_point_where_the_geometry_says():
    """Centred pixel coordinates (1.5, -2.5) of pixel (col 5, row 1) in an 8x8 image turn (clockwise on screen,
    y down) to (2.5, 1.5): pixel (col 6, row 5)."""
    x, y = _spot()
    m = warp_matrices(torch.tensor([90.0]), torch.tensor([1.0]), torch.zeros(1, 2), torch.tensor([False]))
    out, moved = warp(x, y, m)
    assert out[0, 0, 5, 6] == pytest.approx(1.0, abs=1e-5) and float(out.sum()) == pytest.approx(1.0, abs=1e-4)
    assert moved["points"][0, 0].tolist() == pytest.approx([6.5 / 8, 5.5 / 8])


def test_a_flip_mirrors_the_point_and_swaps_declared_pairs():
    x, y = _spot()
    m = warp_matrices(torch.zeros(1), torch.ones(1), torch.zeros(1, 2), torch.tensor([True]))
    out, moved = warp(x, y, m, torch.tensor([True]))
    assert out[0, 0, 1, 2] == pytest.approx(1.0, abs=1e-5)              # column 5 -> 8 - 1 - 5
    # point 0 (u 5.5/8) mirrors to u 2.5/8 and, being point 1's partner, is now labelled point 1
    assert moved["points"][0, 1].tolist() == pytest.approx([2.5 / 8, 1.5 / 8])
    assert moved["points"][0, 0].tolist() == pytest.approx([0.7, 0.3])
    _, unpaired = warp(x, {"points": y["points"]}, m, torch.tensor([True]))   # without a mirror: no swap
    assert unpaired["points"][0, 0].tolist() == pytest.approx([2.5 / 8, 1.5 / 8])


def test_shift_and_scale_and_points_leaving_the_frame():
    x, y = _spot(col=6, row=4)
    m = warp_matrices(torch.zeros(1), torch.tensor([2.0]), torch.tensor([[1.0, 0.0]]), torch.tensor([False]))
    _, moved = warp(x, y, m)
    # centred (2.5, 0.5) doubled and shifted one pixel right: (6, 1), outside the 8-pixel-wide image -> invisible
    assert torch.isnan(moved["points"][0, 0]).all()
    assert moved["points"][0, 1].tolist() == pytest.approx([((0.3 - 0.5) * 8 * 2 + 1) / 8 + 0.5, 0.1])


def test_random_augmentation_keeps_every_point_on_its_pixels():
    """Random flips, rotations, scales and shifts: the centre of mass of each single-spot image is where its point
    went; colour jitter (drawn after the geometry) changes pixels and moves no point."""
    torch.manual_seed(0)
    n, size = 24, 32
    x = torch.zeros(n, 3, size, size)
    rows, cols = torch.randint(10, 22, (n,)), torch.randint(10, 22, (n,))
    for i in range(n):
        x[i, :, rows[i] - 1:rows[i] + 2, cols[i] - 1:cols[i] + 2] = 1.0
    points = torch.stack([(cols + 0.5) / size, (rows + 0.5) / size], -1).unsqueeze(1).float()
    y = {"points": points, "mirror": torch.zeros(n, 1, dtype=torch.long)}
    geometry = landmark_augment(flip=0.5, rotate=30, scale=0.15, shift=0.1, colour=0)
    out, moved = geometry(x, y, torch.Generator().manual_seed(3))
    centre = torch.arange(size) + 0.5
    mass = out[:, 0]
    cx = (mass.sum(1) * centre).sum(1) / mass.sum((1, 2))
    cy = (mass.sum(2) * centre).sum(1) / mass.sum((1, 2))
    torch.testing.assert_close(torch.stack([cx, cy], 1), moved["points"][:, 0] * size, atol=0.05, rtol=0)
    assert (moved["points"] != points).any(-1).all()                  # every sample was moved
    coloured, moved_c = landmark_augment(flip=0.5, rotate=30, scale=0.15, shift=0.1, colour=0.3)(
        x, y, torch.Generator().manual_seed(3))
    assert torch.equal(moved_c["points"], moved["points"]) and not torch.equal(coloured, out)
    assert coloured.min() >= 0 and coloured.max() <= 1
    again, _ = geometry(x, y, torch.Generator().manual_seed(3))
    assert torch.equal(again, out)                                   # the generator alone decides


def test_loader_applies_the_data_sets_augmentation_to_points(tmp_path):
    make_landmark_set(tmp_path / "set", n=8)
    data = _load(tmp_path / "set", tmp_path, size=32)
    loader = BatchLoader(data.train, 4, shuffle=True, augment=data.augment, seed=1)
    xb, yb = next(iter(loader))
    assert set(yb) == {"points", "size", "norm", "mirror"} and yb["points"].shape == (4, 3, 2)
    assert not torch.equal(yb["points"].nan_to_num(), data.train.y["points"][loader.indices()[:4]].nan_to_num())


# ------------------------------------------------------------------------------------------------ pose balancing
def _mouse(head_turn: float) -> np.ndarray:
    """Four points (snout, two ears, tail base) of a mouse whose head is turned by ``head_turn`` radians."""
    head = np.array([[0.0, 1.0], [-0.3, 0.7], [0.3, 0.7]])
    c, s = math.cos(head_turn), math.sin(head_turn)
    return np.vstack([(head - [0, 0.6]) @ np.array([[c, -s], [s, c]]).T + [0, 0.6], [[0.0, -1.5]]])


def test_procrustes_removes_position_rotation_and_scale():
    base = _mouse(0.4)
    a = 1.1
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    moved = 3.0 * base @ rot.T + [50.0, -20.0]
    aligned, _ = procrustes_align(np.stack([base, moved, _mouse(0.0)]))
    np.testing.assert_allclose(aligned[0], aligned[1], atol=1e-8)
    hidden = moved.copy()
    hidden[3] = np.nan                                                 # an invisible point: aligned on the others
    aligned2, _ = procrustes_align(np.stack([base, hidden, _mouse(0.0)]))
    assert np.isnan(aligned2[1, 3]).all() and np.abs(aligned2[1, :3] - aligned2[0, :3]).max() < 0.05


def test_pose_balancing_samples_rare_poses_more():
    rng = np.random.default_rng(0)
    turns = np.r_[rng.normal(0.0, 0.05, 45), rng.normal(0.9, 0.05, 5)]   # 45 straight, 5 with the head turned
    shapes = []
    for t in turns:                                                     # each at its own place, angle and size
        a = rng.uniform(-math.pi, math.pi)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        shapes.append(rng.uniform(20, 40) * _mouse(t) @ rot.T + rng.uniform(0, 500, 2))
    shapes = np.stack(shapes)
    shapes[3, 1] = np.nan
    idx = balance_indices(shapes, bins=3, seed=0)
    counts = np.bincount(idx, minlength=50)
    turned = counts[45:]
    assert turned.min() > counts[:45].max()                             # each rare pose repeated more
    assert turned.sum() / len(idx) > 0.25 > 5 / 50                      # their share went from 10% to over 25%
    assert (counts >= 1).all()                                          # nothing dropped
    assert balance_indices(shapes, bins=3, seed=0).tolist() == idx.tolist()
    assert balance_indices(shapes, bins=1).tolist() == list(range(50))  # one bin: nothing to balance


def test_balance_option_oversamples_the_training_split_only(tmp_path):
    make_landmark_set(tmp_path / "set", n=12, hidden=())
    plain = _load(tmp_path / "set", tmp_path)
    balanced = _load(tmp_path / "set", tmp_path, balance="pose", bins=3)
    assert len(balanced.test) == len(plain.test) and len(balanced.train) >= len(plain.train)
    assert set(balanced.info["files"]["train"]) == set(plain.info["files"]["train"])
    assert balanced.info["balance"] == {"mode": "pose", "bins": 3, "train_before": 6,
                                        "train_after": len(balanced.train)}
    with pytest.raises(LandmarkDataError, match="balance must be none or pose"):
        _load(tmp_path / "set", tmp_path, balance="yes")


# ------------------------------------------------------------------------------------------------ the shipped set
@pytest.mark.skipif(not SHIPPED.is_file(), reason="../shared/data/landmarks_dlc.tar.gz is not on this machine")
def test_shipped_deeplabcut_sets(tmp_path):
    field = load_data(str(SHIPPED), cache_dir=tmp_path, options={"subset": "openfield"})
    assert len(field.train) + len(field.test) == 116 and field.train.y["points"].shape[1:] == (4, 2)
    assert field.info["points"] == ["snout", "leftear", "rightear", "tailbase"]
    assert field.info["normalizer"].startswith("body length") and field.info["flip_pairs"] == [["leftear", "rightear"]]
    assert field.info["image_sizes"] == [(640, 480)] and len(field.test) in (23, 24)
    reach = load_data(str(SHIPPED), cache_dir=tmp_path, options={"subset": "reaching"})
    assert len(reach.train) + len(reach.test) == 55 and reach.info["invisible"] == 42
    assert reach.info["normalizer"] == "image diagonal"
    assert float(reach.test.y["norm"][0]) == pytest.approx(math.hypot(832, 747), rel=1e-5)
    with pytest.raises(LandmarkDataError, match="different points"):
        load_data(str(SHIPPED), cache_dir=tmp_path)
