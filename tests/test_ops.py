"""Every operator's closed-form counts against an independent counter, and the registry's errors."""
import pytest
import torch
from torch import nn

from lwdc.ops import OP_SETS, LayerSpec, UnknownOperatorError, get_op, resolve_ops
from lwdc.profiling import count_macs, count_params

ALL_OPS = ["original", "conv3x3", "conv3x3_g2", "conv3x3_g4", "conv3x3_g8", "conv1x1", "conv1x1_g2",
           "conv1x1_g4", "conv5x5_g2", "sep3x3", "sep5x5", "dilsep3x3", "dilsep5x5", "avgpool3x3",
           "maxpool3x3", "skip", "lowrank_d2", "lowrank_d4", "ghost_d2", "ghost_d4", "bin3x3", "bin5x5", "bin3x3_g2", "birealbin3x3"]


def conv_spec(dims, cin, cout, stride, size, k=3, groups=1, bias=False):
    out = tuple((n + 2 * (k // 2) - k) // stride + 1 for n in size)
    return LayerSpec("conv", dims, cin, cout, (k,) * dims, (stride,) * dims, (k // 2,) * dims, (1,) * dims,
                     groups, bias, size, out)


def original_conv(spec):
    cls = nn.Conv1d if spec.dims == 1 else nn.Conv2d
    return cls(spec.in_ch, spec.out_ch, spec.kernel, spec.stride, spec.padding, groups=spec.groups, bias=spec.bias)


CASES = [
    # dims, cin, cout, stride, size, groups, bias -- odd channel counts and odd sizes included
    (2, 16, 16, 1, (8, 8), 1, False),
    (2, 16, 32, 2, (9, 9), 1, False),
    (2, 24, 24, 2, (7, 10), 1, True),
    (2, 7, 9, 1, (5, 5), 1, True),
    (2, 15, 15, 2, (11, 11), 1, False),
    (2, 8, 8, 1, (6, 6), 8, False),      # a depthwise original
    (1, 12, 24, 2, (33,), 1, False),
    (1, 5, 5, 1, (17,), 1, True),
]


def _fitting_pairs():
    """Every (case, operator) pair where the operator fits; the others are checked by test_fits_explains_mismatch."""
    for case in CASES:
        dims, cin, cout, stride, size, groups, bias = case
        spec = conv_spec(dims, cin, cout, stride, size, groups=groups, bias=bias)
        for name in ALL_OPS:
            if get_op(name).fits(spec) is None:
                yield pytest.param(case, name, id=f"{name}-{dims}d-{cin}to{cout}-s{stride}-{'x'.join(map(str, size))}"
                                                  f"-g{groups}-b{int(bias)}")


@pytest.mark.parametrize("case, name", list(_fitting_pairs()))
def test_closed_form_counts_equal_independent_counter(case, name):
    dims, cin, cout, stride, size, groups, bias = case
    spec = conv_spec(dims, cin, cout, stride, size, groups=groups, bias=bias)
    op = get_op(name)
    module = op.build(spec, original_conv(spec))
    x = torch.randn(2, cin, *size)
    out = module.eval()(x)
    assert tuple(out.shape) == (2, cout, *spec.out_size)
    assert op.params(spec) == count_params(module)
    assert op.macs(spec) == count_macs(module, x)


def test_every_operator_fits_somewhere():
    """The parametrised test above must not skip an operator everywhere (that would hide a broken count)."""
    for name in ALL_OPS:
        op = get_op(name)
        assert any(op.fits(conv_spec(d, ci, co, s, sz, groups=g, bias=b)) is None
                   for d, ci, co, s, sz, g, b in CASES), name


def test_fits_explains_mismatch():
    spec = conv_spec(2, 6, 9, 1, (8, 8))
    assert "groups 2" in get_op("conv3x3_g2").fits(spec)
    assert "pooling keeps channels" in get_op("maxpool3x3").fits(spec)
    assert get_op("skip").fits(spec) is None                       # 6 -> 9 channels: zero-padded
    assert "cannot reduce" in get_op("skip").fits(conv_spec(2, 9, 6, 1, (8, 8)))
    valid = LayerSpec("conv", 2, 4, 4, (3, 3), (1, 1), (0, 0), (1, 1), 1, False, (8, 8), (6, 6))
    assert "differs" in get_op("sep3x3").fits(valid)


def test_skip_is_identity_or_subsample_and_pad():
    spec = conv_spec(2, 4, 8, 2, (6, 6))
    x = torch.randn(1, 4, 6, 6)
    y = get_op("skip").build(spec, None)(x)
    assert torch.equal(y[:, :4], x[:, :, ::2, ::2]) and torch.all(y[:, 4:] == 0)
    same = conv_spec(2, 4, 4, 1, (6, 6))
    assert isinstance(get_op("skip").build(same, None), nn.Identity)


def test_original_keeps_weights():
    spec = conv_spec(2, 4, 4, 1, (6, 6))
    conv = original_conv(spec)
    copy = get_op("original").build(spec, conv)
    assert copy is not conv and torch.equal(copy.weight, conv.weight)


def test_named_sets_and_lists_resolve():
    for name in OP_SETS:
        assert [o.name for o in resolve_ops(name)] == list(OP_SETS[name])
    assert [o.name for o in resolve_ops("original, sep3x3,skip")] == ["original", "sep3x3", "skip"]
    assert [o.name for o in resolve_ops(["conv3x3_g16"])] == ["conv3x3_g16"]


@pytest.mark.parametrize("bad", ["conv3x3_g0", "sepconv", "conv3x5", "", "Original"])
def test_unknown_operator_lists_valid_names(bad):
    with pytest.raises(UnknownOperatorError) as err:
        resolve_ops([bad] if bad else bad)
    message = str(err.value)
    assert "default" in message and ("conv{k}x{k}_g{g}" in message or "empty" in message)


def test_duplicate_operators_rejected():
    with pytest.raises(UnknownOperatorError, match="duplicates"):
        resolve_ops(["skip", "skip"])


def test_lowrank_starts_as_the_layers_best_low_rank_approximation():
    """Built from a trained conv whose weight has rank r, the factored branch computes the same function; from a
    full-rank weight it is the truncated SVD, so its error equals the discarded singular values' energy."""
    spec = conv_spec(2, 8, 16, 2, (9, 9), bias=True)
    conv = original_conv(spec)
    with torch.no_grad():
        low = torch.randn(16, 4) @ torch.randn(4, 8 * 9)           # rank 4 = ceil(16 / 4)
        conv.weight.copy_(low.reshape(conv.weight.shape))
    branch = get_op("lowrank_d4").build(spec, conv)
    x = torch.randn(3, 8, 9, 9)
    torch.testing.assert_close(branch(x), conv(x), rtol=1e-4, atol=1e-4)

    full = original_conv(spec)
    branch = get_op("lowrank_d2").build(spec, full)
    product = branch[1].weight.reshape(16, 8) @ branch[0].weight.reshape(8, -1)
    sv = torch.linalg.svdvals(full.weight.detach().reshape(16, -1))
    residual = (full.weight.detach().reshape(16, -1) - product).pow(2).sum()
    torch.testing.assert_close(residual, sv[8:].pow(2).sum(), rtol=1e-3, atol=1e-5)


def test_lowrank_refuses_grouped_layers_and_ranks_that_cost_more():
    assert "grouped" in get_op("lowrank_d2").fits(conv_spec(2, 8, 8, 1, (6, 6), groups=8))
    # 1 input channel, 1x1 kernel: any rank costs more than the layer itself
    one = LayerSpec("conv", 2, 1, 16, (1, 1), (1, 1), (0, 0), (1, 1), 1, False, (4, 4), (4, 4))
    assert "costs more" in get_op("lowrank_d2").fits(one)
    assert "below 2" in get_op("lowrank_d1").fits(conv_spec(2, 8, 8, 1, (6, 6)))


def test_ghost_starts_with_the_layers_first_filters_and_learns_only_the_cheap_channels():
    """Built from a trained conv, a Ghost branch's first out_ch / d channels are the original's exactly (same
    kernel, stride and bias); the others come from a depthwise 3x3 on them."""
    spec = conv_spec(2, 8, 16, 2, (9, 9), bias=True)
    conv = original_conv(spec)
    branch = get_op("ghost_d4").build(spec, conv)
    x = torch.randn(3, 8, 9, 9)
    torch.testing.assert_close(branch(x)[:, :4], conv(x)[:, :4])
    assert branch.cheap.groups == 4 and branch.cheap.out_channels == 12          # each primary channel makes 3
    one_d = conv_spec(1, 6, 6, 1, (17,))
    assert tuple(get_op("ghost_d2").build(one_d, original_conv(one_d))(torch.randn(2, 6, 17)).shape) == (2, 6, 17)


def test_ghost_refuses_what_it_cannot_replace_cheaply():
    assert "grouped" in get_op("ghost_d2").fits(conv_spec(2, 8, 8, 1, (6, 6), groups=8))
    assert "does not divide" in get_op("ghost_d4").fits(conv_spec(2, 8, 6, 1, (6, 6)))
    assert "below 2" in get_op("ghost_d1").fits(conv_spec(2, 8, 8, 1, (6, 6)))
    # a 1x1 layer from 2 channels: the depthwise 3x3 alone costs more than the layer
    thin = LayerSpec("conv", 2, 2, 8, (1, 1), (1, 1), (0, 0), (1, 1), 1, False, (4, 4), (4, 4))
    assert "costs as much" in get_op("ghost_d2").fits(thin)
    pool = LayerSpec("pool", 2, 8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, False, (4, 4), (4, 4))
    assert "only a convolution" in get_op("ghost_d2").fits(pool)
