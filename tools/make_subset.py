"""Write lwdc/data/cifar10_subset.npz, the CIFAR-10 subset the package ships as its default data set.

Source: ../shared/data/cifar10-jpeg.tar.gz (CIFAR-10, Krizhevsky 2009, re-encoded as JPEG; see its README).
Selection: the first 500 train and 100 test images of every class by file name, so it is class-balanced and
deterministic. Storage: the original JPEG bytes concatenated in one uint8 array, cut by ``offsets`` (no
re-encoding, no pickle: it loads with ``np.load(..., allow_pickle=False)``), about 2 MB for 6,000 images.

Run from the repository root:  python tools/make_subset.py [path/to/cifar10-jpeg.tar.gz]
"""
from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
DEFAULT_OUT = ROOT / "lwdc" / "data" / "cifar10_subset.npz"
PER_CLASS = {"train": 500, "test": 100}
MAX_BYTES = 10_000_000


def select(archive: Path, per_class: dict[str, int]) -> tuple[list[bytes], list[int], list[str], list[str]]:
    """JPEG bytes, labels, member names (train first, then test) and the sorted class names."""
    with tarfile.open(archive) as tar:
        members: dict[tuple[str, str], list[tarfile.TarInfo]] = {}
        for m in tar.getmembers():
            parts = Path(m.name).parts                      # cifar10-jpeg/<split>/<class>/<file>.jpg
            if m.isfile() and len(parts) == 4 and parts[1] in per_class and parts[3].lower().endswith(".jpg"):
                members.setdefault((parts[1], parts[2]), []).append(m)
        classes = sorted({cls for _, cls in members})
        blobs, labels, names = [], [], []
        for split, n in per_class.items():
            for label, cls in enumerate(classes):
                chosen = sorted(members.get((split, cls), []), key=lambda m: m.name)[:n]
                if len(chosen) < n:
                    raise SystemExit(f"{archive}: {split}/{cls} has {len(chosen)} images, {n} needed")
                for m in chosen:
                    blobs.append(tar.extractfile(m).read())
                    labels.append(label)
                    names.append(m.name)
    return blobs, labels, names, classes


def check(blobs: list[bytes]) -> None:
    """Every blob decodes to a 32x32 RGB image (fail here, not in a user's first load)."""
    from PIL import Image

    for i, b in enumerate(blobs):
        with Image.open(io.BytesIO(b)) as im:
            if im.size != (32, 32):
                raise SystemExit(f"image {i} is {im.size}, expected 32x32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", nargs="?", default=str(DEFAULT_SOURCE))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    blobs, labels, names, classes = select(Path(args.source), PER_CLASS)
    check(blobs)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    out = Path(args.out)
    np.savez_compressed(out, jpeg=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=offsets,
                        labels=np.array(labels, dtype=np.int64), classes=np.array(classes), names=np.array(names),
                        n_train=np.int64(PER_CLASS["train"] * len(classes)))
    size = out.stat().st_size
    print(f"{out}: {len(blobs)} images ({PER_CLASS} per class, {len(classes)} classes), {size / 1e6:.2f} MB")
    if size > MAX_BYTES:
        raise SystemExit(f"{out} is {size / 1e6:.1f} MB, over the {MAX_BYTES / 1e6:.0f} MB limit")


if __name__ == "__main__":
    main()
