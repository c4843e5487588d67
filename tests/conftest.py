"""Tiny models and data made here, so the suite needs nothing downloaded and nothing from ../shared."""
import os

# One thread, here and in every subprocess a test starts: tiny models gain nothing from more, and on a loaded
# machine OpenMP's barriers made two threads 10x slower than one (tests/test_api.py: 60 s against 5 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
from torch import nn


class TinyNet(nn.Module):
    """Conv-BN-ReLU stem, one residual block, a strided conv, a head: every case expand must handle."""

    def __init__(self, num_classes: int = 4, width: int = 8, dims: int = 2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        pool = nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool1d
        self.stem = nn.Sequential(conv(3, width, 3, padding=1, bias=False), bn(width), nn.ReLU())
        self.conv1 = conv(width, width, 3, padding=1, bias=False)
        self.bn1 = bn(width)
        self.relu1 = nn.ReLU()
        self.conv2 = conv(width, width, 3, padding=1, bias=False)
        self.bn2 = bn(width)
        self.relu2 = nn.ReLU()
        self.down = nn.Sequential(conv(width, 2 * width, 3, stride=2, padding=1, bias=False), bn(2 * width), nn.ReLU())
        self.head = nn.Sequential(pool(1), nn.Flatten(), nn.Linear(2 * width, num_classes))

    def forward(self, x):
        x = self.stem(x)
        x = self.relu2(x + self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.head(self.down(x))


def quadrant_data(n: int, seed: int = 0, size: int = 16):
    """Four classes: which quadrant of the image is bright. Learnable in a few epochs by a tiny CNN."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, 3, size, size, generator=g) * 0.5
    half = size // 2
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, :, r * half:(r + 1) * half, c * half:(c + 1) * half] += 1.5
    return x, y


def batches(x, y, batch_size: int = 32):
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]


@pytest.fixture
def tiny_net():
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture
def quadrants():
    x, y = quadrant_data(256, seed=1)
    xv, yv = quadrant_data(128, seed=2)
    return batches(x, y), batches(xv, yv)


def pytest_collection_modifyitems(config, items):
    """Start the ``e2e`` checks first. CI runs the suite on one worker per core (pytest-xdist, ``--dist
    loadscope --no-loadscope-reorder``: a module's tests stay on one worker, so module fixtures are built once,
    and modules go out in this order). The 200-model property test is one item of 4-5 minutes; started last (as
    xdist's default order, most tests per module first, starts it), it ran alone while the other core idled.
    Started first, the other worker takes the rest of the suite beside it."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)   # stable: the rest keep their order
