"""Signal models (m5, logmel_dscnn, eegnet, farahat1d): shapes, counts by an independent hook counter, what the
search expands, derivation, and export (C float within tolerance, int8 bit-exact, ONNX); the log-mel front end
against a direct numpy computation."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import lwdc
from lwdc.export import export_c
from lwdc.export.c import find_compiler
from lwdc.export.onnx import export_onnx
from lwdc.models import create_model
from lwdc.models.frontend import LogMel, mel_filter_bank
from lwdc.profiling import count_macs, count_params
from lwdc.space import ChoiceLayer

needs_cc = pytest.mark.skipif(find_compiler() is None, reason="no C compiler")

# name -> (input shape, classes, layers the default operator set searches, layers it skips)
MODELS = {
    "m5": ((1, 8000), 10, {"conv1", "conv2", "conv3", "conv4"}, set()),
    "logmel_dscnn": ((1, 8000), 10, {f"backbone.blocks.{i}.{k}" for i in range(4) for k in ("dw", "pw")},
                     {"backbone.conv1"}),
    "eegnet": ((4, 116), 2, {"temporal", "depthwise", "pointwise"}, {"spatial"}),
    "farahat1d": ((4, 116), 2, {"branch1", "branch2", "branch3", "conv2"}, set()),
}


def build(name, width=1.0, seed=0):
    shape, classes, _, _ = MODELS[name]
    torch.manual_seed(seed)
    model = create_model(name, num_classes=classes, in_channels=shape[0], width=width).eval()
    for m in model.modules():        # trained-looking BatchNorm statistics, so folding is exercised
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model, torch.randn(6, *shape, generator=torch.Generator().manual_seed(seed))


def hook_macs(model, x) -> int:
    """Convolution, linear and mel-filter MACs from the layers' output shapes (independent of torch's FLOP counter)."""
    total = []

    def hook(m, _inp, out):
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            total.append(out[0].numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size))
        elif isinstance(m, nn.Linear):
            total.append(m.in_features * m.out_features)
        elif isinstance(m, LogMel):      # the filter bank's matmul (torch's counter does not see the STFT)
            total.append(m.filters.numel() * out.shape[-1])
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x[:1])
    for h in handles:
        h.remove()
    return sum(total)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shapes_counts_and_search_space(name):
    model, x = build(name)
    assert model(x).shape == (6, MODELS[name][1])
    assert count_macs(model, x[:1]) == hook_macs(model, x)
    assert count_params(model) == sum(p.numel() for p in model.parameters())
    supernet = lwdc.expand(model, x[:1])
    assert set(supernet.choice_layers()) == MODELS[name][2]
    assert {s.name for s in supernet.skipped} == MODELS[name][3]
    assert all(s.reason for s in supernet.skipped)
    half, _ = build(name, width=0.5)
    assert count_params(half) < count_params(model)


@pytest.mark.parametrize("name", ["m5", "farahat1d"])
def test_derive_a_lighter_choice(name):
    model, x = build(name)
    supernet = lwdc.expand(model, x[:1])
    for layer in supernet.choice_layers().values():
        layer.fixed = len(layer.op_names) - 1
    derived = lwdc.derive(supernet)
    assert not any(isinstance(m, ChoiceLayer) for m in derived.modules())
    assert derived(x).shape == model(x).shape
    assert count_macs(derived, x[:1]) < count_macs(model, x[:1])


def test_m5_is_microcontroller_sized():
    model, x = build("m5")
    assert count_params(model) == 25098 and count_macs(model, x[:1]) == 7805568     # as the docstring says


@needs_cc
@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_c_export(name, int8, tmp_path):
    model, x = build(name, width=0.5)
    result = export_c(model, x[:2], tmp_path / "c", int8=int8, calib=x if int8 else None)
    v = result.summary["verified"]
    assert v is not None, "the C was not compiled"
    if int8:
        assert v["int8_matches_reference"] is True
    else:
        assert v["max_abs_diff_vs_pytorch"] <= v["limit"]
    front = result.summary["front_end"]
    if name == "logmel_dscnn":       # the C takes the log-mel features and says so
        assert front["module"] == "LogMel" and front["feature_shape"] == [1, 40, 63]
        assert result.summary["input_shape"] == [1, 40, 63] and "not exported" in front["note"]
        out = lwdc.export.c.run_c(result.directory, result.front_end(x)).outputs
        with torch.no_grad():
            want = model(x).numpy()
        if not int8:
            np.testing.assert_allclose(out, want, atol=1e-3)
    else:
        assert front is None


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_export(name, tmp_path):
    model, x = build(name, width=0.5)
    check = export_onnx(model, x[:2], tmp_path / f"{name}.onnx")
    assert check["tolerance"]["within"]


def test_log_mel_matches_numpy():
    fine = mel_filter_bank(40, 1 << 16, 8000).numpy()                           # on a fine frequency grid,
    assert np.allclose(fine.max(1), 1.0, atol=1e-2)                             # HTK triangles peak at 1
    fb = mel_filter_bank(40, 256, 8000).double().numpy()
    assert fb.shape == (40, 129) and fb.max() <= 1.0 and (fb.sum(0)[1:-1] > 0).all()   # they cover the band
    x = torch.randn(2, 1, 1000, generator=torch.Generator().manual_seed(3))
    got = LogMel(8000, 256, 128, 40)(x).numpy()
    assert got.shape == (2, 1, 40, 1 + 1000 // 128)
    sig = np.pad(x[0, 0].double().numpy(), 128, mode="reflect")              # torch.stft's centring
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(256) / 256)             # periodic Hann
    frames = np.stack([sig[i * 128:i * 128 + 256] * window for i in range(got.shape[-1])], 1)
    power = np.abs(np.fft.rfft(frames, axis=0)) ** 2
    np.testing.assert_allclose(got[0, 0], np.log(fb @ power + 1e-6), rtol=1e-4, atol=1e-4)
