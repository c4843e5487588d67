"""Write lwdc/data/cifar10_subset.npz, the CIFAR-10 subset the package ships as its default data.

Source: ../shared/data/cifar10-jpeg.tar.gz (CIFAR-10, Krizhevsky 2009, re-encoded as JPEG). The first 500 train
and 100 test images of every class (by file name, so the choice is deterministic), stored as their original
JPEG bytes in one uint8 array with offsets: about 2 MB for 6,000 images, loadable without pickle.
Run: python tools/make_subset.py [path/to/cifar10-jpeg.tar.gz]
"""
import sys
import tarfile
from pathlib import Path

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_CLASS = {"train": 500, "test": 100}


def main(archive: str) -> None:
    members: dict[tuple[str, str], list] = {}
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            parts = Path(m.name).parts
            if m.isfile() and len(parts) == 4 and parts[1] in PER_CLASS and parts[2] in CLASSES:
                members.setdefault((parts[1], parts[2]), []).append(m)
        blobs, labels = [], []
        for split in ("train", "test"):
            for label, cls in enumerate(CLASSES):
                for m in sorted(members[(split, cls)], key=lambda m: m.name)[:PER_CLASS[split]]:
                    blobs.append(tar.extractfile(m).read())
                    labels.append(label)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    out = Path(__file__).resolve().parents[1] / "lwdc" / "data" / "cifar10_subset.npz"
    np.savez_compressed(out, jpeg=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=offsets,
                        labels=np.array(labels, dtype=np.int64), classes=np.array(CLASSES),
                        n_train=np.int64(PER_CLASS["train"] * len(CLASSES)))
    print(f"{out}: {len(blobs)} images, {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg.tar.gz"))
