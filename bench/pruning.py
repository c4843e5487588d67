"""The structured-pruning baseline: Torch-Pruning one-shot L1 filter pruning, matched to a MACs target.

Torch-Pruning's dependency graph removes coupled channels together (residual additions, BatchNorm, the next
layer's inputs), so the result is a smaller plain model like LWDC's. ``global_pruning=False`` takes the same
fraction of channels from every layer group (Li et al., "Pruning Filters for Efficient ConvNets"); with
``True`` the L1 scores are ranked across the whole network (the DepGraph paper's global variant). The
pruning fraction that meets a MACs target is found by bisection. Only bench/ imports torch_pruning.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from lwdc.profiling import count_macs

__all__ = ["prune", "prune_to_macs", "torch_pruning_version"]


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


def prune(model: nn.Module, example: torch.Tensor, ratio: float, global_pruning: bool) -> nn.Module:
    """A pruned copy of ``model`` (the original is untouched): L1-magnitude filter pruning at ``ratio``.

    Deterministic for given weights, so a run can rebuild its pruned architecture from the baseline and the
    recorded ratio before loading fine-tuned weights. The classifier's outputs are never pruned.
    """
    tp = _import_tp()
    pruned = copy.deepcopy(model).eval()
    if ratio <= 0:
        return pruned
    head = [m for m in pruned.modules() if isinstance(m, nn.Linear)][-1:]
    pruner = tp.pruner.MetaPruner(pruned, example[:1], importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio, global_pruning=global_pruning, ignored_layers=head,
                                  iterative_steps=1)
    pruner.step()
    return pruned


def prune_to_macs(model: nn.Module, example: torch.Tensor, target_macs: int, global_pruning: bool,
                  tolerance: float = 0.01, max_ratio: float = 0.95, steps: int = 30) -> tuple[nn.Module, float, int]:
    """Bisect the pruning fraction until the pruned model's MACs are within ``tolerance`` of ``target_macs``
    (or as close as channel granularity allows). Returns ``(pruned_model, ratio, macs)``."""
    best: tuple[float, float, nn.Module, int] | None = None     # (relative error, ratio, model, macs)
    lo, hi = 0.0, max_ratio
    for _ in range(steps):
        ratio = (lo + hi) / 2
        candidate = prune(model, example, ratio, global_pruning)
        macs = count_macs(candidate, example[:1])
        err = abs(macs / target_macs - 1)
        if best is None or err < best[0]:
            best = (err, ratio, candidate, macs)
        if err <= tolerance:
            break
        lo, hi = (ratio, hi) if macs > target_macs else (lo, ratio)
    assert best is not None
    return best[2], best[1], best[3]
