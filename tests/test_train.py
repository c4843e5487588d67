"""The loop trains, the search responds to lambda, and bad settings are refused."""
import copy
import math
import os
import subprocess
import sys

import pytest
import torch

from lwdc.costs import build_cost_table, get_cost_model
from lwdc.derivation import derive
from lwdc.methods.search import Search, SearchSettings
from lwdc.space import expand
from lwdc.tasks import Classification
from lwdc.train import TrainConfig, TrainingDiverged, evaluate, fit

from conftest import TinyNet


def test_plain_training_learns(quadrants):
    train, val = quadrants
    torch.manual_seed(0)
    net = TinyNet()
    task = Classification()
    history = fit(net, task, train, val, TrainConfig(epochs=8, lr=0.05, progress=False), log=lambda s: None)
    assert history[-1].val["accuracy"] > 90 and history[-1].train["loss"] < history[0].train["loss"]
    assert evaluate(net, task, val)["accuracy"] == pytest.approx(history[-1].val["accuracy"])


def test_adamw_trains_and_an_unknown_optimizer_is_named(quadrants):
    from lwdc import CompressConfig
    train, val = quadrants
    torch.manual_seed(0)
    net = TinyNet()
    history = fit(net, Classification(), train, val, TrainConfig(epochs=8, lr=0.02, optimizer="adamw",
                                                                  progress=False), log=lambda s: None)
    assert history[-1].val["accuracy"] > 90
    with pytest.raises(ValueError, match="optimizer 'adam'.*sgd, adamw"):
        fit(TinyNet(), Classification(), train, val, TrainConfig(epochs=1, optimizer="adam", progress=False),
            log=lambda s: None)
    with pytest.raises(ValueError, match="optimizer 'rmsprop'"):
        CompressConfig(optimizer="rmsprop").validate()


def _search(lam, train, val, epochs=6, seed=0):
    torch.manual_seed(seed)
    net = TinyNet(width=16)
    fit(net, Classification(), train, None, TrainConfig(epochs=3, lr=0.05, progress=False), log=lambda s: None)
    example = train[0][0][:1]
    supernet = expand(net, example, "default", seed=seed)
    table = build_cost_table(get_cost_model("macs"), supernet, net, example)
    cfg = TrainConfig(epochs=epochs, lr=0.05, progress=False)
    search = Search(SearchSettings(arch_lr=0.05, lam=lam, tau_start=3, tau_end=0.5), table)
    fit(supernet, Classification(), train, val, cfg, method=search, log=lambda s: None)
    return supernet, table


def test_larger_lambda_gives_fewer_macs(quadrants):
    """Monotone over three lambdas on a tiny search (the issue's acceptance check)."""
    train, val = quadrants
    ratios = []
    for lam in (0.0, 0.5, 4.0):
        supernet, table = _search(lam, train, val)
        ratios.append(table.chosen_ratio(supernet))
    assert ratios[0] > ratios[1] > ratios[2], ratios


def test_derived_model_scores_what_the_searched_supernet_scores(quadrants):
    train, val = quadrants
    supernet, table = _search(0.0, train, val)
    task = Classification()
    acc = evaluate(supernet, task, val)["accuracy"]
    derived = derive(supernet)
    assert evaluate(derived, task, val)["accuracy"] == pytest.approx(acc)


def test_search_anneals_the_sampling_noise_to_its_end_value(quadrants):
    train, val = quadrants
    torch.manual_seed(0)
    net = TinyNet(width=8)
    example = train[0][0][:1]
    supernet = expand(net, example, "default", seed=0)
    seen = []
    supernet.register_forward_pre_hook(lambda m, _x: seen.append(m.gate.noise) if m.training else None)
    table = build_cost_table(get_cost_model("macs"), supernet, net, example)
    cfg = TrainConfig(epochs=2, lr=0.05, progress=False)
    search = Search(SearchSettings(lam=1.0, noise_end=0.2, bn_batches=0), table)
    fit(supernet, Classification(), train, None, cfg, method=search, log=lambda s: None)
    assert seen[0] == pytest.approx(1.0)
    assert seen == sorted(seen, reverse=True) and 0.2 < seen[-1] < 0.25


@pytest.mark.parametrize("lam", [-1, math.nan, math.inf])
def test_negative_or_non_finite_lambda_rejected(lam):
    with pytest.raises(ValueError, match="lambda must be a finite number >= 0"):
        Search(SearchSettings(lam=lam))


def test_missing_cost_rejected_and_search_needs_a_supernet(quadrants):
    train, _ = quadrants
    with pytest.raises(ValueError, match="cost_table"):
        Search(SearchSettings(lam=1))
    with pytest.raises(TypeError, match="Supernet"):
        fit(TinyNet(), Classification(), train, None, TrainConfig(epochs=1, progress=False),
            method=Search(SearchSettings(lam=0)))


def test_zero_max_batches_is_refused(quadrants):
    with pytest.raises(ValueError, match="max_batches must be >= 1"):
        fit(TinyNet(), Classification(), quadrants[0], None, TrainConfig(epochs=1, max_batches=0, progress=False))


def test_nan_loss_stops_with_step(quadrants):
    train, _ = quadrants
    bad = [(x * math.inf, y) for x, y in train]
    with pytest.raises(TrainingDiverged, match="epoch 1, step 1"):
        fit(TinyNet(), Classification(), bad, None, TrainConfig(epochs=1, progress=False), log=lambda s: None)


def test_resume_from_epoch_state_matches_uninterrupted(quadrants):
    train, val = quadrants
    states = []

    def run(epochs, state=None, keep=None):
        torch.manual_seed(0)
        net = TinyNet()
        supernet = expand(net, train[0][0][:1], "minimal", seed=0)
        table = build_cost_table(get_cost_model("params"), supernet, net, train[0][0][:1])
        cfg = TrainConfig(epochs=epochs, progress=False)
        fit(supernet, Classification(), train, None, cfg, method=Search(SearchSettings(lam=0.3), table), state=state,
            on_epoch=(lambda s, e: keep.append(copy.deepcopy(s))) if keep is not None else None, log=lambda s: None)
        return supernet

    full = run(3)
    run(3, keep=states)                          # the same run, recording its per-epoch states
    resumed = run(3, state=states[0])            # restart after epoch 1
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k


_STRIDED_SHORTCUT = """
import torch
from torch import nn
from lwdc.tasks import Classification
from lwdc.train import TrainConfig, fit
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 16, 1, stride=2), nn.AdaptiveAvgPool2d(1),
                    nn.Flatten(), nn.Linear(16, 3))
batches = [(torch.randn(128, 3, 32, 32), torch.randint(0, 3, (128,))) for _ in range(3)]
fit(net, Classification(), batches, None, TrainConfig(epochs=2, lr=0.05, progress=False, channels_last=CL))
print("trained")
"""


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_model_whose_channels_last_backward_crashes_torch_trains_in_the_default_layout(channels_last):
    """Regression: a pruned ResNet (shortcut 1x1 stride 2 from 7 channels) aborted the benchmark with 'double
    free or corruption' in channels-last; such models now train in NCHW with a note. Run in a subprocess so a
    regression fails this test instead of killing pytest."""
    out = subprocess.run([sys.executable, "-c", _STRIDED_SHORTCUT.replace("CL", str(channels_last))],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "trained" in out.stdout
    assert ("channels-last layout not used: '1' is a strided 1x1 convolution with 4 input channels"
            in out.stdout) is channels_last
