"""A model no registry knows, built by a factory in a plain file (``--model tests/plugins/toy_model.py:build``)."""
from torch import nn


class Wiggle(nn.Module):
    def __init__(self, channels: int, outputs: int, dims: int):
        super().__init__()
        conv, bn, pool = ((nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d) if dims == 1
                          else (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d))
        self.a = nn.Sequential(conv(channels, 16, 3, padding=1, bias=False), bn(16), nn.ReLU())
        self.b = nn.Sequential(conv(16, 16, 3, padding=1, bias=False), bn(16), nn.ReLU())
        self.head = nn.Sequential(pool(1), nn.Flatten(), nn.Linear(16, outputs))

    def forward(self, x):
        return self.head(self.b(self.a(x)))


def build(num_classes: int, in_channels: int, dims: int = 2):
    return Wiggle(in_channels, num_classes, dims)


def build_1d(num_classes: int, in_channels: int):
    return Wiggle(in_channels, num_classes, 1)
