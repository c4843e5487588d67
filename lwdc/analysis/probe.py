"""Linear probes (Alain & Bengio 2016): how linearly decodable the labels are from each layer's features.

A probe is a logistic regression on standardised, pooled features, trained full-batch with L-BFGS: convex, so
deterministic and cheap on a CPU, and its test accuracy says how much task information a layer still carries
after compression.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .similarity import layer_features

__all__ = ["linear_probe", "pool_features", "probe_layers"]


def pool_features(t: torch.Tensor, size: int = 2) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C * size^d) by adaptive average pooling; (N, F) is kept as it is.

    ``size=1`` is a global average per channel; 2 keeps a coarse layout (quadrants, halves) for a few times
    the cost.
    """
    pools = {3: F.adaptive_avg_pool1d, 4: F.adaptive_avg_pool2d, 5: F.adaptive_avg_pool3d}
    if t.ndim in pools:
        t = pools[t.ndim](t, size)
    return t.flatten(1)


def linear_probe(features_train: torch.Tensor, y_train: torch.Tensor, features_test: torch.Tensor,
                 y_test: torch.Tensor, epochs: int = 100, lr: float = 1.0, weight_decay: float = 1e-3,
                 seed: int = 0) -> float:
    """Test accuracy of a logistic regression fitted on the training features (flattened, standardised).

    ``epochs`` is the number of L-BFGS iterations over the full batch; ``weight_decay`` (an L2 penalty on the
    weights) keeps separable data from driving them to infinity; ``seed`` draws the small initial weights.
    """
    xtr = features_train.detach().flatten(1).float()
    xte = features_test.detach().flatten(1).to(xtr.device).float()
    ytr, yte = y_train.to(xtr.device).long(), y_test.to(xtr.device).long()
    if xtr.shape[0] != ytr.shape[0] or xte.shape[0] != yte.shape[0]:
        raise ValueError("features and labels must have the same number of samples")
    mean, std = xtr.mean(0), xtr.std(0, unbiased=False).clamp_min(1e-6)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    classes = int(max(ytr.max(), yte.max())) + 1
    gen = torch.Generator(device=xtr.device).manual_seed(seed)
    weight = (0.01 * torch.randn(classes, xtr.shape[1], generator=gen, device=xtr.device)).requires_grad_(True)
    bias = torch.zeros(classes, device=xtr.device, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=lr, max_iter=epochs, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(F.linear(xtr, weight, bias), ytr) + 0.5 * weight_decay * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float((F.linear(xte, weight, bias).argmax(1) == yte).float().mean())


def probe_layers(model: nn.Module, layers: Sequence[str], train_x: torch.Tensor, train_y: torch.Tensor,
                 test_x: torch.Tensor, test_y: torch.Tensor, pool: int = 2, batch_size: int = 256,
                 **probe_kwargs) -> dict[str, float]:
    """Linear-probe test accuracy of each named layer: name -> accuracy.

    Each layer's output is average-pooled to ``pool`` per spatial dimension while it is collected (see
    ``pool_features``), so memory and probe cost stay small; ``probe_kwargs`` go to ``linear_probe``.
    """
    def reduce(t: torch.Tensor) -> torch.Tensor:
        return pool_features(t, pool)

    train = layer_features(model, train_x, layers, batch_size, reduce)
    test = layer_features(model, test_x, layers, batch_size, reduce)
    return {name: linear_probe(train[name], train_y, test[name], test_y, **probe_kwargs) for name in layers}
