"""lwdc.analysis against known answers: CKA identities, saliency of models that look only at a planted region,
Grad-CAM lighting a planted patch, probes on separable and on random data, and models left as they were found."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import TinyNet, quadrant_data
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lwdc.analysis import (
    cka_between,
    cka_by_name,
    default_layers,
    grad_cam,
    layer_features,
    linear_cka,
    linear_probe,
    probe_layers,
    smoothgrad,
    vanilla_gradient,
)

F64 = torch.float64


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------- CKA

def test_cka_of_a_representation_with_itself_is_one():
    for x in (randn(50, 30), randn(20, 3, 4, 4)):         # feature form, and the Gram form (p = 48 > n = 20)
        assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-6)
        assert linear_cka(x, x, gram=True) == pytest.approx(1.0, abs=1e-6)
        assert linear_cka(x, x, gram=False) == pytest.approx(1.0, abs=1e-6)


def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling():
    x = randn(60, 12, seed=1, dtype=F64)
    y = torch.tanh(x @ randn(12, 7, seed=2, dtype=F64)) + 0.3 * randn(60, 7, seed=3, dtype=F64)
    q, _ = torch.linalg.qr(randn(12, 12, seed=4, dtype=F64))
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, 3.7 * x) == pytest.approx(1.0, abs=1e-9)
    base = linear_cka(x, y)
    assert 0.05 < base < 0.99
    assert linear_cka(0.01 * x @ q, 50.0 * y) == pytest.approx(base, abs=1e-9)


def test_cka_of_independent_features_is_small_when_samples_outnumber_features():
    assert linear_cka(randn(2000, 10, seed=5), randn(2000, 10, seed=6)) < 0.2


def test_cka_is_nan_for_a_constant_representation_and_checks_sample_counts():
    assert torch.isnan(torch.tensor(linear_cka(torch.ones(10, 3), randn(10, 3))))
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(randn(10, 3), randn(11, 3))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(4, 40), p1=st.integers(1, 24), p2=st.integers(1, 24), seed=st.integers(0, 2**16),
       scale=st.floats(1e-2, 1e2))
def test_cka_properties(n: int, p1: int, p2: int, seed: int, scale: float):
    """Symmetric, in [0, 1], Gram form = feature form, invariant to rotation and scaling, for any shapes."""
    x = randn(n, p1, seed=seed, dtype=F64)
    y = x @ randn(p1, p2, seed=seed + 1, dtype=F64) + randn(n, p2, seed=seed + 2, dtype=F64)
    q, _ = torch.linalg.qr(randn(p1, p1, seed=seed + 3, dtype=F64))
    base = linear_cka(x, y)
    assert 0.0 <= base <= 1.0
    assert linear_cka(y, x) == pytest.approx(base, abs=1e-9)
    assert linear_cka(x, y, gram=True) == pytest.approx(linear_cka(x, y, gram=False), abs=1e-9)
    assert linear_cka(scale * x @ q, y) == pytest.approx(base, abs=1e-9)


# ---------------------------------------------------------------- features and CKA between models

def test_default_layers_are_blocks_that_own_parameters():
    torch.manual_seed(0)
    assert default_layers(TinyNet()) == ["stem.0", "conv1", "conv2", "down.0", "head.2"]


def test_cka_between_a_model_and_its_copy_with_a_new_head():
    """Layers before the head compute the same thing, so their CKA is 1; the changed head's is not."""
    torch.manual_seed(0)
    a = TinyNet()
    b = copy.deepcopy(a)
    nn.init.normal_(b.head[2].weight, generator=torch.Generator().manual_seed(1))
    x = randn(40, 3, 8, 8, seed=7)
    same = cka_by_name(a, b, x)
    assert list(same) == default_layers(a)
    assert all(same[name] == pytest.approx(1.0, abs=1e-6) for name in ("stem.0", "conv1", "conv2", "down.0"))
    assert same["head.2"] < 0.999
    layers = ["stem", "down", "head"]
    matrix = cka_between(a, b, x, layers, layers[:2])
    assert matrix.shape == (3, 2)
    assert matrix[0, 0] == pytest.approx(1.0, abs=1e-6) and matrix[1, 1] == pytest.approx(1.0, abs=1e-6)
    assert ((matrix >= 0) & (matrix <= 1)).all()


def test_layer_features_from_batches_copies_outputs_and_rejects_reused_layers():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
    x = randn(12, 3, 6, 6, seed=8)
    whole = layer_features(net, x, ["1"], batch_size=5)["1"]
    batched = layer_features(net, [(x[:7], None), (x[7:], None)], ["1"])["1"]
    assert whole.shape == (12, 4, 6, 6) and torch.equal(whole, batched)
    assert (whole < 0).any()                              # taken before the in-place ReLU overwrote it

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.relu(x) - 1)

    with pytest.raises(RuntimeError, match="ran 2 times"):
        layer_features(Twice(), x, ["relu"])


# ---------------------------------------------------------------- gradient saliency

class RegionNet(nn.Module):
    """Logits from the per-channel mean of one region (rows and cols 0..7; or steps 8..23 in 1-D) only."""

    def __init__(self, squash: bool = False, classes: int = 3):
        super().__init__()
        self.fc = nn.Linear(3, classes)
        self.squash = squash
        with torch.no_grad():
            self.fc.weight.copy_(randn(classes, 3, seed=9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = x[:, :, :8, :8] if x.ndim == 4 else x[:, :, 8:24]
        feats = region.flatten(2).mean(2)
        return self.fc(torch.tanh(2 * feats) if self.squash else feats)


def region_mask(x: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(x.shape[0], *x.shape[2:], dtype=torch.bool)
    if x.ndim == 4:
        mask[:, :8, :8] = True
    else:
        mask[:, 8:24] = True
    return mask


@pytest.mark.parametrize("shape", [(4, 3, 16, 16), (4, 3, 40)], ids=["2d", "1d"])
def test_gradient_saliency_is_zero_outside_the_region_the_model_looks_at(shape):
    x = randn(*shape, seed=10)
    mask = region_mask(x)
    for net in (RegionNet(), RegionNet(squash=True)):
        for sal in (vanilla_gradient(net, x), smoothgrad(net, x, samples=4)):
            assert sal.shape == (shape[0], *shape[2:])
            assert (sal[~mask] == 0).all()
            assert (sal[mask] > 0).all()


def test_vanilla_gradient_of_a_linear_model_equals_its_weights():
    """d logit_k / d x[c, i, j] = W[k, c] / 64 inside the 8 x 8 region; max over channels of its size."""
    net, x = RegionNet(), randn(5, 3, 16, 16, seed=11)
    for k in range(3):
        expected = net.fc.weight[k].abs().max() / 64
        inside = vanilla_gradient(net, x, target=k)[region_mask(x)]
        torch.testing.assert_close(inside, expected.expand_as(inside))
    per_sample = torch.tensor([0, 1, 2, 0, 1])
    sal = vanilla_gradient(net, x, target=per_sample)
    torch.testing.assert_close(sal[:, 0, 0], net.fc.weight.abs().amax(1)[per_sample] / 64)
    # a linear model's gradient does not depend on the input, so SmoothGrad changes nothing
    torch.testing.assert_close(smoothgrad(net, x, samples=3), vanilla_gradient(net, x))


def test_smoothgrad_repeats_with_its_seed_and_leaves_the_global_rng_alone():
    net, x = RegionNet(squash=True), randn(3, 3, 16, 16, seed=12)
    state = torch.get_rng_state()
    first = smoothgrad(net, x, samples=5, noise=0.3, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, smoothgrad(net, x, samples=5, noise=0.3, seed=3))
    assert not torch.equal(first, smoothgrad(net, x, samples=5, noise=0.3, seed=4))


# ---------------------------------------------------------------- Grad-CAM

def patch_net(dims: int) -> nn.Sequential:
    """A fixed mean filter (stride 2), ReLU, global average pool, and a head: class 0 = bright, class 1 = dark."""
    conv = (nn.Conv2d if dims == 2 else nn.Conv1d)(1, 1, 3, stride=2, padding=1, bias=False)
    pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool1d(1)
    head = nn.Linear(1, 2)
    with torch.no_grad():
        conv.weight.fill_(1 / conv.weight.numel())
        head.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        head.bias.zero_()
    return nn.Sequential(conv, nn.ReLU(), pool, nn.Flatten(), head)


@pytest.mark.parametrize("dims", [2, 1])
def test_grad_cam_lights_the_planted_patch(dims):
    if dims == 2:
        x = 0.1 * randn(6, 1, 16, 16, seed=13)
        patch = torch.zeros(16, 16, dtype=torch.bool)
        patch[4:8, 8:12] = True
        x[:, 0, patch] += 1.0
    else:
        x = 0.1 * randn(6, 1, 64, seed=14)
        patch = torch.zeros(64, dtype=torch.bool)
        patch[40:48] = True
        x[:, 0, patch] += 1.0
    net = patch_net(dims)
    for layer in ("0", net[1]):                                  # by name, and the module itself
        cam = grad_cam(net, x, layer)
        assert cam.shape == (6, *x.shape[2:])
        assert cam.min() >= 0 and torch.allclose(cam.flatten(1).amax(1), torch.ones(6))
        flat = cam.flatten(1)
        assert patch.flatten()[flat.argmax(1)].all()
        assert (cam[:, patch].mean(1) > 5 * cam[:, ~patch].mean(1)).all()
    # class 1 only loses evidence from bright activations: nothing is positive, and no NaN from the normalising
    assert torch.equal(grad_cam(net, x, "1", target=1), torch.zeros(6, *x.shape[2:]))


# ---------------------------------------------------------------- linear probes

def test_linear_probe_separates_separable_data_and_is_at_chance_on_random_labels():
    g = torch.Generator().manual_seed(15)
    means = 3 * torch.randn(3, 20, generator=g)
    y = torch.randint(0, 3, (400,), generator=g)
    x = means[y] + torch.randn(400, 20, generator=g)
    acc = linear_probe(x[:200], y[:200], x[200:], y[200:])
    assert acc > 0.9
    assert acc == linear_probe(x[:200], y[:200], x[200:], y[200:])          # deterministic
    noise_y = torch.randint(0, 4, (400,), generator=g)
    chance = linear_probe(x[:200], noise_y[:200], x[200:], noise_y[200:])
    assert 0.1 < chance < 0.4


def test_probe_layers_gives_one_accuracy_per_layer():
    torch.manual_seed(0)
    net = TinyNet()
    xtr, ytr = quadrant_data(128, seed=1)
    xte, yte = quadrant_data(128, seed=2)
    accs = probe_layers(net, ["stem.0", "down", "head"], xtr, ytr, xte, yte, epochs=50)
    assert list(accs) == ["stem.0", "down", "head"]
    assert all(0.0 <= a <= 1.0 for a in accs.values())
    assert accs["stem.0"] > 0.9             # a linear conv pooled 2 x 2 still shows which quadrant is bright


# ---------------------------------------------------------------- models are left as they were found

def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def test_calls_restore_modes_requires_grad_and_hooks():
    torch.manual_seed(0)
    net = TinyNet().train()
    net.head.eval()
    net.stem[0].weight.requires_grad_(False)
    modes = [m.training for m in net.modules()]
    flags = [p.requires_grad for p in net.parameters()]
    x, y = quadrant_data(16, seed=3)
    with torch.no_grad():                       # saliency needs gradients, and takes them even here
        vanilla_gradient(net, x)
        grad_cam(net, x, "down")
    smoothgrad(net, x, samples=2)
    layer_features(net, x)
    cka_between(net, net, x, ["stem", "down"], ["conv1"])
    probe_layers(net, ["down"], x, y, x, y, epochs=5)
    with pytest.raises(RuntimeError, match="ran 0 times"):
        grad_cam(net, x, nn.Conv2d(3, 3, 1))     # not part of the model: never runs
    assert [m.training for m in net.modules()] == modes
    assert [p.requires_grad for p in net.parameters()] == flags
    assert hook_count(net) == 0
    assert all(p.grad is None for p in net.parameters())
