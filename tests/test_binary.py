"""Binary operators (issue 19): the layer computes the hand formula (sign(0) = +1, +1 padding, XNOR-Net scale),
its straight-through gradients are clipped as documented, the registry counts it, and a supernet with bin3x3
expands, derives, trains and describes itself as data."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lwdc
from lwdc.arch import build, describe
from lwdc.costs.flash import flash_bytes
from lwdc.binary import (BiRealBlock, BinaryConv1d, BinaryConv2d, binarize, binary_macs, bops, channel_scale,
                         clip_latent_weights)
from lwdc.ops import LayerSpec, get_op
from lwdc.profiling import count_macs, count_params

from conftest import TinyNet


def hand_conv2d(x, w, stride, pad, dilation=1, bias=None, threshold=None):
    """The documented formula in numpy loops: sign(x - t) (0 -> +1), +1 padding, sum of products, mean|W| per
    output channel."""
    x, w = x.detach().double().numpy(), w.detach().double().numpy()
    t = 0.0 if threshold is None else threshold.detach().double().numpy().reshape(1, -1, 1, 1)
    sx = np.where(x >= t, 1.0, -1.0)
    sx = np.pad(sx, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=1.0)
    sw = np.where(w >= 0, 1.0, -1.0)
    alpha = np.abs(w).reshape(w.shape[0], -1).mean(axis=1)
    n, c, h, wd = sx.shape
    o, _, kh, kw = w.shape
    oh = (h - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd - dilation * (kw - 1) - 1) // stride + 1
    y = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = sx[:, :, i * stride:i * stride + dilation * (kh - 1) + 1:dilation,
                       j * stride:j * stride + dilation * (kw - 1) + 1:dilation]
            y[:, :, i, j] = np.einsum("nckl,ockl->no", patch, sw)
    y = y * alpha.reshape(1, -1, 1, 1)
    if bias is not None:
        y = y + bias.detach().double().numpy().reshape(1, -1, 1, 1)
    return y


@pytest.mark.parametrize("stride, pad, dilation, bias", [(1, 1, 1, False), (2, 1, 1, True), (1, 2, 2, False),
                                                         (1, 0, 1, False)])
def test_forward_equals_the_hand_formula(stride, pad, dilation, bias):
    torch.manual_seed(0)
    m = BinaryConv2d(5, 7, 3, stride=stride, padding=pad, dilation=dilation, bias=bias).eval()
    m.threshold.copy_(torch.randn(5) * 0.3)
    x = torch.randn(2, 5, 9, 8)
    x[0, 0, :3] = m.threshold[0]                           # x == t: sign(0) = +1
    y = m(x)
    expected = hand_conv2d(x, m.weight, stride, pad, dilation, m.bias, m.threshold)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.detach().double().numpy(), expected, rtol=1e-6, atol=1e-6)


def test_sign_of_zero_is_plus_one_and_padding_is_plus_one():
    torch.manual_seed(0)
    m = BinaryConv2d(4, 3, 3, padding=1)
    y = m(torch.zeros(1, 4, 5, 5))
    # every input and every padded position is +1: each output is alpha * sum of sign(W), at the border too
    expected = channel_scale(m.weight) * torch.where(m.weight >= 0, 1.0, -1.0).sum(dim=(1, 2, 3))
    assert torch.allclose(y, expected.reshape(1, 3, 1, 1).expand_as(y))
    assert torch.equal(binarize(torch.tensor([0.0, -0.0, 1e-30, -1e-30])), torch.tensor([1.0, 1.0, 1.0, -1.0]))


def test_binary_conv1d_equals_the_2d_formula_on_one_row():
    torch.manual_seed(0)
    m = BinaryConv1d(6, 4, 5, stride=2, padding=2, bias=True).eval()
    m.threshold.copy_(torch.randn(6) * 0.3)
    x = torch.randn(3, 6, 17)
    # +1 padding along the one axis (a padded value above every threshold), none along the extra axis of height 1
    padded = F.pad(x, (2, 2), value=10.0)[:, :, None, :]
    expected = hand_conv2d(padded, m.weight[:, :, None, :], 2, 0, bias=m.bias, threshold=m.threshold)
    got = m(x).detach().double().numpy()[:, :, None, :]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_input_gradient_is_clipped_straight_through():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.3, 1.0, 1.5], requires_grad=True)
    binarize(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]       # 1 on |x| <= 1, boundaries included

    torch.manual_seed(0)
    m = BinaryConv2d(3, 4, 3, padding=1).eval()
    m.threshold.copy_(torch.tensor([0.0, 0.5, -0.5]))
    x = (torch.randn(1, 3, 6, 6) * 1.5).requires_grad_()
    g = torch.randn(1, 4, 6, 6)
    (m(x) * g).sum().backward()
    # the same gradient from a real conv of clamp(x - t) by alpha * sign(W): the STE is the clamp's derivative
    x2 = x.detach().clone().requires_grad_()
    w = channel_scale(m.weight).detach().reshape(-1, 1, 1, 1) * torch.where(m.weight >= 0, 1.0, -1.0)
    shifted = (x2 - m.threshold.reshape(1, -1, 1, 1)).clamp(-1, 1)
    (F.conv2d(F.pad(shifted, (1, 1, 1, 1), value=1.0), w) * g).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-6)
    outside = (x.detach() - m.threshold.reshape(1, -1, 1, 1)).abs() > 1
    assert torch.all(x.grad[outside] == 0) and x.grad.abs().sum() > 0 and outside.any()


def test_threshold_is_set_once_from_the_first_training_batch():
    torch.manual_seed(0)
    m = BinaryConv2d(3, 4, 3, padding=1)
    x = torch.relu(torch.randn(8, 3, 5, 5)) + torch.tensor([0.0, 1.0, 2.0]).reshape(1, 3, 1, 1)
    m.eval()(x)
    assert not m.threshold_ready and torch.all(m.threshold == 0)          # eval mode sets nothing
    m.train()(x)
    assert m.threshold_ready and torch.allclose(m.threshold, x.mean(dim=(0, 2, 3)))
    m(x + 5)
    assert torch.allclose(m.threshold, x.mean(dim=(0, 2, 3)))             # set once, then kept
    assert "threshold" in m.state_dict() and "threshold" not in dict(m.named_parameters())
    # without it a ReLU output would binarise to +1 everywhere and the layer would see a constant
    fresh = BinaryConv2d(3, 4, 3, padding=1).eval()
    assert fresh(x).std(dim=(0, 2, 3)).max() == 0 and m.eval()(x).std(dim=(0, 2, 3)).min() > 0


def test_latent_weights_learn_and_clip():
    torch.manual_seed(0)
    m = BinaryConv2d(3, 4, 3, padding=1)
    m(torch.randn(2, 3, 5, 5)).pow(2).sum().backward()
    assert m.weight.grad is not None and torch.isfinite(m.weight.grad).all() and m.weight.grad.abs().sum() > 0
    with torch.no_grad():
        m.weight.mul_(100)
    clip_latent_weights(m)
    assert m.weight.abs().max() <= 1.0


def test_training_keeps_latent_weights_clipped_and_free_of_weight_decay():
    """lwdc's loop (search and fine-tuning alike) clips binary latent weights to [-1, 1] after every step and gives
    them no weight decay (docs/binary.md, training recipe); real weights keep theirs."""
    from lwdc.tasks import Classification
    from lwdc.train import TrainConfig, fit, make_optimizer

    torch.manual_seed(0)
    model = TinyNet()
    model.conv1 = BinaryConv2d(8, 8, 3, padding=1, bias=False)
    with torch.no_grad():
        model.conv1.weight.mul_(0.3)
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))) for _ in range(6)]
    fit(model, Classification(), batches, None, TrainConfig(epochs=2, lr=5.0, optimizer="adamw", progress=False),
        log=lambda s: None)                                      # lr 5: an unclipped step would leave [-1, 1]
    assert model.conv1.weight.abs().max() <= 1.0
    assert (model.conv1.weight.abs() == 1.0).any()              # it did reach the bound
    assert model.stem[0].weight.abs().max() > 1.0               # real weights are not clipped
    opt = make_optimizer(model.parameters(), TrainConfig(weight_decay=5e-4), no_decay=[model.conv1.weight])
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(model.conv1.weight)] == 0.0 and decay[id(model.stem[0].weight)] == 5e-4


def test_binary_layer_refuses_what_it_cannot_mean():
    with pytest.raises(ValueError, match="padding"):
        BinaryConv2d(4, 4, 3, padding="same")
    with pytest.raises(ValueError, match="padding_mode"):
        BinaryConv2d(4, 4, 3, padding=1, padding_mode="reflect")


def spec2d(cin, cout, stride=1, size=(8, 8), **kw):
    out = tuple((n - 1) // stride + 1 for n in size)
    return LayerSpec("conv", 2, cin, cout, (3, 3), (stride,) * 2, (1, 1), (1, 1), 1, False, size, out, **kw)


@pytest.mark.parametrize("name, spec", [
    ("bin3x3", spec2d(16, 32, 2)), ("bin3x3_g2", spec2d(16, 16)), ("birealbin3x3", spec2d(16, 16)),
    ("bin5x5", spec2d(8, 8, size=(7, 9))),
])
def test_registry_counts_match_the_built_layer(name, spec):
    op = get_op(name)
    assert op.fits(spec) is None
    orig = nn.Conv2d(spec.in_ch, spec.out_ch, 3, spec.stride, 1, bias=False)
    module = op.build(spec, orig)
    x = torch.randn(2, spec.in_ch, *spec.in_size)
    assert tuple(module(x).shape) == (2, spec.out_ch, *spec.out_size)
    groups = 2 if name.endswith("_g2") else 1
    k = 5 if "5x5" in name else 3
    n_bops = bops(math.prod(spec.out_size), spec.out_ch, spec.in_ch // groups, k * k)
    assert op.macs(spec) == binary_macs(n_bops) == -(-n_bops // 64) == count_macs(module, x)
    assert op.params(spec) == count_params(module) == spec.out_ch * spec.in_ch // groups * k * k   # thresholds: buffers
    if k == 3 and groups == 1:         # warm start: the real layer's weights
        conv = module.conv if isinstance(module, BiRealBlock) else module
        assert torch.equal(conv.weight, orig.weight)


def test_binary_operators_refuse_first_last_and_unequal_shortcuts():
    assert "first layer" in get_op("bin3x3").fits(spec2d(3, 16, reads_input=True))
    assert "last layer" in get_op("bin3x3").fits(spec2d(16, 16, writes_output=True))
    assert "Bi-Real" in get_op("birealbin3x3").fits(spec2d(16, 32))
    assert "Bi-Real" in get_op("birealbin3x3").fits(spec2d(16, 16, stride=2))
    assert "even" in get_op("bin2x2").fits(spec2d(16, 16))


def test_supernet_with_bin3x3_expands_derives_and_trains():
    torch.manual_seed(0)
    net = TinyNet(width=16)
    x = torch.randn(4, 3, 16, 16)
    supernet = lwdc.expand(net, x, ops=["original", "bin3x3", "birealbin3x3", "skip"])
    layers = supernet.choice_layers()
    assert "stem.0" not in layers or "bin3x3" not in layers["stem.0"].op_names     # the first layer stays real
    assert "bin3x3" in layers["conv1"].op_names and "birealbin3x3" in layers["conv1"].op_names
    assert "birealbin3x3" not in layers["down.0"].op_names                          # 16 -> 32, stride 2
    supernet.set_choices({"conv1": "bin3x3", "conv2": "birealbin3x3", "down.0": "bin3x3"})
    supernet.train()(x)                       # a training batch sets the binary branches' thresholds
    plain = lwdc.derive(supernet)
    assert isinstance(plain.conv1, BinaryConv2d) and isinstance(plain.conv2, BiRealBlock)
    assert plain.conv1.threshold_ready and plain.conv1.threshold.abs().sum() > 0
    assert isinstance(plain.down[0], BinaryConv2d)
    assert lwdc.max_output_difference(supernet, plain, x) <= 1e-5
    before = plain.conv1.weight.detach().clone()
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    plain.train()
    F.cross_entropy(plain(x), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    assert not torch.equal(before, plain.conv1.weight)


class BinNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = BinaryConv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.res = BiRealBlock(8, 3, padding=1, bias=True)
        self.sig = BinaryConv1d(8, 4, 3, padding=1, bias=True)
        self.head = nn.Linear(4 * 8, 2)

    def forward(self, x):
        x = self.res(self.bn(self.body(self.stem(x))))
        return self.head(self.sig(x.mean(2)).flatten(1))


def test_architecture_description_keeps_binary_layers():
    torch.manual_seed(0)
    net = BinNet().eval()
    rebuilt = build(describe(net))
    rebuilt.load_state_dict(net.state_dict())
    rebuilt.eval()
    kinds = {type(m).__name__ for m in rebuilt.modules()}
    assert {"BinaryConv2d", "BinaryConv1d", "BiRealBlock"} <= kinds
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(net(x), rebuilt(x))
    assert flash_bytes(rebuilt) == flash_bytes(net)          # the Bi-Real block is still one (its BatchNorm priced)


@pytest.mark.slow
def test_a_flash_target_search_picks_binary_layers_end_to_end(tmp_path):
    """compress -> run folder -> rebuilt model -> int8 C: the chosen binary layers survive every step, and the
    flash the search priced is what the C export writes."""
    from lwdc.export import export_c
    from conftest import batches, quadrant_data

    torch.manual_seed(0)
    x, y = quadrant_data(256)
    train, val = batches(x[:192], y[:192]), batches(x[192:], y[192:])
    result = lwdc.compress(TinyNet(width=32), train, val, ops="original,bin3x3,birealbin3x3",
                           budgets={"flash": "0.25x"}, warmup_epochs=1, search_epochs=2, finetune_epochs=1,
                           progress=False, run_dir=tmp_path / "run", log=lambda s: None)
    assert "bin3x3" in result.choices.values() or "birealbin3x3" in result.choices.values()
    model = lwdc.Run.open_finished(tmp_path / "run").load_model().eval()
    assert any(isinstance(m, BinaryConv2d) and m.threshold_ready for m in model.modules())
    export = export_c(model, x[:8], tmp_path / "c", int8=True, calib=x[:64])
    assert export.summary["verified"]["int8_matches_reference"]
    assert export.summary["flash_bytes"] == flash_bytes(model) == flash_bytes(result.model)
