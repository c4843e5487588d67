"""Compact CNNs for event-related potentials in short multichannel EEG epochs (N, channels, samples).

* ``eegnet``: EEGNet-8,2 (Lawhern et al. 2018, J. Neural Eng. 15:056013): a temporal convolution (kernel about half
  the sampling rate: 65 at 128 Hz, odd so that 'same' padding keeps the length and lighter operators fit) ->
  a depthwise spatial convolution over all electrodes (depth multiplier 2) -> BN, ELU, average pool /4, dropout
  -> a separable convolution (depthwise 1x17 + pointwise) -> BN, ELU, pool /8, dropout -> linear. The epoch
  enters as an image (1, channels, samples) through ``nn.Unflatten``.
* ``farahat1d``: in the style of Farahat et al. 2019 (J. Neural Eng. 16:066010): parallel temporal Conv1d
  branches of different lengths (short, medium, long) over all electrodes, concatenated on channels, BN, ELU,
  pooling and dropout, then a second temporal convolution and a linear read-out.
"""
from __future__ import annotations

import torch
from torch import nn

from . import register_model
from ._common import scaled

__all__ = ["EEGNet", "Farahat1d"]


class EEGNet(nn.Module):
    def __init__(self, num_classes: int = 2, in_channels: int = 4, width: float = 1.0, samples: int = 116,
                 kernel: int = 65, dropout: float = 0.25):
        super().__init__()
        f1 = scaled(8, width)
        f2 = 2 * f1
        self.unflatten = nn.Unflatten(1, (1, in_channels))
        self.temporal = nn.Conv2d(1, f1, (1, kernel), padding=(0, kernel // 2), bias=False)
        self.bn1 = nn.BatchNorm2d(f1)
        self.spatial = nn.Conv2d(f1, f2, (in_channels, 1), groups=f1, bias=False)
        self.bn2, self.elu2 = nn.BatchNorm2d(f2), nn.ELU()
        self.pool2, self.drop2 = nn.AvgPool2d((1, 4)), nn.Dropout(dropout)
        self.depthwise = nn.Conv2d(f2, f2, (1, 17), padding=(0, 8), groups=f2, bias=False)
        self.pointwise = nn.Conv2d(f2, f2, 1, bias=False)
        self.bn3, self.elu3 = nn.BatchNorm2d(f2), nn.ELU()
        self.pool3, self.drop3 = nn.AvgPool2d((1, 8)), nn.Dropout(dropout)
        self.flatten = nn.Flatten(1)
        t = samples // 4 // 8                       # time steps left after both pools
        self.fc = nn.Linear(f2 * t, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.temporal(self.unflatten(x)))
        x = self.drop2(self.pool2(self.elu2(self.bn2(self.spatial(x)))))
        x = self.drop3(self.pool3(self.elu3(self.bn3(self.pointwise(self.depthwise(x))))))
        return self.fc(self.flatten(x))


class Farahat1d(nn.Module):
    def __init__(self, num_classes: int = 2, in_channels: int = 4, width: float = 1.0, samples: int = 116,
                 kernels=(9, 25, 49), dropout: float = 0.25):
        super().__init__()
        c = scaled(8, width)
        self.branch1 = nn.Conv1d(in_channels, c, kernels[0], padding=kernels[0] // 2, bias=False)
        self.branch2 = nn.Conv1d(in_channels, c, kernels[1], padding=kernels[1] // 2, bias=False)
        self.branch3 = nn.Conv1d(in_channels, c, kernels[2], padding=kernels[2] // 2, bias=False)
        self.bn1, self.elu1 = nn.BatchNorm1d(3 * c), nn.ELU()
        self.pool1, self.drop1 = nn.AvgPool1d(4), nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(3 * c, 2 * c, 7, padding=3, bias=False)
        self.bn2, self.elu2 = nn.BatchNorm1d(2 * c), nn.ELU()
        self.pool2, self.drop2 = nn.AvgPool1d(4), nn.Dropout(dropout)
        self.flatten, self.fc = nn.Flatten(1), nn.Linear(2 * c * (samples // 4 // 4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)
        x = self.drop1(self.pool1(self.elu1(self.bn1(x))))
        x = self.drop2(self.pool2(self.elu2(self.bn2(self.conv2(x)))))
        return self.fc(self.flatten(x))


@register_model
def eegnet(num_classes: int = 2, in_channels: int = 4, width: float = 1.0, samples: int = 116,
           kernel: int = 65, dropout: float = 0.25) -> nn.Module:
    """EEGNet-8,2 for (N, electrodes, samples) epochs (temporal kernel 65, about half of 128 Hz)."""
    return EEGNet(num_classes, in_channels, width, samples, kernel, dropout)


@register_model
def farahat1d(num_classes: int = 2, in_channels: int = 4, width: float = 1.0, samples: int = 116,
              dropout: float = 0.25) -> nn.Module:
    """Parallel multi-length temporal Conv1d network (Farahat et al. 2019 style) for EEG epochs."""
    return Farahat1d(num_classes, in_channels, width, samples, dropout=dropout)
