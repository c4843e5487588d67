"""Layouts the C exporter tracks instead of computing: ConvNeXt's channels-last block (permute, LayerNorm, Linear,
GELU, layer scale, permute back), LayerNorm over channels, ShuffleNet's channel shuffle. Each compiles and matches
PyTorch in float32 and the integer reference bit for bit in int8, and exports to ONNX; an op the exporter cannot do
in a permuted layout is refused by name, never computed in the wrong one."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lwdc.export.c import UnsupportedLayerError, calibrate, export_c, find_compiler, lower, quantize, run_float
from lwdc.export.c.quant import run_node_int8
from lwdc.export.onnx import export_onnx

from mobile_blocks import ConvNeXtBlock

needs_cc = pytest.mark.skipif(find_compiler() is None, reason="no C compiler")


class ConvNeXtNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 2, stride=2)
        self.block = ConvNeXtBlock(16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3)))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of (N, C, H, W), written as timm writes it: F.layer_norm on channels-last."""

    def forward(self, x):
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class LayerNormNet(nn.Module):
    """LayerNorm over channels after a conv, and over (N, F) features before the classifier."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.norm = LayerNorm2d(12)
        self.conv2 = nn.Conv2d(12, 8, 3, stride=2)
        self.norm_features = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.conv2(self.norm(self.conv(x))))
        return self.fc(self.norm_features(x.mean(dim=(2, 3))))


class ShuffleNet(nn.Module):
    """ShuffleNet's channel shuffle between grouped convs, written out and as nn.ChannelShuffle."""

    def __init__(self, groups: int = 4):
        super().__init__()
        self.groups = groups
        self.conv1 = nn.Conv2d(3, 16, 1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, groups=groups)
        self.shuffle = nn.ChannelShuffle(2)
        self.conv3 = nn.Conv2d(16, 8, 1, groups=2)

    def forward(self, x):
        x = self.conv1(x)
        n, c, h, w = x.shape
        x = x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.conv3(self.shuffle(self.conv2(x)))


def randomize_norms(model: nn.Module) -> nn.Module:
    """Trained-looking LayerNorm weights and biases, so the per-channel affine part is exercised."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) * 2 - 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
    return model.eval()


MODELS = {
    "convnext_block": (ConvNeXtNet, (3, 16, 16), ["conv", "conv", "layernorm", "conv", "gelu", "conv", "add", "gap",
                                                  "conv"]),
    "layernorm_over_channels": (LayerNormNet, (3, 9, 9), ["conv", "layernorm", "conv", "gap", "layernorm", "conv"]),
    "channel_shuffle": (ShuffleNet, (3, 8, 8), ["conv", "channel_shuffle", "conv", "channel_shuffle", "conv"]),
}


def model_and_inputs(name: str):
    torch.manual_seed(0)
    make, shape, _ = MODELS[name]
    return randomize_norms(make()), torch.randn(24, *shape)


@pytest.mark.parametrize("name", MODELS)
def test_lowering_tracks_the_layout_and_matches_pytorch(name):
    model, x = model_and_inputs(name)
    graph = lower(model, x[:1])
    assert [n.op for n in graph.nodes] == MODELS[name][2]  # permutes are no nodes; gamma folds into the Linear
    for node in graph.nodes:  # tensors stay channels-first: a LayerNorm's channels are its input's dim 0
        assert node.op != "layernorm" or graph.tensors[node.inputs[0]].shape[0] == len(node.weight)
    assert torch.allclose(run_float(graph, x), model(x), atol=1e-5)


@needs_cc
@pytest.mark.parametrize("name", MODELS)
def test_float32_and_int8_c_and_onnx(name, tmp_path):
    model, x = model_and_inputs(name)
    result = export_c(model, x[:8], tmp_path / "f32")
    assert result.summary["verified"]["max_abs_diff_vs_pytorch"] <= result.summary["verified"]["limit"]
    result = export_c(model, x[:8], tmp_path / "q8", int8=True, calib=x)
    verified = result.summary["verified"]
    assert verified["int8_matches_reference"] is True
    span = float(model(x[:8]).detach().abs().max())
    assert verified["max_abs_diff_vs_pytorch_float"] < 0.1 * span
    assert export_onnx(model, x[:4], tmp_path / "m.onnx")["max_abs_diff_vs_pytorch"] < 1e-4


def test_int8_layernorm_is_within_a_rounding_of_exact_on_its_quantised_input():
    """The integer rule (centred sums, bit-by-bit isqrt, fixed-point weight) against float LayerNorm of the same
    int8 input: within about half an output step, also for constant channels, zero and negative weights."""
    torch.manual_seed(0)
    model = randomize_norms(nn.Sequential(nn.Conv2d(3, 24, 3), LayerNorm2d(24)))
    with torch.no_grad():
        model[1].weight[:3] = torch.tensor([0.0, -1.5, 1e-9])
    x = torch.randn(16, 3, 7, 7)
    x[0] = 0  # every position holds the conv bias: its channels vary, but not along space
    graph = lower(model, x[:1])
    qg = quantize(graph, calibrate(graph, [x]))
    node = graph.nodes[1]
    qin, qout = qg.qp(node.inputs[0]), qg.qp(node.output)
    xq = qin.quantize(run_float(graph, x, keep=True)[graph.tensors[node.inputs[0]].storage].numpy()
                      .reshape(len(x), *graph.tensors[node.inputs[0]].shape))
    got = qout.dequantize(run_node_int8(qg, 1, [xq]))
    want = F.layer_norm(torch.from_numpy(qin.dequantize(xq)).movedim(1, -1), (24,), model[1].weight,
                        model[1].bias).movedim(-1, 1).detach().numpy()
    inside = (want > qout.dequantize(np.int8(-128))) & (want < qout.dequantize(np.int8(127)))
    assert np.abs(got - want)[inside].max() <= 0.51 * qout.scale
    constant = qin.quantize(np.full((1, 24, 2, 2), 0.3, np.float32))  # zero variance: the output is the bias
    assert np.array_equal(run_node_int8(qg, 1, [constant])[0, :, 0, 0], qout.quantize(model[1].bias.detach()))


class _Fn(nn.Module):
    """A conv to (N, 8, 6, 6), then ``fn(x, w)`` with a parameter ``w`` of shape (6,)."""

    def __init__(self, fn):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.w = nn.Parameter(torch.ones(6))
        self.fn = fn

    def forward(self, x):
        return self.fn(self.conv(x), self.w)


@pytest.mark.parametrize("fn, words", [
    (lambda x, w: x.permute(0, 2, 3, 1).mean(-1), r"aten.mean.dim: this operation on a tensor permuted from "
                                               r"\(N, C, H, W\) by \[0, 2, 3, 1\] is not supported"),
    (lambda x, w: F.max_pool2d(x.permute(0, 2, 3, 1), 2).permute(0, 3, 1, 2), r"permuted .* by \[0, 2, 3, 1\]"),
    (lambda x, w: x.permute(0, 2, 3, 1).flatten(1), r"a view to \[1, 288\] of a permuted"),
    (lambda x, w: x.permute(0, 2, 3, 1), r"returns a permuted tensor"),
    (lambda x, w: (x.permute(0, 2, 1, 3) * w).permute(0, 2, 1, 3), r"over the last dim of a tensor that is not "
                                                                  r"channels-last"),
    (lambda x, w: x.transpose(2, 3).sigmoid().transpose(2, 3).transpose(1, 3).softmax(-1), r"by \[0, 3, 2, 1\]"),
    (lambda x, w: F.layer_norm(x, (6,)), r"LayerNorm over the last dims of an \(N, C, H, W\)"),
    (lambda x, w: x.unsqueeze(2).relu().squeeze(2), r"rank-5 tensor is not supported"),
    (lambda x, w: x.view(1, 2, 4, 6, 6).transpose(3, 4).reshape(1, 8, 6, 6), r"a view to \[1, 8, 6, 6\] of a permuted"),
])
def test_an_op_in_a_layout_it_cannot_handle_is_refused_by_name(fn, words):
    with pytest.raises(UnsupportedLayerError, match=words):
        lower(_Fn(fn).eval(), torch.randn(1, 3, 8, 8))
