"""The gate: exact one-hot forward, the right distribution, and a gradient that survives BatchNorm."""
import torch
from torch import nn

from lwdc.gate import Gate, anneal_temperature, choice_probabilities
from lwdc.space import expand


def test_gumbel_samples_follow_softmax_of_alpha():
    alpha = torch.tensor([1.0, 0.0, -1.0, 0.5])
    gate = Gate("gumbel", tau=0.7, seed=3)
    counts = torch.zeros(4)
    for _ in range(20000):
        k, j, _ = gate.sample(alpha)
        assert j != k
        counts[k] += 1
    assert torch.allclose(counts / counts.sum(), choice_probabilities(alpha), atol=0.015)


def test_noise_scale_sharpens_samples_towards_the_argmax():
    """With noise scale t the draws follow softmax(alpha / t): at t = 0.25 the argmax branch dominates."""
    alpha = torch.tensor([1.0, 0.0, -1.0, 0.5])
    gate = Gate("gumbel", seed=5, noise=0.25)
    counts = torch.zeros(4)
    for _ in range(20000):
        counts[gate.sample(alpha)[0]] += 1
    expected = choice_probabilities(alpha / 0.25)
    assert torch.allclose(counts / counts.sum(), expected, atol=0.015)
    assert counts[0] / counts.sum() > 0.8 > choice_probabilities(alpha)[0]


def test_gate_state_without_noise_scale_loads_as_constant_noise():
    """Checkpoints written before the noise scale existed resume with the behaviour they were written under."""
    saved = Gate(seed=2, noise=0.3).state_dict()
    del saved["noise"]
    gate = Gate(noise=0.5)
    gate.load_state_dict(saved)
    assert gate.noise == 1.0


def test_coefficient_is_exactly_zero_and_carries_gradient():
    alpha = torch.zeros(5, requires_grad=True)
    k, j, coef = Gate("gumbel", tau=1.0, seed=0).sample(alpha)
    assert float(coef.detach()) == 0.0
    coef.backward()
    assert alpha.grad.abs().sum() > 0


def test_argmax_mode_is_deterministic():
    alpha = torch.tensor([0.1, 2.0, -3.0])
    gate = Gate("argmax", seed=0)
    assert {gate.sample(alpha)[0] for _ in range(50)} == {1}


def test_same_seed_same_choices_and_state_roundtrip():
    alpha = torch.zeros(6)
    a, b = Gate(seed=7), Gate(seed=7)
    assert [a.sample(alpha)[:2] for _ in range(20)] == [b.sample(alpha)[:2] for _ in range(20)]
    saved = a.state_dict()
    ahead = [a.sample(alpha)[:2] for _ in range(5)]
    b.load_state_dict(saved)
    assert [b.sample(alpha)[:2] for _ in range(5)] == ahead


def test_anneal_endpoints_and_monotone():
    assert abs(anneal_temperature(0, 5, 0.5) - 5) < 1e-12 and abs(anneal_temperature(1, 5, 0.5) - 0.5) < 1e-12
    values = [anneal_temperature(p / 10, 5, 0.5) for p in range(11)]
    assert all(x > y for x, y in zip(values, values[1:]))


def test_task_gradient_reaches_alpha_through_batchnorm(tiny_net):
    """Every conv here feeds a BatchNorm, which makes a scale-only (single-path) gate gradient vanish.
    The two-sample estimator must still give every layer's alpha a real gradient."""
    torch.manual_seed(0)
    x = torch.randn(16, 3, 16, 16)
    supernet = expand(tiny_net, x[:1], "default").train()
    nn.functional.cross_entropy(supernet(x), torch.randint(0, 4, (16,))).backward()
    for name, layer in supernet.choice_layers().items():
        assert layer.alpha.grad is not None and layer.alpha.grad.abs().max() > 1e-4, name


def test_forward_value_is_exactly_the_chosen_branch(tiny_net):
    x = torch.randn(4, 3, 16, 16)
    supernet = expand(tiny_net, x[:1], "default").train()
    layer = supernet.choice_layers()["conv1"]
    inp = torch.randn(4, 8, 16, 16)
    for b in layer.branches:          # BN in train mode would differ between calls only by running stats
        b.eval()
    out = layer(inp)
    assert torch.equal(out, layer.branches[layer.last_index](inp))


def test_join_gradient_matches_exact_dot_product():
    from lwdc.gate import join
    torch.manual_seed(0)
    out = torch.randn(8, 4, 6, 6, requires_grad=True)
    delta = torch.randn(8, 4, 6, 6) * 30          # beyond e4m3's range unscaled: the scale must handle it
    coef = torch.zeros((), requires_grad=True)
    y = join(out, coef, delta)
    assert torch.equal(y, out) and y.data_ptr() != out.data_ptr()
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.equal(out.grad, g)
    exact = float(torch.dot(g.flatten(), delta.flatten()))
    assert abs(float(coef.grad) - exact) <= 0.02 * abs(exact) + 1e-3
