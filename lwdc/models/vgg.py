"""CIFAR VGG with BatchNorm (Simonyan & Zisserman 2015, in the common CIFAR form): 3x3 conv-BN-ReLU layers,
2x2 max-pools, global average pool and a single linear classifier.

The pools use ``ceil_mode=True`` so that small inputs (down to 8x8) survive all five of them; for even sizes
(32x32 and every size met on the way down from it) the output equals the usual floor-mode pooling.
"""
from __future__ import annotations

import torch
from torch import nn

from . import register_model
from ._common import init_weights, scaled

__all__ = ["VGG", "CONFIGS"]

CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """``features`` (conv-BN-ReLU and pools, each its own module) -> pool -> flatten -> ``classifier``."""

    def __init__(self, config: list[int | str], num_classes: int = 10, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                cout = scaled(int(v), width)
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


@register_model
def vgg11(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """CIFAR VGG-11-BN: 8 conv layers, 5 pools, Linear(512 x width, num_classes)."""
    return VGG(CONFIGS["vgg11"], num_classes, in_channels, width)


@register_model
def vgg16(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """CIFAR VGG-16-BN: 13 conv layers, 5 pools, Linear(512 x width, num_classes)."""
    return VGG(CONFIGS["vgg16"], num_classes, in_channels, width)
