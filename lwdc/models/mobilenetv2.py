"""MobileNetV2 (Sandler et al. 2018) for 32x32 inputs: stride 1 in the stem and in the 24-channel stage, so the
feature maps are not shrunk to 1x1 before the last stages (the usual CIFAR adaptation).
"""
from __future__ import annotations

import torch
from torch import nn

from . import register_model
from ._common import init_weights, scaled

__all__ = ["InvertedResidual", "MobileNetV2", "CONFIG"]

# (expansion t, output channels c, repeats n, stride of the first block s)
CONFIG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class InvertedResidual(nn.Module):
    """[1x1 expand -> BN -> ReLU6] -> 3x3 depthwise -> BN -> ReLU6 -> 1x1 project -> BN, + input when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.body(x)
        return self.body(x)


class MobileNetV2(nn.Module):
    """stem -> 17 inverted residual blocks -> 1x1 conv to 1280 -> pool -> [dropout] -> linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        cin = scaled(32, width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin),
                                  nn.ReLU6(inplace=True))
        blocks = []
        for t, c, n, s in CONFIG:
            cout = scaled(c, width)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        last = scaled(1280, max(width, 1.0))   # as in the paper: the last layer is never made narrower
        self.head = nn.Sequential(nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(last, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.dropout(self.flatten(self.pool(x))))


@register_model
def mobilenetv2(num_classes: int = 10, in_channels: int = 3, width: float = 1.0, dropout: float = 0.0) -> nn.Module:
    """CIFAR MobileNetV2; ``width`` scales every layer but the last 1x1 (kept at >= 1280), ``dropout`` before the FC."""
    return MobileNetV2(num_classes, in_channels, width, dropout)
