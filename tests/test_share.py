"""The greedy layer-wise sharing loop (issue 20): the smallest codebook within the budget, layers that cannot
meet it left as they were, significance ranks, storage accounting."""
import pytest
import torch
from torch.nn.utils import parametrize

from lwdc.methods.codebook import MaskedWeight, SharedWeight, prunable_layers
from lwdc.methods.share import ShareSettings, layer_significance, share_greedy
from lwdc.tasks import Classification

from conftest import TinyNet

FAST = dict(prune_epochs=1, retrain_epochs=1, lr=0.01)


def _trained(quadrants):
    from lwdc.train import TrainConfig, fit
    train, _ = quadrants
    torch.manual_seed(0)
    net = TinyNet(width=8)
    fit(net, Classification(), train, None, TrainConfig(epochs=3, lr=0.05, progress=False), log=lambda m: None)
    return net


def test_a_loose_budget_takes_the_smallest_codebook_everywhere(quadrants):
    train, val = quadrants
    net = _trained(quadrants)
    r = share_greedy(net, Classification(), train, val, ShareSettings(budget=100.0, **FAST), log=lambda m: None)
    assert [row["codebook"] for row in r.layers] == [2] * len(prunable_layers(net))
    for m in prunable_layers(r.model).values():
        (p,) = m.parametrizations.weight
        assert isinstance(p, SharedWeight) and p.codebook.numel() == 2
        assert torch.unique(m.weight[p.mask]).numel() <= 2 and not m.weight[~p.mask].any()   # pruned stay zero
    assert r.stored_bits == sum(row["bits"] for row in r.layers) and r.compression > 10


def test_an_unreachable_budget_leaves_every_layer_as_it_was(quadrants):
    train, val = quadrants
    net = _trained(quadrants)
    lines = []
    r = share_greedy(net, Classification(), train, val, ShareSettings(budget=-101.0, **FAST), log=lines.append)
    assert all(row["codebook"] is None for row in r.layers)
    assert all(isinstance(m.parametrizations.weight[0], MaskedWeight) for m in prunable_layers(r.model).values())
    assert r.final == pytest.approx(r.pruned)               # every failed attempt was rolled back
    assert r.stored_bits == r.original_bits                 # float32, dense: nothing saved
    assert sum("kept as it was" in line for line in lines) == len(r.layers)


def test_significance_rules(quadrants):
    train, val = quadrants
    net = _trained(quadrants)
    from lwdc.methods.codebook import global_magnitude_masks, prune
    prune(net, global_magnitude_masks(net, 0.5))
    density = layer_significance(net, "sparsity")
    for name, m in prunable_layers(net).items():
        assert density[name] == pytest.approx(float(m.parametrizations.weight[0].mask.float().mean()))
    drop = layer_significance(net, "sensitivity", Classification(), val, k=1)
    assert set(drop) == set(density) and all(v <= 100 for v in drop.values())
    assert min(drop.values()) < 0                           # one value per layer costs accuracy somewhere
    with pytest.raises(ValueError, match="significance must be one of sparsity, sensitivity"):
        ShareSettings(significance="random").validate()
    with pytest.raises(ValueError, match="ladder must be increasing"):
        ShareSettings(ladder=(4, 2)).validate()


def test_stored_bits_are_what_the_encoder_writes_and_decode_gives_the_trained_weights(quadrants):
    from lwdc.methods.codebook import decode, encode

    train, val = quadrants
    net = _trained(quadrants)
    r = share_greedy(net, Classification(), train, val, ShareSettings(budget=100.0, ladder=(2, 4), **FAST),
                     log=lambda m: None)
    written = 0
    for m in prunable_layers(r.model).values():
        p = m.parametrizations.weight[0]
        if isinstance(p, SharedWeight):
            stored = encode(p)
            assert torch.equal(decode(stored), m.weight.detach())       # bit for bit, after retraining
            written += stored["bits"]
        else:
            written += 32 * m.weight.numel()
    assert written == r.stored_bits


def test_share_is_a_compression_method_whose_result_is_a_plain_shared_model(quadrants):
    from lwdc import compress

    train, val = quadrants
    net = _trained(quadrants)
    result = compress(net, train, val, method="share", finetune_epochs=1, progress=False, log=lambda m: None,
                      share={"budget": 100.0, "ladder": [2], "prune_epochs": 1, "retrain_epochs": 1})
    report = result.report["share"]
    assert [row["codebook"] for row in report["layers"]] == [2] * len(prunable_layers(net))
    for m in prunable_layers(result.model).values():
        assert not parametrize.is_parametrized(m)                          # plain weights after finish
        assert torch.unique(m.weight.detach()[m.weight.detach() != 0]).numel() <= 2   # still 2 values after tuning
    assert report["compression"] > 10 and set(result.choices.values()) == {"2 values"}
    assert report["decided_on"].startswith("the validation data passed")     # a list of batches: val_data
    from lwdc import format_summary
    line = next(x for x in format_summary(result.report).splitlines() if x.startswith("weights:"))
    assert f"({report['compression']:.1f}x)" in line and "budget 100 points" in line
    with pytest.raises(ValueError, match="share settings ladders are unknown"):
        compress(net, train, val, method="share", progress=False, log=None, share={"ladders": [2]})


def test_the_pipeline_method_holds_out_training_samples_instead_of_deciding_on_the_test_split():
    from types import SimpleNamespace

    from lwdc.data import BatchLoader
    from lwdc.data.datasets import ArrayDataset
    from lwdc.methods.share import _decision_split

    data = ArrayDataset(torch.randn(100, 1, 16), torch.arange(100) % 2, (0.0,), (1.0,))
    ctx = SimpleNamespace(train_data=BatchLoader(data, 16, shuffle=True, seed=3, drop_last=True),
                          val_data=["the test split"], config=SimpleNamespace(seed=0))
    train, val, where = _decision_split(ctx, 0.1)
    held, kept = val.data.x, train.data.x
    assert len(held) == 10 and len(kept) == 90 and "10 training samples held out" in where
    rows = {tuple(r.tolist()) for r in data.x.reshape(100, -1)}
    assert {tuple(r.tolist()) for r in held.reshape(10, -1)} | {tuple(r.tolist()) for r in kept.reshape(90, -1)} == rows
    assert not {tuple(r.tolist()) for r in held.reshape(10, -1)} & {tuple(r.tolist()) for r in kept.reshape(90, -1)}
    assert (train.batch_size, train.shuffle, train.seed, train.drop_last) == (16, True, 3, True)
    with pytest.raises(ValueError, match="leaves fewer than one batch"):
        _decision_split(ctx, 0.9)


def test_a_killed_loop_resumes_after_its_last_decided_layer_and_ends_as_an_uninterrupted_one(quadrants, tmp_path):
    from lwdc.runs import CheckpointError, Run

    train, val = quadrants
    settings = ShareSettings(budget=1.0, ladder=(2, 4), **FAST)
    whole = share_greedy(_trained(quadrants), Classification(), train, val, settings, log=lambda m: None,
                         run=Run(tmp_path / "whole"))

    class Killed(Exception):
        pass

    def kill_after_first_layer(line):
        if line.startswith("share: ") and "accuracy" in line and "start" not in line:
            raise Killed
    with pytest.raises(Killed):
        share_greedy(_trained(quadrants), Classification(), train, val, settings, log=kill_after_first_layer,
                     run=Run(tmp_path / "killed"))
    lines = []
    resumed = share_greedy(_trained(quadrants), Classification(), train, val, settings, log=lines.append,
                           run=Run(tmp_path / "killed"))
    assert any("resuming after 1 decided layer" in line for line in lines)
    assert sum(line.startswith("share: ") and "accuracy" in line and "start" not in line for line in lines) \
        == len(whole.layers) - 1                                        # the decided layer is not tried again
    assert resumed.layers == whole.layers and resumed.final == whole.final
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="other share settings"):
        share_greedy(_trained(quadrants), Classification(), train, val, ShareSettings(budget=2.0, **FAST),
                     log=lambda m: None, run=Run(tmp_path / "killed"))
