"""A toy regression task and a 1-D data set for it, registered from this file alone.

Targets: two numbers per signal (its mean level and its slope). Loss: mean squared error. Metrics: RMSE and its
negative as the headline (lwdc's headline metric is one where higher is better).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lwdc.data import register_dataset
from lwdc.tasks import register_task


@register_task("toy-regression")
@dataclass
class ToyRegression:
    name: str = "toy-regression"
    primary: str = "neg_rmse"

    def loss(self, output, target):
        return F.mse_loss(output, target)

    @torch.no_grad()
    def batch_stats(self, output, target):
        return {"sq_sum": float(((output - target) ** 2).sum()), "values": float(target.numel()),
                "count": float(target.shape[0])}

    def summarize(self, stats):
        rmse = (stats.get("sq_sum", 0.0) / max(stats.get("values", 0.0), 1.0)) ** 0.5
        return {"loss": rmse ** 2, "rmse": rmse, "neg_rmse": -rmse}

    def output_size(self, bundle) -> int:
        return int(bundle.train.y.shape[1])


def signals(n: int, seed: int, length: int = 64):
    g = torch.Generator().manual_seed(seed)
    level, slope = torch.randn(n, generator=g), torch.randn(n, generator=g)
    t = torch.linspace(-1, 1, length)
    x = level[:, None, None] + slope[:, None, None] * t + 0.1 * torch.randn(n, 2, length, generator=g)
    return x.float(), torch.stack([level, slope], 1).float()


@register_dataset("toy-signals", task="toy-regression", augment=None, overwrite=True)
def toy_signals(cache_dir, download):
    xtr, ytr = signals(256, 0)
    xte, yte = signals(64, 1)
    return xtr, ytr, xte, yte, None
