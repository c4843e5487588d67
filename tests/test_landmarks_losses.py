"""Landmark losses against their formulas (values and gradients at hand-computed points, continuity at the zone
boundaries, RWing's dead zone), and the Landmarks task: masking of invisible points, metrics in original pixels,
sums that add up over batches, and a headline metric where lower is better."""
import math
from dataclasses import dataclass

import pytest
import torch

from lwdc.landmarks import L1, L2, Landmarks, RWing, SmoothL1, Wing, get_loss, loss_parameters
from lwdc.tasks import get_task, higher_is_better, list_tasks, metric_drop, Classification


def _value_grad(fn, x: float) -> tuple[float, float]:
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = fn(t)
    (g,) = torch.autograd.grad(y, t)
    return float(y.detach()), float(g)


LN2, LN6, LN575 = math.log(2), math.log(6), math.log(5.75)


@pytest.mark.parametrize("fn, x, value, grad", [
    (L2(), 3.0, 4.5, 3.0), (L2(), -2.0, 2.0, -2.0),
    (L1(), -3.0, 3.0, -1.0), (L1(), 0.5, 0.5, 1.0),
    (SmoothL1(), 0.5, 0.125, 0.5), (SmoothL1(), 3.0, 2.5, 1.0), (SmoothL1(beta=2.0), 1.0, 0.25, 0.5),
    # Wing w=10, eps=2: 10 ln(1 + |x|/2) below 10, gradient 10 / (2 + |x|); beyond, |x| - C, C = 10 - 10 ln 6
    (Wing(), 2.0, 10 * LN2, 2.5), (Wing(), -2.0, 10 * LN2, -2.5), (Wing(), 0.0, 0.0, 0.0),
    (Wing(), 15.0, 15 - (10 - 10 * LN6), 1.0), (Wing(), -15.0, 15 - (10 - 10 * LN6), -1.0),
    (Wing(w=4.0, eps=0.5), 1.0, 4 * math.log(3), 4 / 1.5),
    # RWing r=0.5: zero below 0.5; 10 ln(1 + (|x| - 0.5)/2) up to 10, gradient 10 / (2 + |x| - 0.5);
    # beyond, |x| - C with C = 10 - 10 ln(1 + 9.5/2)
    (RWing(), 0.3, 0.0, 0.0), (RWing(), -0.49, 0.0, 0.0), (RWing(), 2.5, 10 * LN2, 2.5),
    (RWing(), -2.5, 10 * LN2, -2.5), (RWing(), 12.0, 12 - (10 - 10 * LN575), 1.0),
    (RWing(w=10, eps=2, r=0.0), 2.0, 10 * LN2, 2.5),                  # r = 0 is Wing
])
def test_loss_values_and_gradients_at_hand_computed_points(fn, x, value, grad):
    v, g = _value_grad(fn, x)
    assert v == pytest.approx(value, abs=1e-9) and g == pytest.approx(grad, abs=1e-9)


@pytest.mark.parametrize("fn, boundaries", [(Wing(), [10.0]), (Wing(w=5, eps=1), [5.0]), (RWing(), [0.5, 10.0]),
                                            (RWing(w=6, eps=1, r=2), [2.0, 6.0]), (SmoothL1(beta=1.5), [1.5])])
def test_losses_are_continuous_at_their_zone_boundaries(fn, boundaries):
    for b in boundaries:
        for sign in (1, -1):
            below, above = fn(torch.tensor(sign * (b - 1e-9), dtype=torch.float64)), \
                fn(torch.tensor(sign * (b + 1e-9), dtype=torch.float64))
            assert float(below) == pytest.approx(float(above), abs=1e-6)
    wing = Wing()
    assert float(wing(torch.tensor(10.0, dtype=torch.float64))) == pytest.approx(10 * LN6)   # C makes it meet


def test_rwing_has_zero_loss_and_gradient_inside_its_radius():
    x = torch.linspace(-0.999, 0.999, 41, dtype=torch.float64).requires_grad_(True)
    loss = RWing(r=1.0)(x)
    (g,) = torch.autograd.grad(loss.sum(), x)
    assert loss.abs().max() == 0 and g.abs().max() == 0
    outside = torch.tensor([1.5, -1.5], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(RWing(r=1.0)(outside).sum(), outside)
    assert g.tolist() == pytest.approx([10 / 2.5, -10 / 2.5])     # w / (eps + |x| - r) just beyond the radius


def test_loss_parameters_are_checked_and_named():
    assert loss_parameters("rwing") == ["w", "eps", "r"] and loss_parameters("l2") == []
    assert get_loss("RWing", w=8, r=1) == RWing(w=8.0, eps=2.0, r=1.0)
    with pytest.raises(ValueError, match="loss l2 takes no parameter.*w"):
        get_loss("l2", w=3)
    with pytest.raises(ValueError, match=r"r must be in \[0, w\)"):
        RWing(w=5, r=5)
    with pytest.raises(ValueError, match="eps must be a positive"):
        Wing(eps=0)
    with pytest.raises(ValueError, match="unknown landmark loss 'huber'"):
        get_loss("huber")


# ------------------------------------------------------------------------------------------------ the task
def _case():
    """Two images of 100x50 px, three points; the prediction is off by known pixel amounts."""
    truth = torch.tensor([[[0.2, 0.4], [0.5, 0.5], [0.8, 0.6]],
                          [[0.1, 0.1], [0.6, 0.3], [0.9, 0.9]]])
    off_px = torch.tensor([[[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]],       # distances 5, 0, 10
                           [[0.0, 2.0], [12.0, 5.0], [0.0, 0.0]]])     # distances 2, 13, 0
    size = torch.tensor([[100.0, 50.0], [100.0, 50.0]])
    pred = truth + off_px / size.unsqueeze(1)
    target = {"points": truth, "size": size, "norm": torch.tensor([20.0, 10.0])}
    return pred.reshape(2, 6), target


def test_metrics_in_original_pixels():
    pred, target = _case()
    task = Landmarks("l2", pck_px=5.5, point_names=["a", "b", "c"])
    m = task.summarize(task.batch_stats(pred, target))
    d = [5, 0, 10, 2, 13, 0]
    assert m["rmse_px"] == pytest.approx(math.sqrt(sum(v * v for v in d) / 6))
    assert m["mean_error_px"] == pytest.approx(sum(d) / 6)
    assert m["nme"] == pytest.approx(100 * ((15 / 3) / 20 + (15 / 3) / 10) / 2)     # per image, then averaged
    assert m["pck"] == pytest.approx(100 * 4 / 6)                                    # 5, 0, 2, 0 within 5.5 px
    assert m["error_px/a"] == pytest.approx(3.5) and m["error_px/b"] == pytest.approx(6.5)
    assert m["visible"] == 6


def test_without_sizes_errors_are_in_input_pixels_and_nme_uses_the_bounding_box():
    truth = torch.tensor([[[0.25, 0.25], [0.75, 0.75]]])
    pred = (truth + torch.tensor([[[0.1, 0.0], [0.0, 0.0]]])).reshape(1, 4)
    task = Landmarks("l1", input_size=(20, 40))            # (H, W): 0.1 of the width is 4 px
    m = task.summarize(task.batch_stats(pred, truth))
    assert m["mean_error_px"] == pytest.approx(2.0)
    diag = math.hypot(0.5 * 40, 0.5 * 20)
    assert m["nme"] == pytest.approx(100 * 2.0 / diag)
    # the loss: per coordinate, in input pixels, averaged over the visible coordinates (L1: 4 px / 4 coordinates)
    assert float(task.loss(pred, truth)) == pytest.approx(1.0)


def test_invisible_points_never_enter_loss_or_metrics():
    """Planted NaNs: loss, metrics and gradients equal those of the visible points alone."""
    torch.manual_seed(0)
    n, k = 6, 5
    truth = torch.rand(n, k, 2)
    size = torch.tensor([[640.0, 480.0]]).expand(n, 2)
    norm = torch.full((n,), 100.0)
    hidden = torch.zeros(n, k, dtype=torch.bool)
    hidden[0, 1] = hidden[2, 4] = hidden[3, 0] = hidden[3, 3] = True
    planted = truth.clone()
    planted[hidden] = float("nan")
    pred = torch.rand(n, 2 * k, requires_grad=True)
    task = Landmarks("rwing", input_size=(64, 64), point_names=list("abcde"))
    loss = task.loss(pred, {"points": planted, "size": size, "norm": norm})
    (grad,) = torch.autograd.grad(loss, pred)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert (grad.reshape(n, k, 2)[hidden] == 0).all()                 # no pull toward an invisible point
    visible = ~hidden
    err = ((pred.detach().reshape(n, k, 2) - truth) * 64)[visible]   # the visible coordinates only
    want = RWing()(err).mean()
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5)
    m = task.summarize(task.batch_stats(pred.detach(), {"points": planted, "size": size, "norm": norm}))
    dist = ((pred.detach().reshape(n, k, 2) - truth) * torch.tensor([640.0, 480.0])).norm(dim=-1)
    assert m["visible"] == visible.sum().item()
    assert m["mean_error_px"] == pytest.approx(float(dist[visible].mean()), rel=1e-5)
    assert m["rmse_px"] == pytest.approx(float(dist[visible].pow(2).mean().sqrt()), rel=1e-5)
    per_image = torch.stack([dist[i][visible[i]].mean() for i in range(n)]) / 100
    assert m["nme"] == pytest.approx(100 * float(per_image.mean()), rel=1e-5)
    assert m["error_px/a"] == pytest.approx(float(dist[:, 0][visible[:, 0]].mean()), rel=1e-5)
    assert all(math.isfinite(v) for v in m.values())


def test_batch_sums_add_up_to_the_whole_set():
    pred, target = _case()
    task = Landmarks("wing")
    whole = task.summarize(task.batch_stats(pred, target))
    parts = [task.batch_stats(pred[i:i + 1], {k: v[i:i + 1] for k, v in target.items()}) for i in range(2)]
    summed = {k: parts[0][k] + parts[1][k] for k in parts[0]}
    assert task.summarize(summed) == pytest.approx(whole)


def test_the_task_is_registered_and_lower_is_better():
    assert "landmarks" in list_tasks()
    task = get_task("landmarks", loss="l1")
    assert task.primary == "nme" and not higher_is_better(task) and higher_is_better(Classification())
    assert metric_drop(task, 10.0, 12.5) == 2.5                 # an error that grew by 2.5 points got worse
    assert metric_drop(Classification(), 90.0, 87.5) == 2.5     # an accuracy that fell by 2.5 points
    assert metric_drop(task, 10.0, 8.0) == -2.0                 # improvements are negative drops
    with pytest.raises(ValueError, match="2 per point"):
        task.loss(torch.zeros(2, 5), torch.zeros(2, 3, 2))


@dataclass
class _ErrorRate(Classification):
    """Classification whose headline is the error rate (100 - accuracy): lower is better."""

    primary: str = "error"
    higher_is_better: bool = False

    def summarize(self, stats):
        out = super().summarize(stats)
        return {**out, "error": 100.0 - out["accuracy"]}


def test_weight_sharing_budget_reads_a_lower_is_better_metric_the_right_way(quadrants):
    """The share method keeps a codebook when the headline lost at most ``budget`` points, and ranks layers by
    what sharing them costs: with an error rate as headline it must decide exactly as with the accuracy (read as
    higher-is-better, a rising error counted as a gain and every layer was shared)."""
    import copy

    from lwdc.methods.share import ShareSettings, share_greedy
    from lwdc.train import TrainConfig, fit
    from conftest import TinyNet

    train, val = quadrants
    torch.manual_seed(0)
    net = TinyNet(width=8)
    fit(net, Classification(), train, None, TrainConfig(epochs=5, lr=0.05, progress=False), log=lambda m: None)
    settings = ShareSettings(budget=0.5, sparsity=0.0, prune_epochs=0, retrain_epochs=0, ladder=(1,),
                             significance="sensitivity")
    runs = [share_greedy(copy.deepcopy(net), task, train, val, settings, log=lambda m: None)
            for task in (Classification(), _ErrorRate())]
    decided = [[(row["layer"], row["codebook"]) for row in r.layers] for r in runs]
    assert decided[0] == decided[1]
    assert any(k is None for _, k in decided[0])         # one value per layer costs accuracy: refused somewhere
    assert runs[1].start == pytest.approx(100 - runs[0].start)
