"""The systolic-array model: hand-worked cycle counts, SCALE-Sim's figures, and what depthwise layers cost."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lwdc.costs import build_cost_table, get_cost_model
from lwdc.costs.systolic import ConvShape, SystolicArray, SystolicCost, conv_shapes, estimate
from lwdc.ops import get_op
from lwdc.space import expand


def conv(cin, cout, k, size, stride=1, groups=1) -> ConvShape:
    out = (size - 1) // stride + 1            # "same" padding
    return ConvShape(cin, cout, groups, (k, k), (size, size), (out, out))


def test_hand_worked_tiny_layer():
    # 1x1 conv 4->4 on a 2x2 image, 4x4 array. WS: the 4x4 weights fill the array in one fold; 4 weight-load
    # cycles, then 4 pixels stream with a skew of 3 rows and drain through 3 columns: 4 + 4 + 3 + 3 = 14 cycles.
    layer = ConvShape(4, 4, 1, (1, 1), (2, 2), (2, 2))
    ws = estimate(layer, SystolicArray(4, 4, "ws"))
    assert (ws.cycles, ws.folds, ws.macs) == (14, 1, 64)
    assert ws.utilisation == pytest.approx(64 / (14 * 16))
    assert ws.mapping == pytest.approx(1.0)       # every PE holds a weight while the pixels stream
    # OS: no weight load: 4 window elements stream with skews of 3 and 3: 10 cycles.
    assert estimate(layer, SystolicArray(4, 4, "os")).cycles == 10


def test_hand_worked_folds_and_groups():
    # 3x3 conv 16->16 on 8x8, 32x32 array, WS: window 144 -> ceil(144/32) = 5 row folds of 64+32+64-2 = 158.
    assert estimate(conv(16, 16, 3, 8)).cycles == 5 * 158
    # Depthwise: 16 groups, each a 9x1 GEMM in one fold of 158 cycles, one after another.
    dw = estimate(conv(16, 16, 3, 8, groups=16))
    assert (dw.cycles, dw.folds, dw.macs) == (16 * 158, 16, 64 * 16 * 9)
    # Grouped g=4: window 36 -> 2 row folds per group; 4 filters per group -> 1 column fold.
    assert estimate(conv(16, 16, 3, 8, groups=4)).cycles == 4 * 2 * 158
    # RiSA packs the 16 single-column channels side by side: one fold.
    assert estimate(conv(16, 16, 3, 8, groups=16), SystolicArray(risa=True)).cycles == 158
    # ... but only 32 channels fit across 32 columns: 64 channels take two folds.
    assert estimate(conv(64, 64, 3, 8, groups=64), SystolicArray(risa=True)).folds == 2


# SCALE-Sim 3.0.0 (pip install scalesim; numpy<2), 32x32 array, 64 KiB SRAMs, topology with pre-padded inputs;
# depthwise as SCALE-Sim's "DP" layer (one 1-channel layer per channel, figures per channel).
# (layer, ws total cycles, os total cycles, ws SRAM (ifmap, filter) reads, os SRAM (ifmap, filter) reads)
SCALE_SIM = [
    (conv(16, 16, 3, 8), 789, 411, (9216, 2304), (9216, 4608)),
    (conv(64, 64, 3, 8), 5687, 2551, (73728, 36864), (73728, 73728)),
    (conv(16, 32, 3, 32, stride=2), 1749, 1647, (36864, 4608), (36864, 36864)),
    (ConvShape(32, 64, 1, (1, 1), (16, 16), (16, 16)), 699, 1503, (16384, 2048), (16384, 16384)),
    (conv(1, 1, 3, 8), 157, 141, (576, 9), (576, 18)),
]


@pytest.mark.parametrize("layer,ws,os_,ws_reads,os_reads", SCALE_SIM)
def test_matches_scale_sim(layer, ws, os_, ws_reads, os_reads):
    for dataflow, cycles, reads in (("ws", ws, ws_reads), ("os", os_, os_reads)):
        e = estimate(layer, SystolicArray(dataflow=dataflow))
        assert e.cycles - 1 == cycles                 # SCALE-Sim counts from cycle 0
        assert (e.sram_reads["ifmap"], e.sram_reads["filter"]) == reads


def test_depthwise_under_uses_the_array_and_risa_raises_it():
    """A ResNet-20 stage-2 layer (32 channels, 16x16): the standard 3x3 conv against its depthwise 3x3."""
    for dataflow in ("ws", "os"):
        std = estimate(conv(32, 32, 3, 16), SystolicArray(dataflow=dataflow))
        dw = estimate(conv(32, 32, 3, 16, groups=32), SystolicArray(dataflow=dataflow))
        risa = estimate(conv(32, 32, 3, 16, groups=32), SystolicArray(dataflow=dataflow, risa=True))
        assert dw.macs * 32 == std.macs
        assert dw.utilisation < std.utilisation / 10
        assert risa.utilisation > 10 * dw.utilisation
        assert risa.cycles < dw.cycles
    # WS: the standard layer keeps 9 row folds of a full 32 x 32 array busy while 256 pixels stream; the
    # depthwise one holds 9 of 1,024 PEs per fold; RiSA fills 9 rows of every column.
    ws_std = estimate(conv(32, 32, 3, 16))
    ws_dw = estimate(conv(32, 32, 3, 16, groups=32))
    ws_risa = estimate(conv(32, 32, 3, 16, groups=32), SystolicArray(risa=True))
    assert ws_std.mapping == pytest.approx(1.0)
    assert ws_dw.mapping == pytest.approx(9 / 1024)
    assert ws_risa.mapping == pytest.approx(9 / 32)


@settings(max_examples=60, deadline=None)
@given(cin=st.integers(1, 80), mult=st.integers(1, 3), k=st.sampled_from([1, 3, 5]), size=st.integers(1, 20),
       rows=st.integers(1, 40), cols=st.integers(1, 40), depthwise=st.booleans(), dataflow=st.sampled_from(["ws", "os"]))
def test_invariants(cin, mult, k, size, rows, cols, depthwise, dataflow):
    groups = cin if depthwise else 1
    layer = conv(cin, cin * mult, k, size, groups=groups)
    base = estimate(layer, SystolicArray(rows, cols, dataflow))
    risa = estimate(layer, SystolicArray(rows, cols, dataflow, risa=True))
    assert base.macs == layer.in_ch * layer.out_ch // groups * k * k * size * size
    assert 0 < base.utilisation <= base.mapping <= 1
    assert risa.cycles <= base.cycles and risa.macs == base.macs
    assert base.sram_reads["filter"] >= layer.macs // layer.pixels    # every weight read at least once
    # Never fewer cycles than a perfectly fed array would need.
    assert base.cycles >= math.ceil(base.macs / (rows * cols))


def test_linear_and_modules_are_priced_from_a_forward_pass():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    shapes = conv_shapes(net, torch.zeros(2, 3, 10, 10))
    assert [c.name for c in shapes] == ["0", "2", "5"]
    assert [c.shape.kind for c in shapes] == ["conv3x3", "depthwise3x3", "linear"]
    assert shapes[2].shape.macs == 32 and shapes[2].in_shape == (8,) and shapes[1].in_shape == (8, 10, 10)
    cost = SystolicCost(rows=8, cols=8)
    assert cost.network_cost(net, torch.zeros(1, 3, 10, 10)) == sum(estimate(c.shape, cost.array).cycles for c in shapes)


def test_cost_table_on_a_supernet(tiny_net):
    example = torch.randn(1, 3, 16, 16)
    supernet = expand(tiny_net, example, ["original", "sep3x3", "conv1x1", "skip"])
    model = get_cost_model("systolic:8x8")
    table = build_cost_table(model, supernet, tiny_net, example)
    assert table.fixed >= 0 and table.chosen_ratio(supernet) == pytest.approx(1.0)
    for name, layer in supernet.choice_layers().items():
        costs = dict(zip(layer.op_names, table.layer_costs[name].tolist()))
        assert costs["skip"] == 0
        s = layer.spec
        dw = ConvShape(s.in_ch, s.in_ch, s.in_ch, (3, 3), s.in_size, s.out_size)
        pw = ConvShape(s.in_ch, s.out_ch, 1, (1, 1), s.out_size, s.out_size)
        assert costs["sep3x3"] == estimate(dw, model.array).cycles + estimate(pw, model.array).cycles
        # The separable branch saves a smaller share of cycles than of MACs: its depthwise half under-uses the array.
        macs = {op: get_op(op).macs(s) for op in ("sep3x3", "original")}
        assert costs["sep3x3"] / costs["original"] > 2 * macs["sep3x3"] / macs["original"]


def test_spec_strings():
    m = get_cost_model("systolic:16x8:os:risa")
    assert (m.array.rows, m.array.cols, m.array.dataflow, m.array.risa) == (16, 8, "os", True)
    assert get_cost_model("systolic").array == SystolicArray()
    assert get_cost_model("systolic", ifmap_sram_kb=8).array.ifmap_sram_kb == 8
    with pytest.raises(ValueError, match="RxC"):
        get_cost_model("systolic:big")
    with pytest.raises(ValueError, match="dataflow"):
        SystolicArray(dataflow="is")
    with pytest.raises(ValueError, match="takes no options"):
        get_cost_model("macs:8")
    with pytest.raises(ValueError, match="unknown cost model"):
        get_cost_model("energy")


def test_dram_traffic_grows_when_tensors_do_not_fit():
    layer = conv(64, 64, 3, 32)               # 64 KiB input, 64 KiB output at one byte a word
    roomy = estimate(layer, SystolicArray(ifmap_sram_kb=1024, ofmap_sram_kb=1024))
    tight = estimate(layer, SystolicArray(ifmap_sram_kb=16, ofmap_sram_kb=16))
    assert roomy.dram_bytes == {"ifmap": 64 * 1024, "filter": 64 * 64 * 9, "ofmap": 64 * 1024}
    assert tight.dram_bytes["ifmap"] == 2 * roomy.dram_bytes["ifmap"]      # re-streamed per column fold (64/32)
    assert tight.dram_bytes["ofmap"] == roomy.dram_bytes["ofmap"] * (1 + 2 * (18 - 1))  # partial sums spilled
    assert tight.cycles == roomy.cycles
