"""int8 C calling Arm's CMSIS-NN (issue 18): bit for bit lwdc's integer reference (and so lwdc's portable build)
on the host's plain-C CMSIS-NN and on an emulated Cortex-M4's DSP path; the layout plan; the named errors.

CMSIS-NN is never part of this repository: the tests use ``$LWDC_CMSIS_NN`` (a checkout) or the archive in
``../shared/third_party`` extracted to a temporary folder, and skip with the reason where neither exists."""
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lwdc.export import export_c
from lwdc.export.c import compile_library, lower, run_library
from lwdc.export.c.cmsis import assign_layouts, mapped_nodes
from lwdc.export.c.quant import run_int8
from lwdc.export.c.targets import get_target

from test_export_c import randomize_bn

THIRD_PARTY = Path(__file__).resolve().parents[2] / "shared" / "third_party"


@pytest.fixture(scope="session")
def cmsis_nn(tmp_path_factory):
    if os.environ.get("LWDC_CMSIS_NN"):
        return Path(os.environ["LWDC_CMSIS_NN"])
    archives = sorted(THIRD_PARTY.glob("cmsis-nn-*.tar.gz"))
    if not archives:
        pytest.skip("no CMSIS-NN: set LWDC_CMSIS_NN to a checkout (../shared/third_party is absent)")
    root = tmp_path_factory.mktemp("cmsis")
    with tarfile.open(archives[-1]) as tar:
        tar.extractall(root, filter="data")
    return root / "CMSIS-NN"


def separable_net() -> nn.Module:
    """Depthwise-separable blocks with a residual, a grouped and a dilated conv, a strided 1x1, max and average
    pooling (one whose padding PyTorch counts, which CMSIS-NN cannot do), a global mean, a Linear head."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.MaxPool2d(3, stride=1, padding=1))
            self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
                                    nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))
            self.grouped = nn.Sequential(nn.Conv2d(16, 24, 3, stride=2, padding=2, dilation=2, groups=4), nn.ReLU(),
                                         nn.AvgPool2d(3, stride=1, padding=1), nn.Conv2d(24, 32, 1), nn.ReLU(),
                                         nn.AvgPool2d(2))
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            x = self.stem(x)
            x = torch.relu(x + self.dw(x))
            x = self.grouped(x)
            return self.head(x.mean((2, 3)))
    return randomize_bn(Net())


def test_layouts_keep_cmsis_only_tensors_nhwc_and_the_edges_nchw():
    torch.manual_seed(0)
    net = separable_net().eval()
    graph = lower(net, torch.randn(1, 3, 16, 16))
    mapped = mapped_nodes(graph)
    assert sorted(set(mapped.values())) == ["add", "avgpool", "conv", "depthwise", "maxpool"]
    counted_pad = next(i for i, n in enumerate(graph.nodes) if n.op == "avgpool" and n.attrs["count_include_pad"]
                       and any(n.attrs["padding"]))
    assert counted_pad not in mapped                  # PyTorch's divisor counts the padding there; CMSIS-NN's not
    layouts = assign_layouts(graph, mapped)
    t = graph.tensors
    assert layouts[t[graph.input].storage] == "nchw" and layouts[t[graph.output].storage] == "nchw"
    stem_out = t[graph.nodes[1].output].storage     # the max pool's: read by the depthwise conv and the add only
    assert graph.nodes[1].op == "maxpool" and layouts[stem_out] == "nhwc"
    pooled = graph.nodes[counted_pad]                # lwdc's kernel: (C, H, W) on both sides
    assert layouts[t[pooled.inputs[0]].storage] == layouts[t[pooled.output].storage] == "nchw"
    gap = next(n for n in graph.nodes if n.op == "gap")   # rescales to its own scale: lwdc's kernel
    assert layouts[t[gap.inputs[0]].storage] == "nchw"


def test_cmsis_nn_needs_int8_and_a_checkout(tmp_path):
    net, x = separable_net(), torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match="int8"):
        export_c(net, x, tmp_path / "a", kernels="cmsis-nn", cmsis_nn=tmp_path)
    with pytest.raises(ValueError, match="not a CMSIS-NN checkout"):
        export_c(net, x, tmp_path / "b", int8=True, calib=x, kernels="cmsis-nn", cmsis_nn=tmp_path)
    with pytest.raises(ValueError, match="needs the CMSIS-NN source"):
        export_c(net, x, tmp_path / "c", int8=True, calib=x, kernels="cmsis-nn")
    with pytest.raises(ValueError, match="kernels must be one of"):
        export_c(net, x, tmp_path / "d", int8=True, calib=x, kernels="fast")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("target", ["host", "cortex-m4"])
def test_cmsis_nn_build_equals_the_integer_reference_and_the_portable_build(target, cmsis_nn, tmp_path):
    if not get_target(target).can_run():
        pytest.skip(f"needs {get_target(target).description}")
    torch.manual_seed(0)
    net = separable_net()
    x = torch.randn(6, 3, 16, 16)
    cm = export_c(net, x[:3], tmp_path / "cm", int8=True, calib=x, kernels="cmsis-nn", cmsis_nn=cmsis_nn,
                  target=target)
    assert cm.summary["verified"]["int8_matches_reference"] is True      # checked inside export_c
    k = cm.summary["kernels"]
    assert (k["name"], k["depthwise"], k["adds"], k["pooling"]) == ("cmsis-nn", 1, 1, 2) and k["convolutions"] == 6
    assert k["portable_nodes"] == 2                  # the average pool whose padding PyTorch counts, the global mean
    assert cm.summary["peak_ram_bytes"] == cm.summary["arena_bytes"] + cm.summary["scratch_bytes"] + \
        k["stage_bytes"] + 4 * -(-k["context_bytes"] // 4)
    text = (tmp_path / "cm" / "model.c").read_text()
    assert "arm_depthwise_conv_wrapper_s8" in text and "arm_elementwise_add_s8" in text
    assert "arm_max_pool_s8" in text and "arm_avgpool_s8" in text and "lw_avgpool_q8" in text
    assert "CMSIS_NN_USE_SINGLE_ROUNDING" in text and "arm_convolve_s8(" in text     # the grouped conv
    portable = export_c(net, x[:3], tmp_path / "p", int8=True, calib=x, target=target)
    xq = portable.qgraph.qp(portable.graph.input).quantize(x.reshape(len(x), -1).numpy())
    outs = []
    for folder, lib in ((tmp_path / "cm", cmsis_nn), (tmp_path / "p", None)):
        exe = compile_library(folder, "model", target=target, cmsis_nn=lib)
        outs.append(run_library(exe, xq, 10, int8=True, target=target))
    want = run_int8(portable.qgraph, xq.reshape(len(x), 3, 16, 16)).reshape(len(x), -1)
    assert np.array_equal(outs[0], want) and np.array_equal(outs[1], want)
    if target != "host":
        linked = cm.summary["linked"]
        assert "CMSIS-NN" in linked["measured"] and linked["const_bytes"] >= cm.summary["flash_bytes"]


def test_a_refused_cmsis_nn_call_fails_the_program_instead_of_returning_garbage(cmsis_nn, tmp_path):
    import re

    from lwdc.export.c import CompilerError
    torch.manual_seed(0)
    net, x = separable_net(), torch.randn(2, 3, 16, 16)
    cm = export_c(net, x, tmp_path / "cm", int8=True, calib=x, kernels="cmsis-nn", cmsis_nn=cmsis_nn, verify=False)
    source = tmp_path / "cm" / "model.c"
    text, n = re.subn(r"static int32_t lw_ctx\[\d+\];", "static int32_t lw_ctx[1];", source.read_text())
    assert n == 1
    source.write_text(text)                       # the kernels' scratch now too small for any 3x3 conv
    exe = compile_library(tmp_path / "cm", "model", cmsis_nn=cmsis_nn)
    xq = cm.qgraph.qp(cm.graph.input).quantize(x.reshape(2, -1).numpy())
    with pytest.raises(CompilerError, match="refused its arguments"):
        run_library(exe, xq, 10, int8=True)
