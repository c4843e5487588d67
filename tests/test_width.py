"""Width operators: a layer reading part of its input channels, and the layer making them cut to match.

Checked against independent counts (torch's FlopCounterMode, parameter counts, the C export's flash bytes) and
against the supernet's own output: the derived network must compute the same thing with fewer channels.
"""
import itertools
import random

import pytest
import torch
from torch import nn

from lwdc import compress
from lwdc.costs import build_cost_table, get_cost_model
from lwdc.derivation import derive, max_output_difference
from lwdc.methods.lwdc import layer_rows
from lwdc.models import create_model
from lwdc.ops import ReadChannels, UnknownOperatorError, get_op, keep_outputs, width_keep
from lwdc.profiling import count_macs, count_params
from lwdc.space import Chain, expand

from conftest import TinyNet

WIDTHS = ("width75", "width50", "width25")
PRODUCERS = ("original", "conv3x3_g2", "conv3x3_g4", "conv1x1", "sep3x3", "skip")


def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-looking BatchNorms, so a channel cut in the wrong place shows in the output."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model


def test_chains_are_the_insides_of_residual_blocks():
    supernet = expand(create_model("resnet20"), torch.zeros(1, 3, 32, 32), "width")
    assert set(supernet.chains) == {f"layer{s}.{b}.conv2" for s in (1, 2, 3) for b in range(3)}
    assert supernet.chains["layer2.1.conv2"] == Chain("layer2.1.conv1", ("layer2.1.bn1",))
    layers = supernet.choice_layers()
    # the stem feeds a block and its shortcut, a block's output feeds the next: no width operator there
    for name in ("conv1", "layer1.0.conv1", "layer2.0.shortcut.0"):
        assert not any(op.startswith("width") for op in layers[name].op_names), name
    assert layers["layer3.2.conv2"].op_names[-3:] == list(WIDTHS)
    assert expand(create_model("resnet20"), torch.zeros(1, 3, 32, 32), "default").chains == {}


def test_no_width_operator_where_the_layer_making_its_input_is_left_as_it_is():
    """A reflect-padded conv1 is not expanded (candidates pad with zeros). Width operators on conv2 would have had
    derivation cut conv1 while the cost table and the report's rows, which see only choice layers, counted conv1
    whole: the derived model had 0.54x the MACs the search was told 0.77x. They are no longer offered there."""
    class Reflect(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.conv1 = nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect")
            self.bn1, self.relu = nn.BatchNorm2d(16), nn.ReLU()
            self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))

        def forward(self, x):
            return self.head(self.conv2(self.relu(self.bn1(self.conv1(self.stem(x))))))

    supernet = expand(Reflect(), torch.zeros(1, 3, 16, 16), "width")
    layers = supernet.choice_layers()
    assert "conv1" not in layers and "conv2" in layers and supernet.chains == {}
    assert not any(op.startswith("width") for op in layers["conv2"].op_names)
    assert "original" in layers["conv2"].op_names and "conv3x3_g2" in layers["conv2"].op_names


def test_a_model_tracing_cannot_follow_gets_no_width_operator():
    class Branchy(TinyNet):
        def forward(self, x):
            x = self.stem(x)
            if float(x.mean()) > 1e9:          # data-dependent: torch.fx cannot trace it
                x = x * 2
            x = self.relu2(x + self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
            return self.head(self.down(x))

    supernet = expand(Branchy(), torch.zeros(1, 3, 16, 16), "width")
    assert supernet.chains == {}
    assert not any(op.startswith("width") for l in supernet.choice_layers().values() for op in l.op_names)
    traced = expand(TinyNet(), torch.zeros(1, 3, 16, 16), "width")
    assert traced.chains == {"conv2": Chain("conv1", ("bn1",))}


def test_the_kept_channels_are_the_heaviest_of_each_block_and_balanced():
    weight = torch.zeros(4, 16, 3, 3)
    heavy = [1, 2, 4, 7, 9, 10, 13, 15]
    weight[:, heavy] = torch.tensor(heavy, dtype=torch.float32)[:, None, None] + 1   # later channels heavier
    assert width_keep(weight, 16, 8).tolist() == heavy       # two per block of four
    assert width_keep(weight, 16, 4).tolist() == [2, 7, 10, 15]
    assert width_keep(None, 16, 12).tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14]
    assert width_keep(None, 8, 6).tolist() == [0, 1, 2, 4, 5, 6]      # 6 of 8: balanced over two blocks
    rising = torch.arange(6.0)[None, :, None, None].expand(4, 6, 3, 3)
    assert width_keep(rising, 6, 3).tolist() == [3, 4, 5]   # 6 channels do not split in blocks of 4: one block
    # a grouped producer can be cut only to channels balanced over its groups
    conv = nn.Conv2d(16, 16, 3, padding=1, groups=2)
    assert keep_outputs(conv, torch.tensor([0, 1, 8, 9])).groups == 2
    assert keep_outputs(conv, torch.tensor([0, 1, 2, 9])) is None
    assert keep_outputs(nn.Identity(), torch.tensor([0, 1])) is None


@pytest.mark.parametrize("producer", PRODUCERS)
def test_derivation_cuts_the_producer_and_computes_what_the_supernet_does(producer):
    torch.manual_seed(0)
    model = _randomise_norms(create_model("resnet20", width=0.5))
    supernet = expand(model, torch.zeros(1, 3, 32, 32), "width")
    x = torch.randn(3, 3, 32, 32)
    for width, block in zip(WIDTHS, ("layer1.1", "layer2.2", "layer3.0")):
        supernet.set_choices({f"{block}.conv1": producer, f"{block}.conv2": width})
        derived = derive(supernet)
        assert max_output_difference(supernet, derived, x) <= 1e-5
        assert all(type(m).__module__.startswith("torch.nn") for m in derived.modules() if m is not derived
                   and not type(m).__module__.startswith("lwdc.models"))
        reader = supernet.net.get_submodule(f"{block}.conv2").branches[-3 + WIDTHS.index(width)]
        consumer = derived.get_submodule(f"{block}.conv2")
        norm = derived.get_submodule(f"{block}.bn1")
        kept = len(reader.keep)
        # an identity cannot be cut, nor a 4-group convolution to 6 of 8 channels (stage 1 at width 0.5, 75%):
        # the consumer then reads every channel, zero on the unread ones
        if producer == "skip" or (producer == "conv3x3_g4" and kept % 4):
            assert consumer.in_channels == reader.in_ch and norm.num_features == reader.in_ch
            unread = sorted(set(range(reader.in_ch)) - set(reader.keep.tolist()))
            assert consumer.weight[:, unread].abs().sum() == 0
        else:
            assert consumer.in_channels == norm.num_features == kept < reader.in_ch
        supernet.set_choices(None)


@pytest.mark.parametrize("cost", ["macs", "params", "flash", "flash:float32"])
def test_the_cost_table_prices_cut_producers_as_an_independent_count_does(cost):
    """Random operator choices on ResNet-20: the table's ratio equals torch's FLOP counter, a parameter count
    or the C export's flash bytes of the derived network, to the last unit."""
    model = create_model("resnet20", width=0.5)
    example = torch.zeros(1, 3, 32, 32)
    supernet = expand(model, example, "width")
    table = build_cost_table(get_cost_model(cost), supernet, model, example)
    assert len(table.couplings) == 9
    count = {"macs": lambda m: count_macs(m, example), "params": count_params,
             "flash": lambda m: get_cost_model(cost).network_cost(m, example)}[cost.split(":")[0]]
    draws = random.Random(0)
    layers = supernet.choice_layers()
    for _ in range(6):
        picks = {n: draws.randrange(len(l.op_names)) for n, l in layers.items()}
        for name in supernet.chains:           # make sure width operators and cut producers are drawn
            picks[name] = len(layers[name].op_names) - 1 - draws.randrange(3)
        choices = {n: layers[n].op_names[i] for n, i in picks.items()}
        derived = derive(supernet, choices)
        assert table.ratio_of(picks) == pytest.approx(count(derived) / count(model), rel=1e-9)
        if cost == "macs":      # the report's per-layer rows count a cut producer at its kept channels too
            rows = layer_rows(supernet, choices)
            rest = count(model) - sum(r["macs_before"] for r in rows)
            assert rest + sum(r["macs_after"] for r in rows) == count(derived)


def test_the_expected_cost_is_the_mean_over_every_network_and_has_a_gradient():
    """On TinyNet every combination of choices is enumerable: the bilinear objective is the exact expectation,
    and the floor is the cheapest network."""
    torch.manual_seed(0)
    net, example = TinyNet(), torch.zeros(1, 3, 16, 16)
    supernet = expand(net, example, "width")
    table = build_cost_table(get_cost_model("macs"), supernet, net, example)
    layers = supernet.choice_layers()
    for layer in layers.values():
        layer.alpha.data.normal_()
    names = list(layers)
    probs = [layers[n].probabilities().detach() for n in names]
    mean, cheapest = 0.0, float("inf")
    for combo in itertools.product(*(range(len(layers[n].op_names)) for n in names)):
        ratio = table.ratio_of(dict(zip(names, combo)))
        mean += ratio * float(torch.prod(torch.stack([p[i] for p, i in zip(probs, combo)])))
        cheapest = min(cheapest, ratio)
    expected = table.expected_ratio(supernet)
    assert float(expected.detach()) == pytest.approx(mean, rel=1e-5)
    assert table.floor_ratio() == pytest.approx(cheapest, rel=1e-9)
    expected.backward()
    assert layers["conv1"].alpha.grad.abs().sum() > 0      # the producer's gate feels the consumer's width


def test_peak_ram_refuses_width_operators_with_a_reason():
    net, example = TinyNet(), torch.zeros(1, 3, 16, 16)
    supernet = expand(net, example, "width")
    with pytest.raises(ValueError, match="peak RAM cannot yet price width operators.*drop the width operators"):
        build_cost_table(get_cost_model("ram"), supernet, net, example)


def test_compress_with_width_operators_gives_a_plain_thinner_network(quadrants):
    train, val = quadrants
    torch.manual_seed(0)
    ops = ["original", "skip", "width50", "width25"]
    result = compress(TinyNet(), train, val, ops=ops, lam=1.0, warmup_epochs=0.5, search_epochs=2,
                      finetune_epochs=1, progress=False, log=lambda s: None)
    report = result.report
    assert report["derive_max_abs_diff"] <= 1e-5
    assert report["expected_cost_ratio"]["macs"] == pytest.approx(report["after"]["macs"] / report["before"]["macs"])
    assert not any(isinstance(m, ReadChannels) for m in result.model.modules())
    if result.choices["conv2"].startswith("width") and result.choices["conv1"] != "skip":
        assert result.model.conv1.out_channels == result.model.conv2.in_channels < 8


def test_aligned_width_operators_keep_only_whole_blocks_of_channels():
    """``width-a16`` offers a width operator only where it keeps a multiple of 16 channels: none in stage 1
    (16 channels: 12, 8 or 4 kept), ``width50_a16`` alone in stage 2 (16 of 32), all three in stage 3 (48, 32, 16
    of 64). The derived network then has only multiples of 16 channels, and it still computes the supernet's
    output with the cut producer."""
    supernet = expand(create_model("resnet20"), torch.zeros(1, 3, 32, 32), "width-a16")
    layers = supernet.choice_layers()
    widths = {n: [op for op in l.op_names if op.startswith("width")] for n, l in layers.items()}
    assert all(not widths[f"layer1.{b}.conv2"] for b in range(3))
    assert all(widths[f"layer2.{b}.conv2"] == ["width50_a16"] for b in range(3))
    assert all(widths[f"layer3.{b}.conv2"] == ["width75_a16", "width50_a16", "width25_a16"] for b in range(3))
    reason = get_op("width25_a16").fits(layers["layer1.0.conv2"].spec)
    assert reason == "25% of 16 input channels keeps 4, not a multiple of 16 channels"
    torch.manual_seed(0)
    supernet = expand(_randomise_norms(create_model("resnet20")), torch.zeros(1, 3, 32, 32), "width-a16")
    supernet.set_choices({"layer2.1.conv2": "width50_a16", "layer3.2.conv2": "width25_a16"})
    derived = derive(supernet)
    assert max_output_difference(supernet, derived, torch.randn(2, 3, 32, 32)) <= 1e-5
    convs = [m for m in derived.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.out_channels % 16 == 0 and m.in_channels % 16 in (0, 3) for m in convs)
    assert derived.layer2[1].conv1.out_channels == 16 and derived.layer3[2].conv1.out_channels == 16
    x = torch.zeros(1, 3, 32, 32)
    assert count_macs(derived, x) < count_macs(create_model("resnet20"), x)


@pytest.mark.parametrize("name", ["width25_a0", "width0_a16"])
def test_an_aligned_width_operator_with_a_zero_is_refused(name):
    with pytest.raises(UnknownOperatorError, match="unknown operator"):
        get_op(name)
