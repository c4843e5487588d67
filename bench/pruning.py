"""The structured-pruning baselines, built on Torch-Pruning and matched to a MACs target.

Torch-Pruning's dependency graph removes coupled channels together (residual additions, BatchNorm, the next
layer's inputs), so the result is a smaller plain model like LWDC's. Two importance criteria:

* ``l1``: L1 filter magnitude (``MagnitudeImportance(p=1)``). ``global_pruning=False`` takes the same fraction of
  channels from every layer group (Li et al., "Pruning Filters for Efficient ConvNets"); with ``True`` the scores
  are ranked across the whole network (the DepGraph paper's global variant).
* ``group``: the group L2 norm over every coupled layer (``GroupMagnitudeImportance(p=2)``, mean-normalised per
  group, ranked globally), used after sparse training with :class:`GroupSparsity`: the "DepGraph" configuration
  of Torch-Pruning's CIFAR benchmark (``--method group_sl --global-pruning``), its strongest method there.

The pruning fraction that meets a MACs target is found by bisection (the benchmark instead prunes in 400 small
steps until the speed-up is reached; bisection hits the target without overshooting it). Only bench/ imports
torch_pruning.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from lwdc.methods.base import TrainingMethod
from lwdc.modes import eval_mode
from lwdc.profiling import count_macs

__all__ = ["prune", "prune_to_macs", "torch_pruning_version", "GroupSparsity", "IMPORTANCE"]

IMPORTANCE = {"l1": "L1 filter magnitude (MagnitudeImportance p=1), Torch-Pruning dependency graph",
              "group": "group L2 norm over coupled layers (GroupMagnitudeImportance p=2, mean-normalised), after "
                       "group-regularised sparse training (GroupNormPruner.regularize), Torch-Pruning dependency graph"}


def torch_pruning_version() -> str:
    from importlib.metadata import version
    return version("torch-pruning")


def _import_tp():
    try:
        import torch_pruning as tp
    except ImportError as exc:
        raise ImportError("the pruning baseline needs Torch-Pruning: pip install 'lwdc[bench]' "
                          "(or pip install torch-pruning==1.6.1)") from exc
    return tp


def _pruner(model: nn.Module, example: torch.Tensor, ratio: float, global_pruning: bool, importance: str,
            reg: float = 0.0):
    """A Torch-Pruning pruner of ``model`` in place; the classifier's outputs are never pruned. Tracing runs one
    forward pass, in eval mode so that BatchNorm statistics stay as they are."""
    tp = _import_tp()
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    common = dict(pruning_ratio=ratio, global_pruning=global_pruning, ignored_layers=head, iterative_steps=1)
    with eval_mode(model):
        if importance == "l1":
            return tp.pruner.MetaPruner(model, example[:1], importance=tp.importance.MagnitudeImportance(p=1), **common)
        if importance == "group":
            return tp.pruner.GroupNormPruner(model, example[:1], importance=tp.importance.GroupMagnitudeImportance(p=2),
                                             reg=reg, **common)
    raise ValueError(f"unknown importance {importance!r}; choose one of {', '.join(IMPORTANCE)}")


def prune(model: nn.Module, example: torch.Tensor, ratio: float, global_pruning: bool,
          importance: str = "l1") -> nn.Module:
    """A pruned copy of ``model`` (the original is untouched) at ``ratio``.

    Deterministic for given weights, so a run can rebuild its pruned architecture from the weights it pruned and
    the recorded ratio before loading fine-tuned weights.
    """
    pruned = copy.deepcopy(model).eval()
    if ratio > 0:
        _pruner(pruned, example, ratio, global_pruning, importance).step()
    return pruned


def prune_to_macs(model: nn.Module, example: torch.Tensor, target_macs: int, global_pruning: bool,
                  tolerance: float = 0.01, max_ratio: float = 0.95, steps: int = 30,
                  importance: str = "l1") -> tuple[nn.Module, float, int]:
    """Bisect the pruning fraction until the pruned model's MACs are within ``tolerance`` of ``target_macs``
    (or as close as channel granularity allows). Returns ``(pruned_model, ratio, macs)``."""
    best: tuple[float, float, nn.Module, int] | None = None     # (relative error, ratio, model, macs)
    lo, hi = 0.0, max_ratio
    for _ in range(steps):
        ratio = (lo + hi) / 2
        candidate = prune(model, example, ratio, global_pruning, importance)
        macs = count_macs(candidate, example[:1])
        err = abs(macs / target_macs - 1)
        if best is None or err < best[0]:
            best = (err, ratio, candidate, macs)
        if err <= tolerance:
            break
        lo, hi = (ratio, hi) if macs > target_macs else (lo, ratio)
    assert best is not None
    return best[2], best[1], best[3]


class GroupSparsity(TrainingMethod):
    """Torch-Pruning's sparse training (DepGraph, Fang et al. CVPR 2023) as a hook of ``lwdc.train.fit``.

    Torch-Pruning calls ``pruner.regularize(model)`` between ``loss.backward()`` and ``optimizer.step()``: for
    every channel of every dependency group it adds ``reg * gamma_g * w`` to the gradient of the channel's weights
    (output filters, the next layers' input slices, BatchNorm scales), where ``gamma = alpha ** ((max - imp) /
    (max - min))`` over the group's normalised L2 importances, ``alpha = 16``: a per-channel weight decay, up to
    16x stronger on the weakest channels, so whole groups shrink together. ``fit`` has no after-backward hook, so
    :meth:`extra_loss` runs Torch-Pruning's own ``regularize`` on zeroed gradients to get that increment ``g``
    (it depends only on the current weights), then returns ``sum(g.detach() * w)``: its gradient is exactly
    ``g``, added to the task gradient by the same backward pass. Weight decay is off during this stage, as in
    Torch-Pruning's benchmark (the regulariser replaces it); the stage holds no state of its own, so a resumed
    run rebuilds the pruner from the checkpointed weights.
    """

    name = "sparsify"

    def __init__(self, example: torch.Tensor, reg: float, global_pruning: bool = True):
        self.example, self.reg, self.global_pruning = example, reg, global_pruning
        self.pruner = None

    def setup(self, model: nn.Module, total_steps: int) -> None:
        device = next(model.parameters()).device
        self.pruner = _pruner(model, self.example.to(device), 0.5, self.global_pruning, "group", self.reg)

    def extra_loss(self, model: nn.Module) -> torch.Tensor:
        params = [p for p in model.parameters() if p.requires_grad]
        kept = [p.grad for p in params]
        for p in params:
            p.grad = torch.zeros_like(p)
        self.pruner.regularize(model)
        increments = [p.grad for p in params]
        for p, g in zip(params, kept):
            p.grad = g
        return sum((g * p).sum() for g, p in zip(increments, params))
