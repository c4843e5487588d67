"""The latency lookup table: keys, the on-disk cache, relational timings, and the cost table built from it."""
import json

import pytest
import torch
from torch import nn

from lwdc.costs import build_cost_table, get_cost_model
from lwdc.costs.latency import LatencyCost, default_cache_dir
from lwdc.models import create_model
from lwdc.space import expand


def quick(tmp_path, **kw) -> LatencyCost:
    return LatencyCost(cache_dir=tmp_path, repeats=5, min_seconds=0.01, **kw)


def test_measurements_are_cached_on_disk(tmp_path):
    conv = nn.Conv2d(8, 8, 3, padding=1)
    first = quick(tmp_path)
    value = first.measure(conv, (8, 16, 16))
    assert value > 0 and (first.measurements, first.cache_hits) == (1, 0)
    assert first.measure(conv, (8, 16, 16)) == value and (first.measurements, first.cache_hits) == (1, 1)
    again = quick(tmp_path)                       # a new process would see the same file
    assert again.measure(nn.Conv2d(8, 8, 3, padding=1), (8, 16, 16)) == value   # other weights, same structure
    assert again.measurements == 0
    saved = json.loads(again.path.read_text())
    assert saved["host"]["backend"] == "eager" and saved["host"]["torch"] == torch.__version__
    assert list(saved["entries"].values()) == [value]


def test_keys_separate_what_changes_the_time(tmp_path):
    cost = quick(tmp_path)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    keys = {cost.key(conv, (8, 16, 16)), cost.key(conv, (8, 8, 8)), cost.key(nn.Conv2d(8, 8, 3, padding=1, groups=8), (8, 16, 16)),
            quick(tmp_path, batch_size=4).key(conv, (8, 16, 16)), quick(tmp_path, threads=2).key(conv, (8, 16, 16))}
    assert len(keys) == 5
    assert cost.key(conv, (8, 16, 16)) == cost.key(nn.Conv2d(8, 8, 3, padding=1), (8, 16, 16))
    # Back ends (and hosts, library versions) live in separate files.
    assert quick(tmp_path).path != quick(tmp_path, backend="onnxruntime").path


def test_a_heavy_layer_measures_far_slower_than_a_skip(tmp_path):
    heavy = nn.Conv2d(64, 64, 3, padding=1)      # 37.7 M MACs
    for backend in ("eager", "onnxruntime"):
        cost = quick(tmp_path, backend=backend)
        assert cost.measure(heavy, (64, 32, 32)) > 5 * cost.measure(nn.Identity(), (64, 32, 32))


def test_negative_rest_is_clamped():
    """Timed one by one, the expanded layers can sum to more than the whole network; the rest then costs 0."""

    class Inflated:
        name, unit = "fake", "ms"

        def branch_cost(self, spec, op_name, branch):
            return 10.0 if op_name == "original" else 1.0

        def network_cost(self, model, example_input):
            return 5.0

    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    example = torch.randn(1, 3, 8, 8)
    supernet = expand(net, example, ["original", "skip", "conv1x1"])
    table = build_cost_table(Inflated(), supernet, net, example)
    n = len(supernet.choice_layers())
    assert (table.fixed, table.reference) == (0.0, 10.0 * n)
    assert table.chosen_ratio(supernet) == pytest.approx(1.0)
    supernet.set_choices({name: "skip" for name in supernet.choice_layers()})
    assert table.chosen_ratio(supernet) == pytest.approx(0.1)


def test_resnet20_table_builds_once_then_comes_from_the_cache(tmp_path):
    model = create_model("resnet20")
    example = torch.randn(1, 3, 32, 32)
    supernet = expand(model, example, "default")
    branches = sum(len(layer.branches) for layer in supernet.choice_layers().values())
    first = quick(tmp_path)
    table = build_cost_table(first, supernet, model, example)
    # Layers of one stage share shapes, so far fewer timings than branches (+ the originals and the network).
    assert 0 < first.measurements < branches / 2
    second = quick(tmp_path)
    again = build_cost_table(second, supernet, model, example)
    assert second.measurements == 0 and second.cache_hits == branches + len(supernet.choice_layers()) + 1
    assert all(torch.equal(table.layer_costs[k], again.layer_costs[k]) for k in table.layer_costs)
    assert table.reference == again.reference and table.fixed >= 0


def test_cache_folder_and_spec_strings(tmp_path, monkeypatch):
    monkeypatch.setenv("LWDC_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "latency"
    m = get_cost_model("latency:ort:b4:t2")
    assert (m.backend, m.batch_size, m.threads, m.cache_dir) == ("onnxruntime", 4, 2, tmp_path / "latency")
    assert get_cost_model("latency", cache_dir=tmp_path / "x").cache_dir == tmp_path / "x"
    with pytest.raises(ValueError, match="backend"):
        get_cost_model("latency:tensorrt")
    with pytest.raises(ValueError, match=">= 1"):
        get_cost_model("latency:b0")
