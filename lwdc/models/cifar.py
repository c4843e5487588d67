"""Reference CIFAR networks: ResNet-6n+2 (He et al. 2016), VGG-BN, MobileNetV2, and a small 1-D CNN.

Rules the compressor relies on: every layer is its own module, called once per forward pass (each block owns
its ReLUs); forward passes use only module calls, ``+`` and ``flatten``.
"""
from __future__ import annotations

from torch import nn

from . import register_model


def _w(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _init(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))   # "option B"

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        widths = [_w(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        blocks, cin = [], widths[0]
        for stage, cout in enumerate(widths):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)
        _init(self)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.layers(self.relu(self.bn1(self.conv1(x)))))))


def _resnet(depth: int):
    def build(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
        return CifarResNet(depth, num_classes, in_channels, width)
    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"CIFAR ResNet-{depth} (3 stages of 16/32/64 channels x width)."
    return register_model(build)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _resnet(_depth)


class VGG(nn.Module):
    def __init__(self, config: list, num_classes: int, in_channels: int, width: float):
        super().__init__()
        layers, cin = [], in_channels
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                cout = _w(v, width)
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(cin, num_classes)
        _init(self)

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))


_VGG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def _vgg(name: str):
    def build(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
        return VGG(_VGG[name], num_classes, in_channels, width)
    build.__name__ = name
    build.__doc__ = f"CIFAR {name.upper()} with BatchNorm and a single linear classifier."
    return register_model(build)


for _name in _VGG:
    _vgg(_name)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


@register_model
def mobilenetv2(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """MobileNetV2 for 32x32 inputs: stride 1 in the stem and in the second stage."""
    config = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    cin = _w(32, width)
    layers: list[nn.Module] = [nn.Conv2d(in_channels, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True)]
    for t, c, n, s in config:
        for i in range(n):
            layers.append(InvertedResidual(cin, _w(c, width), s if i == 0 else 1, t))
            cin = _w(c, width)
    last = _w(1280, max(width, 1.0))
    layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last, num_classes)]
    return _init(nn.Sequential(*layers))


@register_model
def tinycnn1d(num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> nn.Module:
    """Three Conv1d-BN-ReLU layers for (N, C, L) signals such as audio or EEG."""
    c = [_w(v, width) for v in (16, 32, 64)]
    layers: list[nn.Module] = []
    cin = in_channels
    for i, cout in enumerate(c):
        layers += [nn.Conv1d(cin, cout, 5, stride=1 if i == 0 else 2, padding=2, bias=False), nn.BatchNorm1d(cout),
                   nn.ReLU(inplace=True)]
        cin = cout
    layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return _init(nn.Sequential(*layers))
