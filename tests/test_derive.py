"""derive: a plain model of torch.nn layers that computes what the supernet computes, loadable without lwdc."""
import subprocess
import sys

import pytest
import torch

from lwdc.costs import build_cost_table, get_cost_model
from lwdc.derivation import derive, max_output_difference
from lwdc.profiling import count_macs, count_params
from lwdc.runs import save_portable
from lwdc.space import ChoiceLayer, expand

from conftest import TinyNet


def _trained_supernet(net, example, ops="default", steps=5):
    supernet = expand(net, example, ops, seed=1)
    opt = torch.optim.SGD(supernet.parameters(), lr=0.05)
    supernet.train()
    for _ in range(steps):
        x = torch.randn(8, *example.shape[1:])
        loss = torch.nn.functional.cross_entropy(supernet(x), torch.randint(0, 4, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return supernet


@pytest.mark.parametrize("ops", ["default", "paper", "minimal"])
def test_derived_matches_supernet_for_every_choice(ops):
    torch.manual_seed(0)
    example = torch.randn(1, 3, 16, 16)
    supernet = _trained_supernet(TinyNet(), example, ops)
    layers = supernet.choice_layers()
    x = torch.randn(4, 3, 16, 16)
    for i in range(max(len(l.op_names) for l in layers.values())):
        choices = {n: l.op_names[i % len(l.op_names)] for n, l in layers.items()}
        supernet.set_choices(choices)
        derived = derive(supernet)
        assert not any(isinstance(m, ChoiceLayer) for m in derived.modules())
        assert all(type(m).__module__.startswith("torch.nn") for m in derived.modules()
                   if type(m) is not TinyNet), "derived model holds a non-torch layer"
        assert max_output_difference(supernet, derived, x) <= 1e-5


def test_derived_costs_equal_the_cost_table():
    """The objective's argmax ratio is exactly what an independent count of the derived model gives."""
    torch.manual_seed(0)
    net, example = TinyNet(), torch.randn(1, 3, 16, 16)
    supernet = expand(net, example, "default")
    for cost, counter in (("params", lambda m: count_params(m)), ("macs", lambda m: count_macs(m, example))):
        table = build_cost_table(get_cost_model(cost), supernet, net, example)
        for pick in (0, 3, -1):
            supernet.set_choices({n: l.op_names[pick % len(l.op_names)] for n, l in supernet.choice_layers().items()})
            assert table.chosen_ratio(supernet) == pytest.approx(counter(derive(supernet)) / counter(net), rel=1e-9)
        supernet.set_choices(None)


def test_resnet20_expand_train_derive_matches_and_loads_with_only_torch(tmp_path):
    """The issue's acceptance path on ResNet-20: expand -> train -> derive -> a fresh process with only torch."""
    from lwdc.models import create_model

    torch.manual_seed(0)
    example = torch.randn(1, 3, 32, 32)
    supernet = _trained_supernet(create_model("resnet20", num_classes=4), example, steps=3)
    assert len(supernet.choice_layers()) == 21
    derived = derive(supernet)
    x = torch.randn(3, 3, 32, 32)
    assert max_output_difference(supernet, derived, x) <= 1e-5
    torch.save(x, tmp_path / "x.pt")
    torch.save(derived.eval()(x).detach(), tmp_path / "y.pt")
    save_portable(derived, example, tmp_path / "model.pt2")
    code = (
        "import sys, torch\n"
        f"m = torch.export.load(r'{tmp_path / 'model.pt2'}').module()\n"
        f"x = torch.load(r'{tmp_path / 'x.pt'}'); y = torch.load(r'{tmp_path / 'y.pt'}')\n"
        "assert not any(k.startswith('lwdc') for k in sys.modules), 'lwdc was imported'\n"
        "print(float((m(x) - y).abs().max()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) <= 1e-5
