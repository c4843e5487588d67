"""expand: what it replaces, what it leaves alone (and says why), and what it refuses."""
import pytest
import torch
from torch import nn

from lwdc.ops import UnknownOperatorError
from lwdc.space import ChoiceLayer, ExpansionError, expand

from conftest import TinyNet


def test_expands_every_conv_and_keeps_user_model(tiny_net):
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    x = torch.randn(2, 3, 16, 16)
    supernet = expand(tiny_net, x, "default")
    assert set(supernet.choice_layers()) == {"stem.0", "conv1", "conv2", "down.0"}
    assert not any(isinstance(m, ChoiceLayer) for m in tiny_net.modules())
    assert all(torch.equal(before[k], v) for k, v in tiny_net.state_dict().items())
    assert supernet.output_shape == (2, 4)


def test_candidates_fit_and_are_lighter(tiny_net):
    supernet = expand(tiny_net, torch.randn(1, 3, 16, 16), "paper")
    stem = supernet.choice_layers()["stem.0"]          # 3 -> 8 channels: no groups, no pooling
    assert "conv3x3_g2" not in stem.op_names and "maxpool3x3" not in stem.op_names
    assert "skip" in stem.op_names                     # zero-pads 3 -> 8
    down = supernet.choice_layers()["down.0"]
    assert down.op_names[0] == "original" and "avgpool3x3" not in down.op_names


def test_conv1d_models_expand():
    net = TinyNet(dims=1)
    supernet = expand(net, torch.randn(2, 3, 33), "default")
    assert len(supernet.choice_layers()) == 4
    supernet.eval()
    assert supernet(torch.randn(2, 3, 33)).shape == (2, 4)


class Awkward(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.peeked = nn.Conv2d(8, 8, 3, padding=1)
        self.valid = nn.Conv2d(8, 8, 3)               # no padding: no candidate keeps its size
        self.unused = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = self.shared(self.shared(self.a(x)))
        x = self.peeked(x) * self.peeked.weight.mean()      # reads the layer's weight outside its forward
        x = nn.functional.conv2d(x, torch.ones(8, 8, 1, 1) / 8)
        x = self.valid(x)
        return self.head(x.mean((2, 3)))


def test_leaves_alone_what_it_cannot_expand_with_reasons():
    supernet = expand(Awkward(), torch.randn(1, 3, 12, 12), "default")
    reasons = {s.name: s.reason for s in supernet.skipped}
    assert set(supernet.choice_layers()) == {"a"}
    assert "called 2 times" in reasons["shared"]
    assert "not called" in reasons["unused"]
    assert "breaks the model's forward" in reasons["peeked"] and "weight" in reasons["peeked"]
    assert "fewer than two candidates" in reasons["valid"]
    assert "torch.nn.functional" in reasons["<functional>"]
    supernet.train()
    assert supernet(torch.randn(2, 3, 12, 12)).shape == (2, 2)


def test_nothing_to_expand_is_a_clear_error():
    with pytest.raises(ExpansionError, match="nothing to expand.*no Conv1d/Conv2d"):
        expand(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.randn(1, 3, 2, 2))


class ShapeDependent(nn.Module):
    """Its forward branches on a channel count that expansion would change."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y.flatten(1) if bool((y[:, 3:] == 0).all()) else y.mean((2, 3))


def test_output_shape_change_is_detected():
    with pytest.raises(ExpansionError, match="output shape changed"):
        expand(ShapeDependent(), torch.randn(1, 3, 8, 8), ["original", "skip"])


def test_unknown_operator_and_bad_input():
    with pytest.raises(UnknownOperatorError, match="sep{k}x{k}"):
        expand(TinyNet(), torch.randn(1, 3, 16, 16), ["original", "depthwise"])
    with pytest.raises(ExpansionError, match="example input"):
        expand(TinyNet(), torch.randn(3, 16, 16))


def test_pooling_layers_expand_when_asked():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    supernet = expand(net, torch.randn(1, 3, 16, 16), "paper", include_pooling=True)
    pool = supernet.choice_layers()["1"]
    assert pool.op_names == ["original", "avgpool3x3", "maxpool3x3", "skip"]
    assert "1" not in expand(net, torch.randn(1, 3, 16, 16), "paper").choice_layers()


def test_set_choices_validates(tiny_net):
    supernet = expand(tiny_net, torch.randn(1, 3, 16, 16), "minimal")
    supernet.set_choices({"conv1": "skip"})
    assert supernet.choices()["conv1"] == "skip"
    with pytest.raises(KeyError):
        supernet.set_choices({"nope": "skip"})
    with pytest.raises(ValueError, match="has no operator"):
        supernet.set_choices({"conv1": "sep5x5"})
