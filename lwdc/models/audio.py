"""Keyword-spotting networks for 8 kHz spoken words: a raw-waveform Conv1d network and a log-mel DS-CNN.

* ``m5``: in the spirit of M5 (Dai et al. 2017, "Very deep convolutional neural networks for raw waveforms"):
  a long first kernel (80 samples = 10 ms, stride 4) learns the filter bank, then 3-tap convolutions with
  max-pooling. Channels 32/32/64/64 instead of the paper's 128/128/256/512 keep it microcontroller-sized
  (about 24k parameters, 7.8M MACs on one second at 8 kHz), and the C export runs from samples, so the device
  needs no feature code.
* ``dscnn``: DS-CNN-S of "Hello Edge" (Zhang et al. 2017): a 64-channel 4x10 convolution of stride 2 over a
  (mels x frames) spectrogram, four depthwise-separable blocks (3x3 depthwise + 1x1 pointwise, BN, ReLU),
  average pooling, linear. ``logmel_dscnn`` puts ``LogMel`` in front (``front_end``) so it runs from samples.
"""
from __future__ import annotations

import torch
from torch import nn

from . import register_model
from ._common import init_weights, scaled
from .frontend import LogMel

__all__ = ["M5", "DSCNN", "FrontEnded"]


class M5(nn.Module):
    """conv(80, /4) -> 3 x [conv(3)] with BN-ReLU-maxpool(4) after each -> global average pool -> linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0):
        super().__init__()
        c1, c2, c3, c4 = (scaled(c, width) for c in (32, 32, 64, 64))
        self.conv1 = nn.Conv1d(in_channels, c1, 80, stride=4, padding=38, bias=False)
        self.bn1, self.relu1, self.pool1 = nn.BatchNorm1d(c1), nn.ReLU(inplace=True), nn.MaxPool1d(4)
        self.conv2 = nn.Conv1d(c1, c2, 3, padding=1, bias=False)
        self.bn2, self.relu2, self.pool2 = nn.BatchNorm1d(c2), nn.ReLU(inplace=True), nn.MaxPool1d(4)
        self.conv3 = nn.Conv1d(c2, c3, 3, padding=1, bias=False)
        self.bn3, self.relu3, self.pool3 = nn.BatchNorm1d(c3), nn.ReLU(inplace=True), nn.MaxPool1d(4)
        self.conv4 = nn.Conv1d(c3, c4, 3, padding=1, bias=False)
        self.bn4, self.relu4, self.pool4 = nn.BatchNorm1d(c4), nn.ReLU(inplace=True), nn.MaxPool1d(4)
        self.gap, self.flatten, self.fc = nn.AdaptiveAvgPool1d(1), nn.Flatten(1), nn.Linear(c4, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = self.pool3(self.relu3(self.bn3(self.conv3(x))))
        x = self.pool4(self.relu4(self.bn4(self.conv4(x))))
        return self.fc(self.flatten(self.gap(x)))


class DSBlock(nn.Module):
    """3x3 depthwise -> BN -> ReLU -> 1x1 pointwise -> BN -> ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn1, self.relu1 = nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        self.pw = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2, self.relu2 = nn.BatchNorm2d(channels), nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.bn2(self.pw(self.relu1(self.bn1(self.dw(x))))))


class DSCNN(nn.Module):
    """(N, 1, mels, frames) -> BN (input scaling) -> conv 4x10 /2 -> 4 DS blocks -> average pool -> linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0, blocks: int = 4):
        super().__init__()
        c = scaled(64, width)
        self.norm = nn.BatchNorm2d(in_channels)      # log-mel values sit far from 0: learn their scale
        self.conv1 = nn.Conv2d(in_channels, c, (4, 10), stride=2, padding=(1, 4), bias=False)
        self.bn1, self.relu1 = nn.BatchNorm2d(c), nn.ReLU(inplace=True)
        self.blocks = nn.Sequential(*[DSBlock(c) for _ in range(blocks)])
        self.gap, self.flatten, self.fc = nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(c, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.relu1(self.bn1(self.conv1(self.norm(x)))))
        return self.fc(self.flatten(self.gap(x)))


class FrontEnded(nn.Module):
    """``backbone(front_end(x))``: a fixed feature extractor before a network. Export code looks for these two
    attributes: the C gets the backbone, the device computes the front end's features."""

    def __init__(self, front_end: nn.Module, backbone: nn.Module):
        super().__init__()
        self.front_end, self.backbone = front_end, backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.front_end(x))


@register_model
def m5(num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> nn.Module:
    """Raw-waveform Conv1d network (M5-style, 32/32/64/64 channels) for (N, C, ~8000) audio at 8 kHz."""
    return M5(num_classes, in_channels, width)


@register_model
def dscnn(num_classes: int = 10, in_channels: int = 1, width: float = 1.0, blocks: int = 4) -> nn.Module:
    """DS-CNN-S ("Hello Edge") on (N, 1, mels, frames) features."""
    return DSCNN(num_classes, in_channels, width, blocks)


@register_model
def logmel_dscnn(num_classes: int = 10, in_channels: int = 1, width: float = 1.0, sample_rate: int = 8000,
                 n_mels: int = 40, n_fft: int = 256, hop: int = 128) -> nn.Module:
    """DS-CNN-S behind a log-mel front end: runs from (N, 1, L) samples; the C export takes the features."""
    if in_channels != 1:
        raise ValueError(f"logmel_dscnn reads mono audio (in_channels=1); got {in_channels}")
    return FrontEnded(LogMel(sample_rate, n_fft, hop, n_mels), DSCNN(num_classes, 1, width))
