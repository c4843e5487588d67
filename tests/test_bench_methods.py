"""bench's comparison methods and plans without training: DepGraph's regulariser as a loss term, the budget
split, the queue's plan over seeds and costs, results over seeds in the report."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/ is not installed: import it from the checkout
configs = pytest.importorskip("bench.configs")
queue = pytest.importorskip("bench.queue")
report = pytest.importorskip("bench.report")


def test_group_sparsity_loss_adds_exactly_torch_pruning_regularize_to_the_gradient():
    pytest.importorskip("torch_pruning")
    from bench.pruning import GroupSparsity, _pruner
    from lwdc.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet8", width=0.5)
    for p in model.parameters():                  # unequal group norms, so gamma differs between channels
        p.data.mul_(torch.rand_like(p) * 2)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    ours, theirs, plain = copy.deepcopy(model), copy.deepcopy(model), copy.deepcopy(model)
    stats = ours.bn1.running_mean.clone()
    method = GroupSparsity(x[:1], reg=5e-4)
    method.setup(ours, total_steps=1)
    assert torch.equal(ours.bn1.running_mean, stats)             # tracing the graph leaves BatchNorm alone
    ours.train()
    (F.cross_entropy(ours(x), y) + method.extra_loss(ours)).backward()
    pruner = _pruner(theirs, x[:1], 0.5, True, "group", reg=5e-4)
    theirs.train()
    F.cross_entropy(theirs(x), y).backward()
    pruner.regularize(theirs)                     # what Torch-Pruning's benchmark calls after backward
    plain.train()
    F.cross_entropy(plain(x), y).backward()
    for (name, a), b, c in zip(ours.named_parameters(), theirs.parameters(), plain.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-9), name
    assert any(not torch.allclose(a.grad, c.grad) for a, c in zip(ours.parameters(), plain.parameters()))


def test_group_sparse_budget_is_split_and_sums_to_the_schedule():
    for name, s in configs.SCHEDULES.items():
        assert 1 <= s.sparse_epochs < s.post_epochs, name
        assert s.as_dict()["sparse_epochs"] == s.sparse_epochs
    assert configs.SCHEDULES["cpu-converged"].sparse_epochs == 6 == configs.SCHEDULES["cpu-converged"].post_epochs / 2


def test_queue_runs_the_baseline_once_and_every_other_job_per_seed():
    jobs = [" ".join(j) for j in queue.plan("resnet20", ["default"], "cpu-converged", seeds=[0, 1])]
    assert jobs.count("--method baseline") == 1 and jobs[0] == "--method baseline"
    per_seed = [j for j in jobs[1:] if "--seed 1" not in j]
    assert len(jobs) == 1 + 2 * len(per_seed)
    assert "--method prune-group-sparse --lam 1.6 --ops default --seed 1" in jobs
    assert "--method baseline-extended --seed 1" in jobs
    latency = [j for j in per_seed if "--cost latency:onnxruntime" in j]
    # the converged benchmark's own lambdas: MACs 0.6 first, latency 1, 3.2, 0.4 and 2; no per-layer L1
    assert configs.lambdas("resnet20", "cpu-converged") == (0.6, 1.6, 1.0)
    assert latency == [f"--method lwdc --lam {lam:g} --ops default --cost latency:onnxruntime"
                       for lam in (1, 3.2, 0.4, 2)]
    assert not any("prune-l1 " in j for j in jobs) and configs.operator_sets("resnet20", "cpu-converged") == ("default",)
    assert configs.lambdas("resnet20", "cpu", "latency:onnxruntime") == (3.2, 6.0, 2.0)   # elsewhere: twice MACs'
    assert configs.operator_sets("resnet20", "cpu") == ("default", "paper")
    # schedules that ran before the new methods keep their plan (their reports list nothing new as missing)
    assert not any("group-sparse" in " ".join(j) or "--cost" in j for j in queue.plan("resnet20", ["default"], "cpu"))


def _result(run, method, seed, acc, macs=50, **extra):
    return {"run": run, "method": method, "seed": seed, "accuracy": acc, "macs": macs, "macs_ratio": macs / 100,
            "params": 10, "latency_ms": {"eager_b1": 1.0 + seed}, "baseline_latency_ms": {"eager_b1": 2.0},
            "speed_ratio": {"eager_b1": None}, **extra}


def test_seeds_merge_into_means_and_single_seed_runs_pass_through_untouched():
    from bench.report_seeds import cell, diff_cell, merge_seeds

    one = _result("baseline", "baseline", 0, 80.0, 100)
    lw = [_result("lwdc-a", "lwdc", s, acc) for s, acc in ((1, 81.0), (0, 80.0))]
    pr = [_result("prune-a", "prune-l1", s, acc) for s, acc in ((0, 79.5), (1, 80.0))]
    merged = merge_seeds([one, *lw, *pr])
    assert merged[0] is one and len(merged) == 3
    m = merged[1]
    assert m["accuracy"] == 80.5 and m["latency_ms"] == {"eager_b1": 1.5} and m["speed_ratio"]["eager_b1"] is None
    assert [r["seed"] for r in m["seed_runs"]] == [0, 1]
    assert cell(m, "accuracy") == "80.50 (80.00 / 81.00)" and cell(one, "accuracy") == "80.00"
    assert diff_cell(m, merged[2]) == "+0.75 (+0.50 / +1.00)"
