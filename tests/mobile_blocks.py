"""Small versions of the blocks public mobile CNNs are built from, written the way their reference code writes
them (hard-swish and squeeze-excitation, MBConv, ghost modules, channel split and shuffle, ConvNeXt's permuted
LayerNorm, HRNet's upsample fusion, Res2Net's split cascade, RepVGG's parallel branches), and whole networks
assembled from them. Used by the C and ONNX export tests."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: nn.Module | None = None):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act] if act is not None else []))


class SqueezeExcite(nn.Module):
    """MobileNetV3 / EfficientNet SE: global pool, bottleneck, gate, channel-wise multiply (broadcast)."""

    def __init__(self, channels: int, squeezed: int, gate: nn.Module):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.gate = gate

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.expand(F.relu(self.reduce(s))))


class MobileNetV3Block(nn.Module):
    def __init__(self, c: int = 16, expand: int = 48):
        super().__init__()
        self.expand = conv_bn(c, expand, act=nn.Hardswish())
        self.dw = conv_bn(expand, expand, 3, groups=expand, act=nn.Hardswish())
        self.se = SqueezeExcite(expand, 12, nn.Hardsigmoid())
        self.project = conv_bn(expand, c)

    def forward(self, x):
        return x + self.project(self.se(self.dw(self.expand(x))))


class MBConv(nn.Module):
    """EfficientNet: SiLU everywhere, sigmoid-gated SE."""

    def __init__(self, c: int = 16, expand: int = 64):
        super().__init__()
        self.expand = conv_bn(c, expand, act=nn.SiLU())
        self.dw = conv_bn(expand, expand, 5, groups=expand, act=nn.SiLU())
        self.se = SqueezeExcite(expand, 4, nn.Sigmoid())
        self.project = conv_bn(expand, c)

    def forward(self, x):
        return x + self.project(self.se(self.dw(self.expand(x))))


class GhostModule(nn.Module):
    """GhostNet: a primary conv, cheap depthwise features of it, concatenated and sliced to the output width."""

    def __init__(self, cin: int = 16, cout: int = 19):
        super().__init__()
        self.out = cout
        primary = (cout + 1) // 2
        self.primary = conv_bn(cin, primary, act=nn.ReLU())
        self.cheap = conv_bn(primary, primary, 3, groups=primary, act=nn.ReLU())

    def forward(self, x):
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], dim=1)[:, :self.out]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class ShuffleV2Unit(nn.Module):
    """ShuffleNetV2 basic unit: channel split, one branch transformed, concat, channel shuffle."""

    def __init__(self, c: int = 16):
        super().__init__()
        half = c // 2
        self.branch = nn.Sequential(conv_bn(half, half, act=nn.ReLU()), conv_bn(half, half, 3, groups=half),
                                    conv_bn(half, half, act=nn.ReLU()))

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([a, self.branch(b)], dim=1), 2)


class ConvNeXtBlock(nn.Module):
    """As the ConvNeXt reference writes it: channels-last LayerNorm and Linear layers between permutes."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pw1 = nn.Linear(c, 4 * c)
        self.act = nn.GELU()
        self.pw2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.linspace(0.25, 1.5, c))  # layer scale, trained-looking

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pw2(self.act(self.pw1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class HRNetFusion(nn.Module):
    """HRNet-style: a half-resolution branch brought up by 1x1 conv + BN + nearest upsampling, added, ReLU."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.down = conv_bn(c, 2 * c, 3, stride=2, act=nn.ReLU())
        self.up = conv_bn(2 * c, c)

    def forward(self, x):
        low = self.down(x)
        return F.relu(x + F.interpolate(self.up(low), scale_factor=2, mode="nearest"))


class Res2NetSplit(nn.Module):
    """Res2Net: split into 4 scales, each conv fed the previous one's output added to its own split."""

    def __init__(self, c: int = 16, scales: int = 4):
        super().__init__()
        self.width = c // scales
        self.convs = nn.ModuleList(conv_bn(self.width, self.width, 3, act=nn.ReLU()) for _ in range(scales - 1))

    def forward(self, x):
        parts = torch.split(x, self.width, dim=1)
        outs, y = [], None
        for i, conv in enumerate(self.convs):
            y = conv(parts[i] if y is None else parts[i] + y)
            outs.append(y)
        return torch.cat([*outs, parts[-1]], dim=1)


class RepVGGBlock(nn.Module):
    """Training-time RepVGG: 3x3 conv + BN, 1x1 conv + BN and a BN identity, summed, ReLU (folded at export)."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.k3 = conv_bn(c, c, 3)
        self.k1 = conv_bn(c, c, 1)
        self.identity = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(self.k3(x) + self.k1(x) + self.identity(x))


BLOCKS = {
    "mobilenetv3": MobileNetV3Block,
    "mbconv": MBConv,
    "ghost": GhostModule,
    "shufflev2": ShuffleV2Unit,
    "convnext": ConvNeXtBlock,
    "hrnet_fusion": HRNetFusion,
    "res2net": Res2NetSplit,
    "repvgg": RepVGGBlock,
}


class BlockNet(nn.Module):
    """Stem conv, the blocks, global pool and a classifier: what each block test exports."""

    def __init__(self, *blocks: nn.Module, width: int = 16, stem_act: nn.Module | None = None, classes: int = 5):
        super().__init__()
        self.stem = conv_bn(3, width, 3, act=stem_act or nn.ReLU())
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(self.out_channels(blocks, width), classes)

    @staticmethod
    def out_channels(blocks, width: int) -> int:
        for b in blocks:
            width = getattr(b, "out", width)
        return width

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def block_net(name: str) -> nn.Module:
    return BlockNet(BLOCKS[name]())


def whole_networks() -> dict[str, nn.Module]:
    """Networks of several blocks each, in the proportions of the architectures they come from."""
    return {
        "mobilenetv3_like": BlockNet(MobileNetV3Block(), MBConv(), MobileNetV3Block(), stem_act=nn.Hardswish()),
        "shufflenet_ghost_like": BlockNet(ShuffleV2Unit(), ShuffleV2Unit(), Res2NetSplit(), GhostModule(16, 15)),
        "convnext_hrnet_like": BlockNet(ConvNeXtBlock(), HRNetFusion(), ConvNeXtBlock(), RepVGGBlock()),
    }


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights with trained-looking BatchNorm statistics (so folding is exercised), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
        elif isinstance(m, nn.LayerNorm):
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model.eval()
