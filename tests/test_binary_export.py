"""Binary layers exported (issue 19): ONNX keeps a float sign + conv equivalent that onnxruntime runs like PyTorch;
the C library runs them bit-packed, equal bit for bit to the Python references (float and int8, host and an
emulated Cortex-M4), and the flash cost model counts exactly the bytes the C export writes."""
import numpy as np
import pytest
import torch
from torch import nn

from lwdc.binary import BinaryConv1d, BinaryConv2d, BiRealBlock
from lwdc.costs.flash import binary_flash_bytes, flash_bytes
from lwdc.export.c import compile_library, export_c, find_compiler, run_float, run_int8, run_library
from lwdc.export.c.ops.binary import _sign_dot, bit_dot, pack_activation_bits, pack_weight_bits, popcount
from lwdc.export.c.targets import get_target

from test_export_c import randomize_bn

needs_cc = pytest.mark.skipif(find_compiler() is None, reason="no C compiler")
M4 = get_target("cortex-m4")
needs_m4 = pytest.mark.skipif(not M4.can_run(), reason="needs arm-none-eabi-gcc, newlib and qemu-system-arm "
                              "(apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)")


class BinBody(nn.Module):
    """Real stem, binary body (40 channels: words not full; groups; stride; a Bi-Real block; a bias; a BatchNorm
    with negative scales), real head."""

    def __init__(self, dims: int = 2):
        super().__init__()
        conv, binary = (nn.Conv2d, BinaryConv2d) if dims == 2 else (nn.Conv1d, BinaryConv1d)
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        pool = nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool1d
        self.stem = nn.Sequential(conv(3, 40, 3, padding=1), bn(40), nn.ReLU())
        self.b1 = binary(40, 40, 3, padding=1)
        self.bn1 = bn(40)
        self.b2 = BiRealBlock(40, 3, padding=2, dilation=2, dims=dims)
        self.bn2 = bn(40)
        self.b3 = binary(40, 16, 3, stride=2, padding=1, groups=2, bias=True)
        self.bn3 = bn(16)
        self.head = nn.Sequential(pool(1), nn.Flatten(), nn.Linear(16, 3))

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.bn1(self.b1(x)))
        x = self.bn2(self.b2(x))
        return self.head(torch.relu(self.bn3(self.b3(x))))


class BinStack(nn.Module):
    """Binary from the input to the output (a BatchNorm folded into each, a Bi-Real add and its affine between):
    nothing real the C computes in another order, so the float build must equal the reference bit for bit."""

    def __init__(self, dims: int = 2):
        super().__init__()
        binary = BinaryConv2d if dims == 2 else BinaryConv1d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        self.b1, self.bn1 = binary(3, 96, 3, padding=1), bn(96)           # 96 x 9 bits: popcounts above 255
        self.bx, self.bnx = binary(96, 96, 3, padding=1, groups=3), bn(96)  # reads b1's output as packed bits
        self.b2, self.bn2 = BiRealBlock(96, 3, padding=2, dilation=2, dims=dims), bn(96)
        # 5x5 over 2 words a group: 50 words per dot (2-D), not a multiple of 3: every path of the popcount loop
        self.b3, self.bn3 = binary(96, 6, 5, stride=2, padding=2, groups=2, bias=True), bn(6)

    def forward(self, x):
        x = torch.relu(self.bn1(self.b1(x)))
        x = self.bnx(self.bx(x))
        return self.bn3(self.b3(self.bn2(self.b2(x))))


def trained_looking(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """Thresholds set by a training batch, BatchNorm statistics randomised, some folded scales negative."""
    with torch.no_grad():
        net.train()(x)
    net = randomize_bn(net)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.weight[1::3] *= -1          # negative folded scales: the int8 build flips those weight bits
    return net.eval()


def sample(dims: int, n: int = 6) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(n, 3, *((9, 10) if dims == 2 else (23,)))


def binbody(dims: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return trained_looking(BinBody(dims), sample(dims, 16))


def binstack(dims: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return trained_looking(BinStack(dims), sample(dims, 16))


# ------------------------------------------------------------------------------------------- bit-level reference
def test_weight_and_activation_bits_are_laid_out_as_documented():
    w = np.ones((2, 40, 1, 2), np.float32)
    w[0, 0, 0, 0] = w[0, 33, 0, 0] = w[1, 39, 0, 1] = -1
    words = pack_weight_bits(w)                                   # (O, KH, KW, NW)
    assert words.shape == (2, 1, 2, 2)
    assert words[0, 0, 0].tolist() == [1, 2] and words[1, 0, 1].tolist() == [0, 1 << 7]
    assert words[0, 0, 1].tolist() == [0, 0]
    neg = np.zeros((4, 1, 2), bool)
    neg[1, 0, 1] = neg[3, 0, 1] = True                            # 2 groups of 2 channels
    assert pack_activation_bits(neg, 2).tolist() == [[[[0], [0]], [[2], [2]]]]
    assert popcount(np.array([0, 1, 0xFFFFFFFF, 0x80000001], np.uint32)).tolist() == [0, 1, 32, 2]


@pytest.mark.parametrize("cin, cout, k, stride, pad, dil, groups", [
    (40, 8, 3, 1, 1, 1, 1), (70, 6, 3, 2, 1, 1, 2), (32, 4, 5, 1, 4, 2, 1), (9, 3, 1, 1, 0, 1, 1)])
def test_packed_xnor_popcount_equals_the_sign_convolution(cin, cout, k, stride, pad, dil, groups):
    g = torch.Generator().manual_seed(cin)
    x = torch.randn(1, cin, 7, 6, generator=g)
    x[0, 0] = 0.0
    w = np.where(torch.randn(cout, cin // groups, k, k, generator=g).numpy() >= 0, 1.0, -1.0).astype(np.float32)
    attrs = dict(stride=(stride, stride), padding=(pad, pad), dilation=(dil, dil), groups=groups)
    fast = _sign_dot(x < 0, w, attrs)[0].to(torch.int64).numpy()
    bits = bit_dot((x < 0)[0].numpy(), pack_weight_bits(w), cin // groups, attrs["stride"], attrs["padding"],
                   attrs["dilation"], groups)
    assert np.array_equal(fast, bits)


# -------------------------------------------------------------------------------------------------------- C, host
def c_outputs(export, x: torch.Tensor, target: str = "host") -> np.ndarray:
    exe = compile_library(export.directory, export.name, target=target)
    size = int(np.prod(export.graph.output_shape))
    if export.int8:
        xq = export.qgraph.qp(export.graph.input).quantize(x.numpy().reshape(len(x), -1))
        return run_library(exe, xq, size, int8=True, target=target)
    return run_library(exe, x.numpy().reshape(len(x), -1), size, target=target)


@needs_cc
@pytest.mark.parametrize("dims", [2, 1])
def test_c_equals_the_references_bit_for_bit_on_the_host(dims, tmp_path):
    net, x = binstack(dims), sample(dims)
    x[0, 0, 0] = net.b1.threshold[0]                      # x == t: +1 in PyTorch, the reference and C
    f = export_c(net, x, tmp_path / "f", verify=False)
    assert [n.op for n in f.graph.nodes].count("binconv") == 4
    packed = [t for t in f.graph.tensors.values() if t.packed_bytes]       # b1 -> bx: sign bits, 3 groups of 1 word
    assert len(packed) == 1 and packed[0].packed_bytes == 4 * 3 * int(np.prod(packed[0].shape[1:]))
    reference = run_float(f.graph, x).numpy().reshape(len(x), -1)
    assert np.array_equal(c_outputs(f, x).view(np.uint32), reference.view(np.uint32))   # float32, bit for bit
    assert np.abs(reference - net(x).detach().numpy().reshape(len(x), -1)).max() < 1e-5
    q = export_c(net, x, tmp_path / "q", int8=True, calib=x)          # compiled, run, compared bit for bit
    assert q.summary["verified"]["int8_matches_reference"] is True
    xq = q.qgraph.qp(q.graph.input).quantize(x.numpy())
    assert np.array_equal(q.run_reference(x), q.qgraph.qp(q.graph.output).dequantize(run_int8(q.qgraph, xq)))


@needs_cc
def test_a_real_network_with_a_binary_body_exports_in_float_and_int8(tmp_path):
    dims = 2
    net, x = binbody(dims), sample(dims)
    f = export_c(net, x, tmp_path / "f")
    assert [n.op for n in f.graph.nodes].count("binconv") == 3
    assert f.summary["verified"]["max_abs_diff_vs_pytorch"] <= f.summary["verified"]["limit"]
    assert len(np.unique(net(x).detach().numpy().round(4), axis=0)) == len(x)      # the binary body sees its input
    q = export_c(net, x, tmp_path / "q", int8=True, calib=x)
    assert q.summary["verified"]["int8_matches_reference"] is True


@needs_cc
def test_flash_cost_equals_the_bytes_the_c_export_writes(tmp_path):
    net, x = binbody(2), sample(2)
    for int8, precision in ((False, "float32"), (True, "int8")):
        export = export_c(net, x, tmp_path / precision, int8=int8, calib=x if int8 else None, verify=False)
        assert flash_bytes(net, precision) == export.summary["flash_bytes"], precision
    # one layer alone: 40 input channels take 2 words per (output channel, kernel position) + 9 bytes per channel
    layer = nn.Sequential(BinaryConv2d(40, 8, 3, padding=1), nn.BatchNorm2d(8)).eval()
    xs = torch.randn(4, 40, 5, 5)
    export = export_c(layer, xs, tmp_path / "one", int8=True, calib=xs, verify=False)
    words, thresholds, per_channel = 8 * 9 * 2 * 4, 40 * 4, 8 * 9
    assert binary_flash_bytes(layer[0]) == flash_bytes(layer) == export.summary["flash_bytes"] == \
        words + thresholds + per_channel
    assert "static const int32_t n0_w[144]" in (tmp_path / "one" / "model.c").read_text()


# ----------------------------------------------------------------------------------------------------- Cortex-M4
@needs_m4
def test_c_is_bit_exact_on_an_emulated_cortex_m4(tmp_path):
    net, x = binstack(2), sample(2, 3)
    q = export_c(net, x, tmp_path / "q", int8=True, calib=x, target="cortex-m4")
    assert q.summary["verified"]["int8_matches_reference"] is True
    f = export_c(net, x, tmp_path / "f", target="cortex-m4")
    reference = run_float(f.graph, x).numpy().reshape(len(x), -1)
    assert np.array_equal(c_outputs(f, x, "cortex-m4").view(np.uint32), reference.view(np.uint32))


# ------------------------------------------------------------------------------------------------------------ ONNX
def test_onnx_keeps_a_float_equivalent_that_matches_pytorch():
    from lwdc.profiling import onnx_session

    net, x = binbody(2), sample(2)
    session = onnx_session(net, x)                 # TorchScript exporter: lwdc.binary registers its symbolic
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - net(x).detach().numpy()).max() < 1e-4
    assert len(np.unique(got.round(4), axis=0)) == len(x)


@pytest.mark.slow
def test_onnx_export_checks_binary_layers_against_pytorch(tmp_path):
    """The user-facing exporter (dynamo): the operator's decomposition becomes sign -> +1 padding -> conv."""
    import onnx
    from lwdc.export.onnx import export_onnx

    net, x = binbody(2), sample(2)
    result = export_onnx(net, x, tmp_path / "m.onnx")
    assert result["tolerance"]["within"]
    kinds = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert kinds.count("Conv") >= 4 and "Pad" in kinds
