"""One training loop for baseline training, architecture search and fine-tuning.

Search is fine-tuning plus three things: a second optimiser for the gates' alpha vectors, an annealed gate
temperature, and the resource term ``lam * expected cost ratio`` added to the task loss. Weights and gates are
updated together on the same batch (single-level, "in one go"), as the LWDC paper trains them.

Choices made where the paper is silent (see docs/DESIGN.md for the measurements behind them):
* weights: SGD, Nesterov momentum 0.9, weight decay 5e-4, cosine learning-rate decay per step;
* gates: Adam (betas 0.5, 0.999, no weight decay), learning rate ``arch_lr``;
* gate temperature: exponential decay from ``tau_start`` to ``tau_end`` over the search, and of the sampling
  noise scale from 1 to ``noise_end`` (see lwdc.gate);
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed as dist
from .device import module_device, resolve_device, to_cpu, to_device
from .gate import anneal_temperature
from .space import Supernet
from .tasks import Task

__all__ = ["TrainConfig", "EpochLog", "TrainingDiverged", "fit", "evaluate", "recalibrate_batchnorm"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint written is the last good state."""


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    arch_lr: float = 0.01
    lam: float = 0.0
    tau_start: float = 5.0
    tau_end: float = 0.5
    noise_end: float = 0.25             # Gumbel noise scale at the end of the search (from 1 at its start)
    bn_batches: int = 20                # BatchNorm re-estimation before a supernet is evaluated
    max_batches: int | None = None      # cap on batches per epoch (smoke tests, quick looks)
    checkpoint_every: int = 0           # also hand a resumable state to ``on_step`` every N batches (0: epochs only)
    progress: bool = True
    desc: str = "train"
    device: str = "auto"                # auto (cuda if available), cpu, cuda, cuda:N; see lwdc.device
    lr_warmup_epochs: float = 0.0       # linear learning-rate warm-up before the cosine decay (0: none)
    channels_last: bool = False         # NHWC memory layout for 2-D models (1.3-1.6x faster on this CPU)


@dataclass
class EpochLog:
    epoch: int
    train: dict[str, float]
    val: dict[str, float]
    seconds: float
    cost_ratios: dict[str, float] = field(default_factory=dict)   # of the argmax choice, per cost table
    tau: float | None = None
    probabilities: dict[str, list[float]] = field(default_factory=dict)

    def line(self, desc: str, epochs: int, primary: str) -> str:
        parts = [f"{desc:<9} epoch {self.epoch + 1:>3}/{epochs}", f"loss {self.train.get('loss', math.nan):.4f}",
                 f"train {primary} {self.train.get(primary, math.nan):6.2f}"]
        if self.val:
            parts.append(f"val {primary} {self.val.get(primary, math.nan):6.2f}")
        parts += [f"{name} {ratio:.3f}x" for name, ratio in self.cost_ratios.items()]
        if self.tau is not None:
            parts.append(f"tau {self.tau:.2f}")
        parts.append(f"{self.seconds:.1f}s")
        return "  ".join(parts)


def _batches(loader: Iterable, limit: int | None, start: int = 0):
    """Batches ``start`` .. ``limit - 1`` of one epoch; a loader with ``iter_from`` (``BatchLoader``) skips the
    first ones without building them, any other iterable is read and the skipped batches dropped."""
    source, i = (loader.iter_from(start), start) if start and hasattr(loader, "iter_from") else (iter(loader), 0)
    for batch in source:
        if limit is not None and i >= limit:
            return
        if i >= start:
            yield batch
        i += 1


def batches_per_epoch(loader: Iterable, limit: int | None) -> int | None:
    """Batches one epoch of ``loader`` yields under the cap ``limit`` (None if the loader has no length)."""
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return limit
    return min(n, limit) if limit is not None else n


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: Iterable, batches: int) -> None:
    """Re-estimate BatchNorm running statistics for the network as it is now.

    In a supernet the BatchNorm after a choice layer has averaged statistics over whichever branches were
    sampled, so eval-mode numbers would describe no real network. Before the supernet is evaluated (and so
    before it is derived) the statistics are recomputed as a plain average over ``batches`` training batches
    of its current argmax network.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or batches <= 0:
        return
    was = model.training
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                      # cumulative average
    layers = list(model.choice_layers().values()) if isinstance(model, Supernet) else []
    forced = [layer.fixed for layer in layers]
    for layer in layers:
        layer.fixed = layer.chosen
    model.train()
    device = module_device(model)
    try:
        for x, _ in _batches(loader, batches):
            model(to_device(x, device))
    finally:
        for layer, fixed in zip(layers, forced):
            layer.fixed = fixed
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.train(was)


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, loader: Iterable, max_batches: int | None = None) -> dict[str, float]:
    """Eval-mode metrics over a loader (the supernet evaluates its argmax choice), on the model's device."""
    was = model.training
    model.eval()
    device = module_device(model)
    stats: dict[str, float] = {}
    try:
        for x, y in _batches(loader, max_batches):
            x, y = to_device(x, device), to_device(y, device)
            for k, v in task.batch_stats(model(x), y).items():
                stats[k] = stats.get(k, 0.0) + v
    finally:
        model.train(was)
    return task.summarize(stats)


def fit(model: nn.Module, task: Task, train_loader: Iterable, val_loader: Iterable | None, cfg: TrainConfig, *,
        cost_table=None, report_tables: tuple = (), state: dict | None = None,
        on_epoch: Callable[[dict, EpochLog], None] | None = None, on_step: Callable[[dict], None] | None = None,
        log: Callable[[str], None] = print) -> list[EpochLog]:
    """Train ``model`` in place for ``cfg.epochs`` epochs; a :class:`Supernet` is searched, anything else trained.

    ``cost_table`` prices the search (needed when ``cfg.lam > 0``); ``report_tables`` only add their argmax
    ratio to each epoch's line. ``state`` is a dict from an earlier ``on_epoch``/``on_step`` call to resume from
    (mid-epoch states skip the batches already done); ``on_epoch`` receives the full resumable state after every
    epoch, ``on_step`` every ``cfg.checkpoint_every`` batches (write them atomically). Under ``torchrun`` each
    rank trains on its own shard, gradients are averaged over ranks and only rank 0 calls back and logs.
    Training runs on ``cfg.device``; the states handed to the callbacks hold CPU tensors (they resume on any
    device), and the model is moved back to the device it came on when training ends.
    """
    device = resolve_device(cfg.device)
    if cfg.lam < 0:
        raise ValueError(f"lambda must be >= 0, got {cfg.lam}")
    if cfg.checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0 batches (0: only after each epoch), got {cfg.checkpoint_every}")
    search = isinstance(model, Supernet)
    if search and cfg.lam > 0 and cost_table is None:
        raise ValueError("a search with lam > 0 needs a cost_table")
    main = dist.is_main()
    home = module_device(model)
    model.to(device)
    weights = model.weight_parameters() if search else [p for p in model.parameters()]
    optimizer = torch.optim.SGD(weights, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                                weight_decay=cfg.weight_decay)
    arch_optimizer = torch.optim.Adam(model.arch_parameters(), lr=cfg.arch_lr, betas=(0.5, 0.999)) if search else None
    steps_per_epoch = batches_per_epoch(train_loader, cfg.max_batches) or 1
    total_steps = max(cfg.epochs * steps_per_epoch, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_schedule(total_steps, round(cfg.lr_warmup_epochs * steps_per_epoch)))
    layout = torch.channels_last if cfg.channels_last else None
    if layout is not None:
        model.to(memory_format=layout)
    history: list[EpochLog] = []
    start_epoch, start_step, partial = 0, 0, {}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if search:
            arch_optimizer.load_state_dict(state["arch_optimizer"])
            model.gate.load_state_dict(state["gate"])
        torch.set_rng_state(state["torch_rng"])
        history = [EpochLog(**h) for h in state["history"]]
        start_epoch, start_step = int(state["epoch"]), int(state.get("step", 0))
        partial = dict(state.get("stats") or {}) if main else {}   # stored summed over ranks: counted once
    dist.broadcast_module(model)       # every rank starts from rank 0's weights (warm-up ran per rank)

    def snapshot(epoch: int, step: int, stats: dict) -> dict:
        return to_cpu({
            "epoch": epoch, "step": step, "stats": stats, "world_size": dist.world_size(),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "arch_optimizer": arch_optimizer.state_dict() if arch_optimizer is not None else None,
            "gate": model.gate.state_dict() if search else None, "torch_rng": torch.get_rng_state(),
            "history": [asdict(h) for h in history],
        })

    tables = ((cost_table,) if cost_table is not None else ()) + tuple(report_tables)
    params = list(model.parameters())
    for epoch in range(start_epoch, cfg.epochs):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        model.train()
        first = start_step if epoch == start_epoch else 0
        stats: dict[str, float] = partial if epoch == start_epoch else {}
        started = time.perf_counter()
        bar = tqdm(_batches(train_loader, cfg.max_batches, first), total=steps_per_epoch, initial=first,
                   disable=not (cfg.progress and main), desc=f"{cfg.desc} {epoch + 1}/{cfg.epochs}", leave=False,
                   dynamic_ncols=True)
        for step, (x, y) in enumerate(bar, start=first):
            x, y = to_device(x, device), to_device(y, device)
            if layout is not None and x.dim() == 4:
                x = x.contiguous(memory_format=layout)
            if search:
                global_step = epoch * steps_per_epoch + step
                model.gate.tau = anneal_temperature(global_step / total_steps, cfg.tau_start, cfg.tau_end)
                model.gate.noise = anneal_temperature(global_step / total_steps, 1.0, cfg.noise_end)
            output = model(x)
            loss = task.loss(output, y)
            if search and cfg.lam > 0:
                loss = loss + cfg.lam * cost_table.expected_ratio(model)
            if dist.any_nonfinite(loss):
                raise TrainingDiverged(f"{cfg.desc}: loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}"
                                       f"{' (on some rank)' if dist.is_distributed() else ''}; the last checkpoint "
                                       "holds the last good state (try a lower learning rate)")
            optimizer.zero_grad(set_to_none=True)
            if arch_optimizer is not None:
                arch_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            dist.average_gradients(params)
            optimizer.step()
            if arch_optimizer is not None:
                arch_optimizer.step()
            scheduler.step()
            for k, v in task.batch_stats(output.detach(), y).items():
                stats[k] = stats.get(k, 0.0) + v
            bar.set_postfix(loss=f"{loss.item():.3f}")
            done = step + 1
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < steps_per_epoch:
                _check_finite(model, cfg.desc, epoch, done)
                reduced = dist.all_reduce_sum(dict(stats))
                if on_step is not None and main:
                    on_step(snapshot(epoch, done, reduced))
        bar.close()
        stats = dist.all_reduce_sum(stats)
        if search:
            recalibrate_batchnorm(model, train_loader, cfg.bn_batches)
        dist.average_buffers(model)     # BatchNorm statistics were estimated on each rank's shard
        val = evaluate(model, task, val_loader) if val_loader is not None else {}
        entry = EpochLog(
            epoch=epoch, train=task.summarize(stats), val=val, seconds=time.perf_counter() - started,
            cost_ratios={t.name: t.chosen_ratio(model) for t in tables} if search else {},
            tau=model.gate.tau if search else None,
            probabilities={n: [round(float(p), 5) for p in layer.probabilities().detach()]
                           for n, layer in model.choice_layers().items()} if search else {},
        )
        history.append(entry)
        _check_finite(model, cfg.desc, epoch, steps_per_epoch)
        if on_epoch is not None and main:
            on_epoch(snapshot(epoch + 1, 0, {}), entry)
        if main:
            log(entry.line(cfg.desc, cfg.epochs, task.primary))  # after the checkpoint: nothing waits on the log
    model.to(home)
    if layout is not None:
        model.to(memory_format=torch.contiguous_format)
    return history


def lr_schedule(total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up over ``warmup_steps``, then cosine decay to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))
    return factor


def _check_finite(model: nn.Module, desc: str, epoch: int, step: int) -> None:
    """Refuse to checkpoint non-finite weights (a finite loss can still come with an overflowing gradient)."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingDiverged(f"{desc}: weights became non-finite by epoch {epoch + 1}, step {step} ({bad[0]}"
                               f"{' and %d more' % (len(bad) - 1) if len(bad) > 1 else ''}); the last checkpoint "
                               "holds the last good state (try a lower learning rate)")
