"""Codebook-coded weights in the float C export (issue 20): layers of few distinct values stored as codebook +
packed codes (+ a zero bitmap) + a folded BatchNorm's per-channel scale, decoded at start-up or before each
layer. The decoded weights are bit for bit the dense export's, so the two C builds agree exactly."""
import numpy as np
import pytest
import torch
from torch import nn

from lwdc.export import export_c
from lwdc.export.c import compile_library, find_compiler, run_library
from lwdc.methods.codebook import (decode, encode_values, global_magnitude_masks, materialize, prunable_layers,
                                   prune, share_layer)

from conftest import TinyNet
from test_export_c import randomize_bn

needs_cc = pytest.mark.skipif(find_compiler() is None, reason="no C compiler")


def shared_tiny(dims: int = 2, ks=(2, 4, None, 16, 1)) -> nn.Module:
    """TinyNet pruned to half and shared layer by layer at ``ks`` (None: left pruned but unshared)."""
    torch.manual_seed(0)
    net = randomize_bn(TinyNet(width=8, dims=dims))
    prune(net, global_magnitude_masks(net, 0.5))
    for (name, layer), k in zip(prunable_layers(net).items(), ks):
        if k:
            share_layer(layer, k)
    return materialize(net).eval()


@pytest.mark.parametrize("values", [1, 2, 3, 16, 200])
def test_decode_of_encoded_values_is_the_weight_bit_for_bit(values):
    g = torch.Generator().manual_seed(values)
    codebook = torch.randn(values, generator=g)
    w = codebook[torch.randint(0, values, (12, 5, 3, 3), generator=g)]
    w[torch.rand(w.shape, generator=g) < 0.4] = 0
    stored = encode_values(w.numpy())
    assert stored is not None and stored["codebook"].size == len(torch.unique(w[w != 0]))
    assert torch.equal(decode(stored).view(torch.int32), w.view(torch.int32))
    assert encode_values(torch.randn(64, 64).numpy()) is None            # nearly all distinct: stays float


@needs_cc
@pytest.mark.parametrize("dims", [1, 2])
def test_coded_builds_compute_exactly_what_the_dense_build_computes(dims, tmp_path):
    net = shared_tiny(dims)
    x = torch.randn(5, 3, *((16, 16) if dims == 2 else (32,)))
    outs, summaries = {}, {}
    for mode in ("dense", "startup", "on-the-fly"):
        e = export_c(net, x, tmp_path / mode, weights=mode)
        exe = compile_library(e.directory, e.name)
        outs[mode] = run_library(exe, x.reshape(len(x), -1).numpy(), int(np.prod(e.graph.output_shape)))
        summaries[mode] = e.summary
        assert e.summary["verified"]["max_abs_diff_vs_pytorch"] <= e.summary["verified"]["limit"]
    for mode in ("startup", "on-the-fly"):
        assert np.array_equal(outs[mode].view(np.uint32), outs["dense"].view(np.uint32))   # bit for bit
        # twice in one process: the start-up decode runs once, on-the-fly decodes every run; same answers
        assert np.array_equal(outs[mode][0], outs[mode][-1]) or not np.array_equal(x[0], x[-1])
    coded = {c["where"]: c for c in summaries["startup"]["weights"]["coded_layers"]}
    for name, k in {"stem.0": 2, "conv1": 4, "down.0": 16, "head.2": 1}.items():   # k-means may leave a
        w = net.get_submodule(name).weight.detach()                                 # centre unused
        assert coded[name]["values"] == len(torch.unique(w[w != 0])) <= k
    # the unshared layer is coded only if its own distinct values (at most 256) take fewer bits than floats
    if "conv2" in coded:
        w = net.conv2.weight.detach()
        assert coded["conv2"]["values"] == len(torch.unique(w[w != 0])) <= 256
    assert all(c["folded_scale"] for name, c in coded.items() if name != "head.2")   # convs carry their BN's scale


@needs_cc
def test_flash_and_ram_of_the_coded_builds_are_what_they_store(tmp_path):
    net = shared_tiny()
    x = torch.randn(2, 3, 16, 16)
    dense = export_c(net, x, tmp_path / "dense", verify=False).summary
    startup = export_c(net, x, tmp_path / "startup", weights="startup", verify=False).summary
    fly = export_c(net, x, tmp_path / "fly", weights="on-the-fly", verify=False).summary
    counts = [c["count"] for c in startup["weights"]["coded_layers"]]
    assert startup["weights"]["ram_bytes"] == 4 * sum(counts)             # every coded layer, decoded once
    assert fly["weights"]["ram_bytes"] == 4 * max(counts)                 # one buffer, the largest layer
    assert startup["peak_ram_bytes"] == dense["peak_ram_bytes"] + 4 * sum(counts)
    assert fly["flash_bytes"] == startup["flash_bytes"] < dense["flash_bytes"]
    # the flash saved is exactly the float weights replaced minus what the coded form stores
    saved = 0
    for c in startup["weights"]["coded_layers"]:
        w = net.get_submodule(c["where"]).weight.detach().numpy()       # before its BatchNorm is folded in
        stored = encode_values(w)
        extra = 4 * w.shape[0] if c["folded_scale"] else 0
        saved += 4 * w.size - (4 * stored["codebook"].size + len(stored["codes"]) + len(stored.get("bitmap", []))
                               + extra)
    assert dense["flash_bytes"] - startup["flash_bytes"] == saved
    text = (tmp_path / "fly" / "model.h").read_text()
    assert f"#define MODEL_WEIGHT_RAM_BYTES {fly['weights']['ram_bytes']}" in text


def test_coded_weights_are_refused_where_they_do_not_apply(tmp_path):
    net = shared_tiny()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match="int8 build stores 8-bit weights already"):
        export_c(net, x, tmp_path / "q", int8=True, weights="startup")
    with pytest.raises(ValueError, match="weights must be one of dense, startup, on-the-fly"):
        export_c(net, x, tmp_path / "b", weights="lazy")
    assert not (tmp_path / "q").exists() and not (tmp_path / "b").exists()


def test_an_ordinary_model_is_unchanged_by_the_coded_modes(tmp_path):
    torch.manual_seed(0)
    net = randomize_bn(TinyNet(width=8))
    x = torch.randn(2, 3, 16, 16)
    a = export_c(net, x, tmp_path / "a", verify=False)
    b = export_c(net, x, tmp_path / "b", weights="startup", verify=False)
    assert b.summary["weights"]["coded_layers"] == [] and b.summary["flash_bytes"] == a.summary["flash_bytes"]
    assert (tmp_path / "a" / "model.c").read_text() == (tmp_path / "b" / "model.c").read_text()
