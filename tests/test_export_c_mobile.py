"""The blocks of public mobile architectures (tests/mobile_blocks.py) and networks assembled from them export to
C float (against PyTorch, within the export tolerance), C int8 (bit-exact against the integer reference) and
ONNX (against onnxruntime), and their static memory plan stays near the liveness lower bound."""
import numpy as np
import pytest
import torch

from lwdc.export import export_c
from lwdc.export.c import find_compiler, lower
from lwdc.export.onnx import export_onnx

from mobile_blocks import BLOCKS, block_net, randomize, whole_networks

needs_cc = pytest.mark.skipif(find_compiler() is None, reason="no C compiler")


def inputs(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def check_c(model, tmp_path, int8: bool) -> dict:
    x, calib = inputs(4, 1), inputs(64, 2)
    result = export_c(model, x, tmp_path / ("c_int8" if int8 else "c"), int8=int8, calib=calib if int8 else None)
    verified = result.summary["verified"]
    assert verified is not None, "the C was not compiled"
    with torch.no_grad():
        scale = float(model(x).abs().max())
    if int8:
        assert verified["int8_matches_reference"] is True  # C == integer reference, every bit
        # int8 keeps the function: error well under the outputs' scale on these random-weight blocks
        assert verified["max_abs_diff_vs_pytorch_float"] < 0.25 * scale + 0.05
    else:
        assert verified["max_abs_diff_vs_pytorch"] <= verified["limit"]
        assert verified["max_abs_diff_vs_pytorch"] < 1e-4 * max(scale, 1.0)
    return result.summary


@needs_cc
@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_exports_to_c(name, int8, tmp_path):
    torch.manual_seed(0)
    check_c(randomize(block_net(name)), tmp_path, int8)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_exports_to_onnx(name, tmp_path):
    torch.manual_seed(0)
    info = export_onnx(randomize(block_net(name)), inputs(4, 1), tmp_path / "m.onnx")
    assert info["tolerance"]["within"]


def test_repvgg_branches_fold_into_one_convolution():
    torch.manual_seed(0)
    graph = lower(randomize(block_net("repvgg")), inputs(1, 0))
    convs = [n for n in graph.nodes if n.where.startswith("blocks")]
    assert [n.op for n in convs] == ["conv"] and convs[0].act == "relu"


@pytest.mark.parametrize("name", ["ghost", "shufflev2", "res2net"])
def test_channel_splits_take_no_buffer_of_their_own(name):
    """A channel range of a (C, H, W) tensor is contiguous: slices and splits are views into their source."""
    torch.manual_seed(0)
    graph = lower(randomize(block_net(name)), inputs(1, 0))
    views = [t for t in graph.tensors.values() if t.storage != t.name]
    assert views, "no view found"
    assert not [n.op for n in graph.nodes if n.op == "slice"], "a channel slice was copied"


@needs_cc
@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
@pytest.mark.parametrize("name", sorted(whole_networks()))
def test_whole_network_exports_with_peak_ram_near_the_liveness_bound(name, int8, tmp_path):
    torch.manual_seed(0)
    summary = check_c(randomize(whole_networks()[name]), tmp_path, int8)
    assert summary["lower_bound_bytes"] <= summary["arena_bytes"] <= 1.25 * summary["lower_bound_bytes"]
    assert summary["arena_bytes"] < summary["naive_bytes"]
    assert np.isclose(summary["arena_over_lower_bound"], summary["arena_bytes"] / summary["lower_bound_bytes"],
                      atol=1e-3)


@pytest.mark.parametrize("name", sorted(whole_networks()))
def test_whole_network_exports_to_onnx(name, tmp_path):
    torch.manual_seed(0)
    info = export_onnx(randomize(whole_networks()[name]), inputs(4, 1), tmp_path / "m.onnx")
    assert info["tolerance"]["within"] and info["max_abs_diff_vs_pytorch"] <= info["tolerance"]["limit"]
