"""Branch warm-up: teach every new branch to imitate the layer it may replace, before the search starts.

The LWDC search starts from a trained model, but its new branches start from random weights. Sampled
uniformly, a path through 20 layers is then almost never the trained network, and the search sees chance-level
accuracy (measured on ResNet-20: ~12% train accuracy through the first search epochs, against 58% for the
original). Local distillation fixes that cheaply: with the original network as teacher (eval mode, no
gradient), each branch of each layer learns to reproduce that layer's output from that layer's input, by a
per-layer normalised mean squared error. Layers train independently and in parallel in one pass over the data,
so this costs about one training epoch and needs no labels.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from .device import module_device, resolve_device, to_device
from .space import Supernet

__all__ = ["warm_up_branches"]


def warm_up_branches(supernet: Supernet, loader: Iterable, batches: int, lr: float = 2e-3,
                     log: Callable[[str], None] = print, device: str | torch.device | None = None) -> dict[str, float]:
    """Distil the original branch of every choice layer into its other trainable branches.

    Returns the final normalised error (mean over the last 10% of steps) per "layer/op"; 0 means a perfect copy,
    1 means no better than predicting the mean. Layers whose candidates do not include ``original`` are skipped.
    It runs on ``device`` (None: where the supernet is) and leaves the supernet where it found it.
    """
    layers = {n: l for n, l in supernet.choice_layers().items() if "original" in l.op_names}
    students = {(n, op): branch for n, l in layers.items() for op, branch in zip(l.op_names, l.branches)
                if op != "original" and any(p.requires_grad for p in branch.parameters())}
    if not students or batches <= 0:
        return {}
    home = module_device(supernet)
    where = resolve_device(device) if device is not None else home
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [l.register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, (i[0].detach(), o.detach())))
             for n, l in layers.items()]
    forced = {n: l.fixed for n, l in layers.items()}
    was = supernet.training
    params = [p for b in students.values() for p in b.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    errors: dict[str, list[float]] = {f"{n}/{op}": [] for n, op in students}
    try:
        supernet.to(where)
        for n, l in layers.items():
            l.fixed = l.op_names.index("original")
        for step, (x, _) in enumerate(loader):
            if step >= batches:
                break
            supernet.eval()
            with torch.no_grad():
                supernet(to_device(x, where))
            loss = torch.zeros((), device=where)
            for (n, op), branch in students.items():
                inp, target = captured[n]
                branch.train()
                err = (branch(inp) - target).pow(2).mean() / target.var().clamp_min(1e-8)
                errors[f"{n}/{op}"].append(float(err.detach()))
                loss = loss + err
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        for h in hooks:
            h.remove()
        for n, l in layers.items():
            l.fixed = forced[n]
        supernet.train(was)
        supernet.to(home)
    tail = {k: sum(v[-max(1, len(v) // 10):]) / max(1, len(v[-max(1, len(v) // 10):])) for k, v in errors.items() if v}
    if tail:
        log(f"warm-up: {len(students)} branches distilled over {min(batches, step + 1)} batches; "
            f"mean normalised error {sum(tail.values()) / len(tail):.3f}")
    return tail
