"""Multi-process training under ``torchrun``: process group, rank helpers, gradient and metric reduction.

Why no ``DistributedDataParallel`` wrapper: a single-path supernet runs a different subset of its parameters at
every step, so DDP would need ``find_unused_parameters`` (a graph walk per step) and would still require every
rank to use the same subset. Instead the gate samples the same path on every rank (its generator is seeded
identically), and after ``backward`` one flattened ``all_reduce`` averages all gradients (see
:func:`average_gradients`). Everything here is a no-op in a single process, so the training loop calls it
unconditionally.
"""
from __future__ import annotations

import datetime
import os
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

from .device import resolve_device

__all__ = ["init_from_env", "shutdown", "is_distributed", "rank", "world_size", "is_main", "barrier",
           "all_reduce_sum", "average_gradients", "broadcast_module", "average_buffers", "any_nonfinite"]


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0, device: str | torch.device = "auto") -> bool:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE``, ``RANK``,
    ``MASTER_ADDR``...). Returns True when running with more than one process. ``device`` is the training
    device setting (see :func:`lwdc.device.resolve_device`): on CUDA each rank is bound to ``cuda:LOCAL_RANK``
    and ``backend`` defaults to nccl, on CPU to gloo. A device that cannot be used raises ValueError."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    where = resolve_device(device)
    if where.type == "cuda":
        torch.cuda.set_device(where)
    dist.init_process_group(backend=backend or ("nccl" if where.type == "cuda" else "gloo"),
                            timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_world_size() > 1


def shutdown() -> None:
    """Leave the process group (after a last barrier, so no rank exits while another still writes)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Only rank 0 writes files and logs."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _comm_device() -> torch.device:
    """Where the small bookkeeping tensors of a collective must live: NCCL moves CUDA tensors only."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(stats: dict[str, float]) -> dict[str, float]:
    """Sum a dict of float statistics over ranks (tasks report sums, so sums combine exactly)."""
    if not is_distributed() or not stats:
        return stats
    keys = sorted(stats)
    t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def any_nonfinite(value: torch.Tensor) -> bool:
    """True on every rank if the scalar ``value`` is NaN/inf on any rank (so all ranks stop together)."""
    bad = torch.tensor([0.0 if torch.isfinite(value.detach()).all() else 1.0])
    if is_distributed():
        bad = bad.to(_comm_device())
        dist.all_reduce(bad)
    return bool(bad.item() > 0)


@torch.no_grad()
def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average ``.grad`` over ranks in one flattened all-reduce; a missing gradient counts as zero.

    A parameter that has no gradient on any rank keeps ``grad = None``, so the optimiser skips it exactly as in
    a single process (no weight decay or momentum step for a branch no rank ran).
    """
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    present = torch.tensor([0.0 if p.grad is None else 1.0 for p in params], device=_comm_device())
    dist.all_reduce(present)
    used = [p for p, n in zip(params, present.tolist()) if n > 0]
    if not used:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in used])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in used:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


@torch.no_grad()
def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (identical start, as DDP does at construction)."""
    if not is_distributed():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


@torch.no_grad()
def average_buffers(module: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics, estimated on each rank's shard)."""
    if not is_distributed():
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= dist.get_world_size()
