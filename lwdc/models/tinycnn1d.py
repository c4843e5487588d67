"""A tiny 1-D CNN for (N, C, L) signals (audio, EEG): the smallest model that exercises Conv1d compression."""
from __future__ import annotations

import torch
from torch import nn

from . import register_model
from ._common import init_weights, scaled

__all__ = ["TinyCNN1d"]


class TinyCNN1d(nn.Module):
    """Three Conv1d(k=5)-BN-ReLU layers (16/32/64 channels x width; the last two stride 2) -> pool -> linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0, kernel_size: int = 5):
        super().__init__()
        c1, c2, c3 = (scaled(c, width) for c in (16, 32, 64))
        pad = kernel_size // 2
        self.conv1 = nn.Conv1d(in_channels, c1, kernel_size, 1, pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv1d(c1, c2, kernel_size, 2, pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv1d(c2, c3, kernel_size, 2, pad, bias=False)
        self.bn3 = nn.BatchNorm1d(c3)
        self.relu3 = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(c3, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.fc(self.flatten(self.pool(x)))


@register_model
def tinycnn1d(num_classes: int = 10, in_channels: int = 1, width: float = 1.0, kernel_size: int = 5) -> nn.Module:
    """Tiny Conv1d network for (N, C, L) signals; note ``create_model`` passes ``in_channels=3`` unless told."""
    return TinyCNN1d(num_classes, in_channels, width, kernel_size)
