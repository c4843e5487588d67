"""A tiny search run by tests/test_distributed.py, under ``torchrun`` (each rank dumps its final state) or in-process.

    python -m torch.distributed.run --nproc_per_node=2 tests/dist_search.py OUT_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from conftest import quadrant_data  # noqa: E402

from lwdc import distributed as dist  # noqa: E402
from lwdc.costs import build_cost_table, get_cost_model  # noqa: E402
from lwdc.data.datasets import ArrayDataset  # noqa: E402
from lwdc.data.loader import BatchLoader  # noqa: E402
from lwdc.space import expand  # noqa: E402
from lwdc.tasks import Classification  # noqa: E402
from lwdc.methods.search import Search, SearchSettings  # noqa: E402
from lwdc.train import TrainConfig, fit  # noqa: E402

GLOBAL_BATCH = 32
OPS = ["original", "conv3x3_g2", "conv1x1", "sep3x3", "skip"]
PLAIN_OPS = ["original", "conv3x3_g2", "conv1x1", "skip"]   # no BatchNorm inside any branch


class Net(nn.Module):
    """Stem, a residual pair and a strided conv; ``norm`` picks BatchNorm or none (per-sample ops only)."""

    def __init__(self, norm: bool, width: int = 8):
        super().__init__()
        bn = (lambda c: nn.BatchNorm2d(c)) if norm else (lambda c: nn.Identity())
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), bn(width), nn.ReLU())
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.bn1 = bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), bn(2 * width), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 4))

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.head(self.down(x))


def search(norm: bool, epochs: int = 2) -> dict:
    """Search on this rank's shard of the quadrant data; the global batch is the same for any number of ranks."""
    x, y = quadrant_data(256, seed=1)
    data = ArrayDataset(x, y, mean=(0.0,) * 3, std=(1.0,) * 3)
    world = dist.world_size()
    loader = BatchLoader(data, GLOBAL_BATCH // world, shuffle=True, seed=0, rank=dist.rank(), world_size=world,
                         drop_last=True)
    torch.manual_seed(0)
    net = Net(norm)
    example = x[:1]
    supernet = expand(net, example, OPS if norm else PLAIN_OPS, seed=0)
    supernet.init_gates(0.5)
    table = build_cost_table(get_cost_model("params"), supernet, net, example)
    cfg = TrainConfig(epochs=epochs, lr=0.05, progress=False)
    search = Search(SearchSettings(arch_lr=0.05, lam=0.5, bn_batches=4), table)
    history = fit(supernet, Classification(), loader, None, cfg, method=search, log=lambda s: None)
    return {"state": {k: v.clone() for k, v in supernet.state_dict().items()},
            "gates": {n: layer.alpha.detach().clone() for n, layer in supernet.choice_layers().items()},
            "train": [h.train for h in history], "world_size": world}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_from_env()
    result = {"none": search(norm=False), "bn": search(norm=True)}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(result, out / f"rank{dist.rank()}.pt")
    dist.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
