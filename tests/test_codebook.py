"""The second method's mechanism (lwdc/methods/codebook.py): global magnitude pruning, pruned weights staying
zero through training, the codebook gradient, and the stored form decoding to the trained weights bit for bit."""
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lwdc.methods.codebook import (decode, encode, global_magnitude_masks, kmeans_codebook, layer_bits, materialize,
                                   prune, prunable_layers, share_layer)


def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_one_global_threshold_gives_each_layer_its_own_sparsity():
    net = small_net()
    with torch.no_grad():
        net[2].weight.mul_(10)          # a layer of large weights keeps more of them
    masks = global_magnitude_masks(net, 0.6)
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert abs((total - kept) / total - 0.6) < 0.01
    assert masks["2"].float().mean() > masks["0"].float().mean()
    with pytest.raises(ValueError, match="sparsity"):
        global_magnitude_masks(net, 1.0)


def test_pruned_weights_stay_zero_through_training():
    net = small_net()
    masks = global_magnitude_masks(net, 0.5)
    prune(net, masks)
    share_layer(prunable_layers(net)["2"], 4)             # a shared layer keeps its zeros too
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1, momentum=0.9,
                          weight_decay=5e-4)
    for step in range(5):
        x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 4, (6,))
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    for name, m in prunable_layers(net).items():
        assert (m.weight[~masks[name]] == 0).all(), name
        assert (m.weight[masks[name]] != 0).float().mean() > 0.9
    plain = materialize(net)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert all((m.weight[~masks[n]] == 0).all() for n, m in prunable_layers(plain).items())


def test_codebook_gradient_is_the_sum_of_its_weights_gradients():
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3)
    prune(nn.Sequential(conv), {"0": torch.rand(conv.weight.shape) > 0.3})
    shared = share_layer(conv, 8)
    x = torch.randn(5, 4, 7, 7)
    (conv(x) ** 2).mean().backward()
    reference = nn.Conv2d(4, 6, 3)
    with torch.no_grad():
        reference.weight.copy_(conv.weight)
        reference.bias.copy_(conv.bias)
    (reference(x) ** 2).mean().backward()
    g = reference.weight.grad
    want = torch.zeros(8).index_add_(0, shared.index[shared.mask], g[shared.mask])
    torch.testing.assert_close(shared.codebook.grad, want, rtol=1e-5, atol=1e-7)
    assert set(torch.unique(conv.weight.detach()).tolist()) <= set(shared.codebook.tolist()) | {0.0}


@pytest.mark.parametrize("k, sparsity, fmt", [(2, 0.9, "sparse"), (3, 0.05, "dense"), (16, 0.1, "sparse")])
def test_stored_form_decodes_to_the_trained_weight_exactly(k, sparsity, fmt):
    net = small_net(2)
    prune(net, global_magnitude_masks(net, sparsity))
    layer = prunable_layers(net)["2"]
    shared = share_layer(layer, k)
    with torch.no_grad():
        shared.codebook.add_(torch.randn(k) * 1e-3)       # trained codebook values, not the k-means ones
    stored = encode(shared)
    assert stored["format"] == fmt
    assert torch.equal(decode(stored), layer.weight.detach())
    assert stored["bits"] == layer_bits(layer.weight.numel(), int(shared.mask.sum()), k)["bits"]
    assert stored["bits"] < 32 * layer.weight.numel()


def test_kmeans_is_deterministic_and_exact_on_few_values():
    v = torch.tensor([0.1, 0.1, 0.5, 0.5, 0.9])
    centres, assign = kmeans_codebook(v, 3)
    torch.testing.assert_close(centres, torch.tensor([0.1, 0.5, 0.9]))
    assert torch.equal(assign, torch.tensor([0, 0, 1, 1, 2]))
    again, _ = kmeans_codebook(torch.randn(500, generator=torch.Generator().manual_seed(0)), 8)
    assert torch.equal(again, kmeans_codebook(torch.randn(500, generator=torch.Generator().manual_seed(0)), 8)[0])
