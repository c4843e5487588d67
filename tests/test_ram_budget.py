"""Peak-RAM budgets (issue 24): the windowed table agrees with the real memory planner, a per-channel affine
runs in place (and the compiled C still matches), a RAM budget below the original's peak is met and measured by
the planner, and an impossible one is refused before any training with the floor."""
from __future__ import annotations

import random

import pytest
import torch

from lwdc import compress
from lwdc.budgets import BudgetError
from lwdc.costs import build_cost_table, get_cost_model
from lwdc.costs.ram import peak_ram_bytes
from lwdc.derivation import derive
from lwdc.export.c import export_c
from lwdc.export.c.graph import lower
from lwdc.export.c.plan import plan_memory
from lwdc.space import expand

from conftest import TinyNet
from test_budgets import QUICK


@pytest.fixture(scope="module")
def space():
    torch.manual_seed(0)
    net = TinyNet(width=16).eval()
    x = torch.randn(2, 3, 16, 16)
    supernet = expand(net, x, "default").eval()
    return net, x, supernet


@pytest.mark.parametrize("spec", ["ram", "ram:plain"])
def test_the_windowed_table_equals_the_planner_on_random_choices(space, spec):
    net, x, supernet = space
    table = build_cost_table(get_cost_model(spec), supernet, net, x)
    assert table.reference == peak_ram_bytes(net, x, *(("float32",) if "float32" in spec else ()),
                                             in_place="plain" not in spec)
    rng = random.Random(0)
    layers = supernet.choice_layers()
    seen = set()
    try:
        for draw in range(8):
            for name, layer in layers.items():
                layer.fixed = rng.randrange(len(layer.op_names))
                if draw == 0 and name == "conv2":       # one draw surely off the original's peak
                    layer.fixed = layer.op_names.index("skip")
            real = table.measure(derive(supernet))
            assert table.chosen_ratio(supernet) * table.reference == pytest.approx(real * table.reference, abs=0.5)
            seen.add(round(real, 6))
    finally:
        for layer in layers.values():
            layer.fixed = None
    if spec != "ram:plain":
        assert len(seen) > 1, "the draws never changed the peak: the check would not see a wrong table"


def test_the_floor_is_what_the_lightest_choice_reaches_and_in_place_lowers_it(space):
    net, x, supernet = space
    in_place = build_cost_table(get_cost_model("ram"), supernet, net, x)
    plain = build_cost_table(get_cost_model("ram:plain"), supernet, net, x)
    # Skipping conv2 leaves BatchNorm as a per-channel affine on a dying tensor: in place, one buffer fewer. (Both
    # floors are below 1: a lighter operator also needs a smaller patch buffer than the blocked int8 3x3 kernel.)
    assert in_place.floor_ratio() < plain.floor_ratio() <= 1.0
    lightest = {n: layer.op_names[int(in_place.layer_costs[n].argmin())]
                for n, layer in supernet.choice_layers().items()}
    model = derive(supernet, lightest).eval()
    assert peak_ram_bytes(model, x) == pytest.approx(in_place.floor_ratio() * in_place.reference)
    skipped = derive(supernet, {n: ("skip" if n == "conv2" else "original") for n in supernet.choice_layers()}).eval()
    assert peak_ram_bytes(skipped, x) < peak_ram_bytes(skipped, x, in_place=False)


@pytest.mark.parametrize("int8", [False, True])
def test_an_affine_conv_written_in_place_still_matches_in_c(space, tmp_path, int8):
    net, x, supernet = space
    model = derive(supernet, {n: ("skip" if n == "conv2" else "original") for n in supernet.choice_layers()}).eval()
    graph = lower(model, x[:1])
    plan = plan_memory(graph, 1 if int8 else 4)
    merged = [n for n in graph.nodes if n.op == "conv" and plan.offset(graph, n.output) == plan.offset(graph, n.inputs[0])]
    assert merged, "no conv shares its input's buffer: the in-place path is not exercised"
    result = export_c(model, x[:1], tmp_path / "c", int8=int8, calib=x)
    verified = result.summary["verified"]
    if verified is None:
        pytest.skip("no C compiler")
    if int8:
        assert verified["int8_matches_reference"] is True
    else:
        assert verified["max_abs_diff_vs_pytorch"] <= verified["limit"]


def test_a_ram_budget_below_the_original_peak_is_met_and_measured_by_the_planner(quadrants):
    train, val = quadrants
    torch.manual_seed(0)
    net = TinyNet(width=16)
    example = train[0][0][:1]
    original = peak_ram_bytes(net, example)
    limit = int(0.8 * original)
    result = compress(net, train, val, budgets={"ram": str(limit)}, **QUICK)
    assert peak_ram_bytes(result.model, example) <= limit < original
    (row,) = result.report["budgets"]
    assert row["met"] and row["measured_by"] == "memory planner"
    assert row["achieved"] == pytest.approx(peak_ram_bytes(result.model, example))


def test_an_impossible_ram_budget_is_refused_before_training_with_the_floor(quadrants):
    train, val = quadrants
    lines = []
    with pytest.raises(BudgetError, match=r"no choice of operators gets below 0\.545x .*9,216 bytes"):
        compress(TinyNet(width=16), train, val, budgets={"ram": "8KiB"}, **{**QUICK, "log": lines.append})
    assert not any("warm" in line or "epoch" in line for line in lines), lines
