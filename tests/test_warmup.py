"""Branch warm-up and the gate prior: the search starts from a network that works."""
import math

import pytest
import torch

from lwdc.space import expand
from lwdc.warmup import warm_up_branches

from conftest import TinyNet


def _imitation_error(supernet, x):
    """Mean normalised error of every trainable non-original branch against the original, per layer input."""
    errors = []
    captured = {}
    layers = supernet.choice_layers()
    hooks = [l.register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, (i[0], o))) for n, l in layers.items()]
    supernet.set_choices({n: "original" for n in layers})
    supernet.eval()
    with torch.no_grad():
        supernet(x)
        for n, l in layers.items():
            inp, target = captured[n]
            for op, b in zip(l.op_names, l.branches):
                if op != "original" and any(True for _ in b.parameters()):
                    errors.append(float((b.eval()(inp) - target).pow(2).mean() / target.var()))
    for h in hooks:
        h.remove()
    supernet.set_choices(None)
    return sum(errors) / len(errors)


def test_warm_up_makes_branches_imitate_the_original():
    torch.manual_seed(0)
    net = TinyNet(width=8)
    x = torch.randn(64, 3, 16, 16)
    supernet = expand(net, x[:1], "default")
    originals = {k: v.clone() for k, v in supernet.state_dict().items() if ".branches.0." in k}
    before = _imitation_error(supernet, x)
    loader = [(x[i:i + 16], None) for i in range(0, 64, 16)] * 30
    tail = warm_up_branches(supernet, loader, batches=120, lr=5e-3, log=lambda s: None)
    after = _imitation_error(supernet, x)
    assert after < 0.5 * before, (before, after)
    assert tail and all(v >= 0 for v in tail.values())
    # the teacher is untouched, and no layer is left forced
    assert all(torch.equal(v, supernet.state_dict()[k]) for k, v in originals.items())
    assert all(l.fixed is None for l in supernet.choice_layers().values())


def test_original_prior_sets_probabilities():
    supernet = expand(TinyNet(), torch.randn(1, 3, 16, 16), "default")
    supernet.init_gates(0.9)
    for layer in supernet.choice_layers().values():
        p = layer.probabilities().detach()
        assert math.isclose(float(p[layer.op_names.index("original")]), 0.9, rel_tol=1e-5)
    supernet.init_gates(None)
    for layer in supernet.choice_layers().values():
        assert torch.allclose(layer.probabilities(), torch.full((len(layer.op_names),), 1 / len(layer.op_names)))
    with pytest.raises(ValueError, match="original_prob"):
        supernet.init_gates(1.5)
