"""Accuracy-driven layer-wise weight sharing: the greedy loop of the second method (issue 20).

Inspired by Grimaldi, Tenace and Calimera, "Layer-Wise Compressive Training for Convolutional Neural Networks"
(Future Internet 11(1):7, 2019). Only the paper's outline could be read; the loop below is our reconstruction
and every choice in it is ours:

1. prune with one global magnitude threshold (``sparsity`` of all prunable weights), then retrain briefly; the
   accuracy to keep (``start``) is the model's *before* pruning, so the budget covers the whole method;
2. rank layers by significance, least significant first: ``sparsity`` (the paper's rule as we read it: a layer
   the global threshold pruned more holds less that matters; significance = its density) or ``sensitivity``
   (measured: the accuracy lost when the layer alone is shared at the smallest codebook size, no retraining);
3. for each layer, try the codebook sizes of ``ladder`` from the smallest: share the layer (k-means over its
   unpruned weights), retrain briefly (the codebooks of shared layers and the weights of the others; pruned
   weights stay zero), and keep the first size whose validation accuracy is within ``budget`` points of
   ``start``; if none is, the layer goes back to what it was before the attempt.

Brief retraining uses SGD without weight decay (decay would pull the shared values toward zero, not toward
what the task needs). Data: ``val`` decides; never pass the test split.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..runs import CheckpointError, Run, load_checkpoint
from ..stages import config_fingerprint
from ..tasks import metric_drop
from ..train import TrainConfig, evaluate, fit
from . import MethodResult, register_method
from .codebook import (MaskedWeight, global_magnitude_masks, layer_bits, materialize, prunable_layers, prune,
                       share_layer)

__all__ = ["ShareSettings", "ShareResult", "SIGNIFICANCE_RULES", "layer_significance", "share_greedy", "holdout_split",
           "Share"]

SIGNIFICANCE_RULES = ("sparsity", "sensitivity")


@dataclass
class ShareSettings:
    sparsity: float = 0.5               # of all prunable weights, one global magnitude threshold
    ladder: tuple[int, ...] = (2, 4, 8, 16)
    budget: float = 1.0                 # accuracy points below the start a kept step may lose
    significance: str = "sparsity"
    prune_epochs: int = 1               # retraining after pruning
    retrain_epochs: int = 1             # retraining after each codebook attempt
    lr: float = 0.01
    max_batches: int | None = None
    holdout: float = 0.1                # as a pipeline method: share of the training set held out to decide on

    def validate(self) -> None:
        if self.significance not in SIGNIFICANCE_RULES:
            raise ValueError(f"significance must be one of {', '.join(SIGNIFICANCE_RULES)}, got {self.significance!r}")
        if not self.ladder or any(int(k) < 1 for k in self.ladder) or list(self.ladder) != sorted(set(self.ladder)):
            raise ValueError(f"ladder must be increasing codebook sizes >= 1, got {self.ladder}")
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")

    @classmethod
    def from_dict(cls, settings: dict | None) -> "ShareSettings":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(settings or {}) - known)
        if unknown:
            raise ValueError(f"share settings {', '.join(unknown)} are unknown; known: {', '.join(sorted(known))}")
        out = cls(**(settings or {}))
        out.ladder = tuple(int(k) for k in out.ladder)
        out.validate()
        return out


@dataclass
class ShareResult:
    model: nn.Module                    # parametrised: pruned layers masked, shared layers as codebooks
    start: float                        # validation accuracy before pruning
    pruned: float                       # after pruning and its retraining
    final: float
    layers: list[dict]                  # per layer in the order tried: significance, sparsity, k, bits, accuracy
    original_bits: int
    stored_bits: int

    @property
    def compression(self) -> float:
        return self.original_bits / self.stored_bits


def _accuracy(model: nn.Module, task, loader: Iterable, max_batches: int | None) -> float:
    return float(evaluate(model, task, loader, max_batches)[task.primary])


def _masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.parametrizations.weight[0].mask for n, m in prunable_layers(model).items()
            if parametrize.is_parametrized(m, "weight")}


def layer_significance(model: nn.Module, rule: str, task=None, val: Iterable | None = None, k: int = 2,
                       max_batches: int | None = None) -> dict[str, float]:
    """Significance per prunable layer (higher: share later). ``sparsity``: the layer's density after pruning;
    ``sensitivity``: minus the headline metric lost (``metric_drop``: accuracy points, or error points for a task
    whose metric is an error) when that layer alone is shared at ``k`` values."""
    layers = prunable_layers(model)
    masks = _masks(model)
    if rule == "sparsity":
        return {n: float(masks[n].float().mean()) if n in masks else 1.0 for n in layers}
    if rule != "sensitivity":
        raise ValueError(f"significance must be one of {', '.join(SIGNIFICANCE_RULES)}, got {rule!r}")
    base = _accuracy(model, task, val, max_batches)
    saved = copy.deepcopy(model.state_dict())        # (a parametrised module cannot be deep-copied itself)
    out = {}
    for name, layer in layers.items():
        share_layer(layer, k)
        out[name] = -metric_drop(task, base, _accuracy(model, task, val, max_batches))
        _unshare(layer, masks.get(name))
        model.load_state_dict(saved)
    return out


def share_greedy(model: nn.Module, task, train: Iterable, val: Iterable, settings: ShareSettings | None = None,
                 log: Callable[[str], None] = print, run: Run | None = None) -> ShareResult:
    """Prune, rank, and share layer by layer as far as ``settings.budget`` allows; ``model`` is changed in place.
    With ``run``, the loop checkpoints (stage ``share``) after pruning and after each layer's decision, and a
    second call on the same untouched model resumes after the last decided layer."""
    s = settings or ShareSettings()
    s.validate()
    retrain = TrainConfig(epochs=s.retrain_epochs, lr=s.lr, weight_decay=0.0, progress=False,
                          max_batches=s.max_batches, desc="share")
    quiet = lambda _msg: None  # noqa: E731 - the brief retrains would flood the log
    fingerprint = config_fingerprint({**s.__dict__, "ladder": list(s.ladder)})

    progress = _resume(run, model, fingerprint, log)
    if progress is None:
        progress = {"start": _accuracy(model, task, val, s.max_batches),
                    "original_bits": 32 * sum(m.weight.numel() for m in prunable_layers(model).values())}
        prune(model, global_magnitude_masks(model, s.sparsity))
        if s.prune_epochs > 0:
            fit(model, task, train, None, TrainConfig(**{**retrain.__dict__, "epochs": s.prune_epochs}), log=quiet)
        progress["pruned"] = _accuracy(model, task, val, s.max_batches)
        progress["significance"] = layer_significance(model, s.significance, task, val, s.ladder[0],
                                                      s.max_batches)
        progress["rows"] = []
        _checkpoint(run, model, fingerprint, progress)
    start, significance, rows = progress["start"], progress["significance"], progress["rows"]
    log(f"share: start {start:.2f}, pruned to {s.sparsity:.0%} sparsity {progress['pruned']:.2f} "
        f"(budget {s.budget:g} points)")
    order = sorted(significance, key=lambda n: (significance[n], n))
    for name in order[len(rows):]:
        layer = prunable_layers(model)[name]
        masked = _masks(model).get(name)
        mask = masked if masked is not None else torch.ones_like(layer.weight, dtype=torch.bool)
        saved = copy.deepcopy(model.state_dict())
        kept, acc = None, None
        for k in s.ladder:
            share_layer(layer, k)
            fit(model, task, train, None, retrain, log=quiet)
            acc = _accuracy(model, task, val, s.max_batches)
            if metric_drop(task, start, acc) <= s.budget:      # budget: points of the headline metric lost
                kept = k
                break
            _unshare(layer, masked)
            model.load_state_dict(saved)
        if kept is None:
            acc = _accuracy(model, task, val, s.max_batches)
        bits = layer_bits(mask.numel(), int(mask.sum()), kept)
        rows.append({"layer": name, "significance": significance[name], "sparsity": 1 - float(mask.float().mean()),
                     "codebook": kept, "bits_per_weight": bits["bits"] / mask.numel(), "bits": bits["bits"],
                     "format": bits["format"], "accuracy": acc})
        _checkpoint(run, model, fingerprint, progress)
        log(f"share: {name}: " + (f"{kept} values, {rows[-1]['bits_per_weight']:.2f} bits/weight" if kept else
                                  "kept as it was (no codebook size met the budget)") + f", accuracy {acc:.2f}")
    stored = sum(r["bits"] for r in rows)
    final = _accuracy(model, task, val, s.max_batches)
    return ShareResult(model, start, progress["pruned"], final, rows, progress["original_bits"], stored)


_STAGE = "share"
_MASK = ".parametrizations.weight.0.mask"


def _checkpoint(run: Run | None, model: nn.Module, fingerprint: str, progress: dict) -> None:
    if run is not None:
        run.save_stage(_STAGE, {"fingerprint": fingerprint, "state": model.state_dict(), **progress})


def _resume(run: Run | None, model: nn.Module, fingerprint: str, log) -> dict | None:
    """The loop's saved progress, with ``model`` rebuilt to it (masks, then codebooks of the decided layers, then
    every tensor); None when there is nothing to resume."""
    if run is None or not run.has_checkpoint(_STAGE):
        return None
    path = run.checkpoint_path(_STAGE)
    saved = load_checkpoint(path, _STAGE, required=("fingerprint", "state", "start", "pruned", "original_bits",
                                                    "significance", "rows"))
    if saved["fingerprint"] != fingerprint:
        raise CheckpointError(f"{path} was written with other share settings; use a new run folder or restore "
                              "the original settings")
    layers = prunable_layers(model)
    state, rows = saved.pop("state"), saved["rows"]
    try:
        prune(model, {k[:-len(_MASK)]: v for k, v in state.items() if k.endswith(_MASK)})
        for row in rows:
            if row["codebook"]:
                share_layer(layers[row["layer"]], row["codebook"], iters=0)
        model.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} holds another model ({str(exc).splitlines()[0]}); use a new run folder") \
            from None
    log(f"share: resuming after {len(rows)} decided layer(s) from {path}")
    return {k: v for k, v in saved.items() if k not in ("fingerprint", "lwdc_checkpoint", "version")}


def _unshare(layer: nn.Module, mask: torch.Tensor | None) -> None:
    """Undo ``share_layer``: back to a float weight, masked if it was (the caller restores the values)."""
    parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    layer.weight.requires_grad_(True)
    if mask is not None:
        parametrize.register_parametrization(layer, "weight", MaskedWeight(mask))


@register_method("share")
class Share:
    """The greedy loop as a compression method (``compress(..., method="share", share={...})``): the model it
    hands back keeps its codebooks trainable through the pipeline's fine-tuning; ``finish`` makes them plain
    weights (each layer then holds at most its codebook's values, and zeros)."""

    name = "share"

    def apply(self, model: nn.Module, ctx) -> MethodResult:
        settings = ShareSettings.from_dict(ctx.config.share)
        train, val, where = _decision_split(ctx, settings.holdout)
        ctx.log(f"share: decisions on {where}")
        work = copy.deepcopy(model)
        t0 = time.perf_counter()
        r = share_greedy(work, ctx.task, train, val,
                         ShareSettings(**{**settings.__dict__, "max_batches": ctx.config.max_batches}), log=ctx.log,
                         run=ctx.run)
        choices = {row["layer"]: (f"{row['codebook']} values" if row["codebook"] else "float32")
                   for row in r.layers}
        return MethodResult(model=work, choices=choices, wall_time_s={"share": time.perf_counter() - t0},
                            report={"share": {"start": r.start, "pruned": r.pruned, "final": r.final,
                                              "original_bits": r.original_bits, "stored_bits": r.stored_bits,
                                              "compression": r.compression, "layers": r.layers,
                                              "settings": {**settings.__dict__, "ladder": list(settings.ladder)},
                                              "decided_on": where}})

    def finish(self, model: nn.Module) -> nn.Module:
        return materialize(model)


def _decision_split(ctx, holdout: float):
    """Training and validation loaders for the greedy decisions. The pipeline's ``val_data`` is often the test
    split (the command line passes it), and deciding on it would tune on the test set: from a ``BatchLoader``
    a seeded ``holdout`` share of the training samples is held out instead; other loaders need ``val_data``."""
    from ..data import BatchLoader

    if isinstance(ctx.train_data, BatchLoader) and 0 < holdout < 1:
        return holdout_split(ctx.train_data, holdout, ctx.config.seed)
    if ctx.val_data is None:
        raise ValueError("the share method keeps accuracy within a budget: give validation data, or a BatchLoader "
                         "of training data to hold a share of it out")
    return ctx.train_data, ctx.val_data, "the validation data passed to compress (keep the test split out of it)"


def holdout_split(data, holdout: float, seed: int):
    """``(train, held_out, description)``: a ``BatchLoader`` split into a seeded ``holdout`` share of its samples
    (batches of 256, unshuffled) and the rest (the loader's own settings)."""
    from ..data import BatchLoader

    n = len(data.data)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = max(1, int(round(holdout * n)))
    if n - cut < data.batch_size:
        raise ValueError(f"holding out {cut} of {n} training samples leaves fewer than one batch "
                         f"({data.batch_size}); lower share holdout or the batch size")
    train = BatchLoader(data.data.subset(order[cut:].tolist()), data.batch_size, shuffle=data.shuffle,
                        augment=data.augment, seed=data.seed, rank=data.rank, world_size=data.world_size,
                        drop_last=data.drop_last)
    return train, BatchLoader(data.data.subset(order[:cut].tolist()), 256), \
        f"{cut} training samples held out ({holdout:.0%}, seed {seed}); the test split is not used"
