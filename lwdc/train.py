"""One training loop for baseline training, architecture search and fine-tuning.

The loop knows nothing of supernets, gates or costs: what differs between plain training and LWDC's search
comes from a method (:mod:`lwdc.methods`), through hooks. The loop owns what every method shares: SGD with
Nesterov momentum 0.9 and weight decay 5e-4 on the weights, a cosine learning-rate decay per step (after an
optional linear warm-up), checkpoints handed to callbacks, distributed gradient averaging, divergence checks.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from . import distributed as dist
from .binary import BINARY_CONVS, clip_latent_weights
from .device import module_device, resolve_device, to_cpu, to_device
from .methods.base import TrainingMethod
from .modes import eval_mode
from .progress import progress
from .tasks import Task

__all__ = ["TrainConfig", "EpochLog", "TrainingDiverged", "fit", "evaluate", "lr_schedule"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint written is the last good state."""


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    max_batches: int | None = None      # cap on batches per epoch (smoke tests, quick looks)
    checkpoint_every: int = 0           # also hand a resumable state to ``on_step`` every N batches (0: epochs only)
    progress: bool = True
    desc: str = "train"
    device: str = "auto"                # auto (cuda if available), cpu, cuda, cuda:N; see lwdc.device
    lr_warmup_epochs: float = 0.0       # linear learning-rate warm-up before the cosine decay (0: none)
    channels_last: bool = False         # NHWC memory layout for 2-D models (1.3-1.6x faster on this CPU)
    optimizer: str = "sgd"              # weights' optimiser: "sgd" (Nesterov momentum) or "adamw" (see OPTIMIZERS)


#: The weights' optimisers ``TrainConfig.optimizer`` names. SGD with Nesterov momentum suits classification from
#: scratch; AdamW (``momentum`` unused) is what direct coordinate regression needs here: on the landmark sets SGD at
#: 0.01-0.1 never left the mean-position predictor where AdamW at 1e-3 learned (docs/landmarks.md).
OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(params, cfg: TrainConfig, no_decay: Iterable[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """The weights' optimiser; ``no_decay`` parameters (binary layers' latent weights) get no weight decay, which
    would pull them to 0 and make their signs flicker (docs/binary.md, training recipe)."""
    params, skip = list(params), {id(p) for p in no_decay}
    if any(id(p) in skip for p in params):
        params = [{"params": [p for p in params if id(p) not in skip]},
                  {"params": [p for p in params if id(p) in skip], "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer {cfg.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")


@dataclass
class EpochLog:
    epoch: int
    train: dict[str, float]
    val: dict[str, float]
    seconds: float
    cost_ratios: dict[str, float] = field(default_factory=dict)   # of the argmax choice, per cost table
    tau: float | None = None
    probabilities: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)          # a method's own figures (e.g. multipliers)

    def line(self, desc: str, epochs: int, primary: str) -> str:
        parts = [f"{desc:<9} epoch {self.epoch + 1:>3}/{epochs}", f"loss {self.train.get('loss', math.nan):.4f}",
                 f"train {primary} {self.train.get(primary, math.nan):6.2f}"]
        if self.val:
            parts.append(f"val {primary} {self.val.get(primary, math.nan):6.2f}")
        parts += [f"{name} {ratio:.3f}x" for name, ratio in self.cost_ratios.items()]
        parts += [f"{name} {value:.3g}" for name, value in self.extra.items()]
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


def stratified_indices(labels: torch.Tensor | None, n: int, total: int, seed: int = 0) -> torch.Tensor:
    """``n`` of ``total`` sample indices, sorted: every class in proportion to its share (each class's samples
    in a seeded random order, classes interleaved by rank / class size), or a seeded random subset when
    ``labels`` is None. The same ``(labels, n, seed)`` always give the same indices; no global RNG is used."""
    g = torch.Generator().manual_seed(seed)
    n = min(n, total)
    if labels is None:
        return torch.randperm(total, generator=g)[:n].sort().values
    key = torch.empty(total, dtype=torch.float64)
    jitter = torch.rand(total, generator=g, dtype=torch.float64)
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        order = idx[torch.randperm(len(idx), generator=g)]
        key[order] = (torch.arange(len(idx), dtype=torch.float64) + jitter[order]) / len(idx)
    return key.argsort()[:n].sort().values


def _eval_batches(loader: Iterable, limit: int | None, sample: str, seed: int):
    """What ``evaluate`` reads: every batch, the first ``limit`` ones, or ``limit`` batches' worth of a sample."""
    if sample not in ("stratified", "first"):
        raise ValueError(f"sample must be 'stratified' or 'first', got {sample!r}")
    data = getattr(loader, "data", None)
    size = getattr(loader, "batch_size", None)
    if (limit is None or sample == "first" or not hasattr(loader, "batch") or data is None or not size
            or getattr(loader, "world_size", 1) != 1 or limit * size >= len(data)):
        yield from _batches(loader, limit)
        return
    labels = data.y if getattr(data, "has_labels", False) else None
    idx = stratified_indices(labels, limit * size, len(data), seed)
    for b in range(0, len(idx), size):
        yield loader.batch(idx[b:b + size], b // size)


def batches_per_epoch(loader: Iterable, limit: int | None) -> int | None:
    """Batches one epoch of ``loader`` yields under the cap ``limit`` (None if the loader has no length)."""
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return limit
    return min(n, limit) if limit is not None else n


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, loader: Iterable, max_batches: int | None = None, *,
             sample: str = "stratified", seed: int = 0) -> dict[str, float]:
    """Eval-mode metrics over a loader (the supernet evaluates its argmax choice), on the model's device.

    With ``max_batches`` (a quick look) on a loader that holds its data set (``BatchLoader``), ``sample``
    chooses which ``max_batches * batch_size`` samples are evaluated: ``stratified`` (default; every class in
    proportion to its share, seeded by ``seed``, else a seeded random subset for targets that are not class
    labels) or ``first`` (the first batches, as before: on a test set sorted by class that is the first classes
    only). Other iterables are read from the start. Without ``max_batches`` every batch is evaluated.
    A task with ``collects_outputs`` also gets every output at once (``task.output_metrics``: AUC, thresholds).
    """
    device = module_device(model)
    stats: dict[str, float] = {}
    collect = getattr(task, "collects_outputs", False)
    outputs, targets = [], []
    with eval_mode(model):
        for x, y in _eval_batches(loader, max_batches, sample, seed):
            x, y = to_device(x, device), to_device(y, device)
            out = model(x)
            for k, v in task.batch_stats(out, y).items():
                stats[k] = stats.get(k, 0.0) + v
            if collect:
                outputs.append(out.detach().float().cpu())
                targets.append(y.detach().cpu())
    summary = task.summarize(stats)
    if collect and outputs:     # whole-set metrics (AUC, thresholds); the per-batch sums keep their values
        summary.update({k: v for k, v in task.output_metrics(torch.cat(outputs), torch.cat(targets)).items()
                        if k not in summary})
    return summary


def channels_last_hazard(model: nn.Module) -> str | None:
    """Why training ``model`` in channels-last would crash, or None.

    torch 2.13's CPU backward of a strided 1x1 convolution with 2-7 input channels in channels-last corrupts the
    heap (measured here: in_channels 2..7 abort or segfault within five steps, 1 and >= 8 do not); pruned
    networks have such shortcuts. Those models train in the default layout instead."""
    for name, m in model.named_modules():
        if (isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and max(m.stride) > 1
                and 2 <= m.in_channels < 8):
            return (f"'{name}' is a strided 1x1 convolution with {m.in_channels} input channels, whose channels-last "
                    "backward corrupts memory in torch's CPU kernels")
    return None


def fit(model: nn.Module, task: Task, train_loader: Iterable, val_loader: Iterable | None, cfg: TrainConfig, *,
        method: TrainingMethod | None = None, state: dict | None = None,
        on_epoch: Callable[[dict, EpochLog], None] | None = None, on_step: Callable[[dict], None] | None = None,
        log: Callable[[str], None] = print) -> list[EpochLog]:
    """Train ``model`` in place for ``cfg.epochs`` epochs, plainly or as ``method`` adds (e.g. LWDC's search).

    ``state`` is a dict from an earlier ``on_epoch``/``on_step`` call to resume from (mid-epoch states skip the
    batches already done); ``on_epoch`` receives the full resumable state after every epoch, ``on_step`` every
    ``cfg.checkpoint_every`` batches (write them atomically). Under ``torchrun`` each rank trains on its own
    shard, gradients are averaged over ranks and only rank 0 calls back and logs. Training runs on
    ``cfg.device``; the states handed to the callbacks hold CPU tensors (they resume on any device), and the
    model is moved back to the device it came on when training ends.
    """
    device = resolve_device(cfg.device)
    if cfg.checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0 batches (0: only after each epoch), got {cfg.checkpoint_every}")
    if cfg.max_batches is not None and cfg.max_batches < 1:
        raise ValueError(f"max_batches must be >= 1 (or None for whole epochs), got {cfg.max_batches}")
    method = method if method is not None else TrainingMethod()
    main = dist.is_main()
    home = module_device(model)
    model.to(device)
    steps_per_epoch = batches_per_epoch(train_loader, cfg.max_batches) or 1
    total_steps = max(cfg.epochs * steps_per_epoch, 1)
    method.setup(model, total_steps)  # refuses a model the method cannot train, before anything else
    latent = [m for m in model.modules() if isinstance(m, BINARY_CONVS)]   # binary layers' latent weights:
    optimizer = make_optimizer(method.weight_parameters(model), cfg,       # no decay, clipped after each step
                               no_decay=[m.weight for m in latent])
    extra_optimizers = method.optimizers()
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_schedule(total_steps, round(cfg.lr_warmup_epochs * steps_per_epoch)))
    layout = torch.channels_last if cfg.channels_last else None
    unsafe = channels_last_hazard(model) if layout is not None else None
    if unsafe is not None:
        layout = None
        if main and log is not None:
            log(f"channels-last layout not used: {unsafe}")
    if layout is not None:
        model.to(memory_format=layout)
    history: list[EpochLog] = []
    start_epoch, start_step, partial = 0, 0, {}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        method.load_state_dict(state)
        torch.set_rng_state(state["torch_rng"])
        history = [EpochLog(**h) for h in state["history"]]
        start_epoch, start_step = int(state["epoch"]), int(state.get("step", 0))
        partial = dict(state.get("stats") or {}) if main else {}   # stored summed over ranks: counted once
    dist.broadcast_module(model)       # every rank starts from rank 0's weights (warm-up ran per rank)

    def snapshot(epoch: int, step: int, stats: dict) -> dict:
        return to_cpu({
            "epoch": epoch, "step": step, "stats": stats, "world_size": dist.world_size(),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            **method.state_dict(), "torch_rng": torch.get_rng_state(), "history": [asdict(h) for h in history],
        })

    params = list(model.parameters())
    for epoch in range(start_epoch, cfg.epochs):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        model.train()
        first = start_step if epoch == start_epoch else 0
        stats: dict[str, float] = partial if epoch == start_epoch else {}
        started = time.perf_counter()
        bar = progress(_batches(train_loader, cfg.max_batches, first), total=steps_per_epoch, initial=first,
                       enabled=cfg.progress and main, desc=f"{cfg.desc} {epoch + 1}/{cfg.epochs}")
        for step, (x, y) in enumerate(bar, start=first):
            x, y = to_device(x, device), to_device(y, device)
            if layout is not None and x.dim() == 4:
                x = x.contiguous(memory_format=layout)
            method.before_step(model, epoch * steps_per_epoch + step, total_steps)
            output = model(x)
            loss = task.loss(output, y)
            for extra in (method.extra_loss(model), method.batch_loss(x, output)):
                if extra is not None:
                    loss = loss + extra
            if dist.any_nonfinite(loss):
                raise TrainingDiverged(f"{cfg.desc}: loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}"
                                       f"{' (on some rank)' if dist.is_distributed() else ''}; the last checkpoint "
                                       "holds the last good state (try a lower learning rate)")
            optimizer.zero_grad(set_to_none=True)
            for opt in extra_optimizers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            dist.average_gradients(params)
            optimizer.step()
            if latent:
                clip_latent_weights(latent)
            for opt in extra_optimizers:
                opt.step()
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
        method.before_eval(model, train_loader)
        dist.average_buffers(model)     # BatchNorm statistics were estimated on each rank's shard
        val = evaluate(model, task, val_loader) if val_loader is not None else {}
        entry = EpochLog(epoch=epoch, train=task.summarize(stats), val=val, seconds=time.perf_counter() - started,
                         **method.epoch_fields(model))
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


def _check_finite(model: nn.Module, desc: str, epoch: int, step: int) -> None:
    """Refuse to checkpoint non-finite weights (a finite loss can still come with an overflowing gradient)."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingDiverged(f"{desc}: weights became non-finite by epoch {epoch + 1}, step {step} ({bad[0]}"
                               f"{' and %d more' % (len(bad) - 1) if len(bad) > 1 else ''}); the last checkpoint "
                               "holds the last good state (try a lower learning rate)")


def lr_schedule(total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up over ``warmup_steps``, then cosine decay to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))
    return factor
