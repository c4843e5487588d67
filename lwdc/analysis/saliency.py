"""Where a classifier looks: input-gradient saliency, SmoothGrad and Grad-CAM, for 2-D images and 1-D signals.

Inputs are (N, C, *spatial); maps come back as (N, *spatial), one value per pixel or time step. Each call runs
the model in eval mode with its parameters frozen, then restores every submodule's mode and every parameter's
``requires_grad`` and removes its hooks, so it can be pointed at a model in the middle of training.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..modes import eval_mode

__all__ = ["grad_cam", "smoothgrad", "vanilla_gradient"]

Target = int | torch.Tensor | None    # None: each sample's argmax class; an int: that class for all; or (N,)

_UPSAMPLE = {3: "linear", 4: "bilinear", 5: "trilinear"}


@contextmanager
def _inspecting(model: nn.Module) -> Iterator[None]:
    """Eval mode, frozen parameters (only the input's gradient is wanted) and grad enabled; all restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    with eval_mode(model), torch.enable_grad():
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


def _check_input(x: torch.Tensor) -> None:
    if x.ndim < 3:
        raise ValueError(f"expected an input shaped (N, C, *spatial), got {tuple(x.shape)}")


def _targets(logits: torch.Tensor, target: Target) -> torch.Tensor:
    if logits.ndim != 2:
        raise ValueError(f"expected (N, classes) logits, got {tuple(logits.shape)}")
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target, dtype=torch.long, device=logits.device)
    if t.ndim == 0:
        t = t.expand(logits.shape[0])
    if t.shape != (logits.shape[0],):
        raise ValueError(f"target must be an int or one class per sample, got shape {tuple(t.shape)}")
    return t


def _input_gradient(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """d logit_target / d x, one target per sample (samples do not interact in eval mode, so one sum will do)."""
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    t = _targets(logits.detach(), target)
    (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), x)
    return grad


def vanilla_gradient(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """|d logit_target / d input|, max over channels (Simonyan et al. 2014): (N, *spatial)."""
    _check_input(x)
    with _inspecting(model):
        return _input_gradient(model, x, target).abs().amax(1)


def smoothgrad(model: nn.Module, x: torch.Tensor, target: Target = None, samples: int = 25, noise: float = 0.15,
               seed: int = 0) -> torch.Tensor:
    """Input gradients averaged over noisy copies of x (Smilkov et al. 2017), then |.| and max over channels.

    Noise is Gaussian with std ``noise`` times each sample's value range (max - min), drawn from a generator
    seeded with ``seed``, so results repeat and the global RNG is untouched. The target is chosen on the clean
    input, so every noisy copy explains the same class.
    """
    _check_input(x)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    x = x.detach()
    dims = tuple(range(1, x.ndim))
    sigma = noise * (x.amax(dims, keepdim=True) - x.amin(dims, keepdim=True))
    gen = torch.Generator(device=x.device).manual_seed(seed)
    total = torch.zeros_like(x)
    with _inspecting(model):
        if target is None:
            with torch.no_grad():
                target = model(x).argmax(1)
        for _ in range(samples):
            eps = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            total += _input_gradient(model, x + sigma * eps, target)
    return (total / samples).abs().amax(1)


def grad_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module | str, target: Target = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) at ``layer`` (a module or its qualified name): (N, *spatial), in [0, 1].

    ReLU of the layer's channels weighted by their spatially averaged gradients, upsampled to the input size
    (linear for 1-D, bilinear for 2-D) and divided by each sample's maximum (all zero where nothing is positive).
    The layer must produce (N, K, *spatial) with as many spatial dimensions as the input.
    """
    _check_input(x)
    module = model.get_submodule(layer) if isinstance(layer, str) else layer
    acts: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _args, out: acts.append(out))
    try:
        with _inspecting(model):
            # the input needs a gradient so that the graph reaches the layer even with frozen parameters
            logits = model(x.detach().clone().requires_grad_(True))
            if len(acts) != 1:
                raise RuntimeError(f"layer {layer!r} ran {len(acts)} times in one forward pass, not once")
            act = acts[0]
            if not isinstance(act, torch.Tensor) or act.ndim != x.ndim:
                shape = tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__
                raise ValueError(f"Grad-CAM needs a layer output shaped (N, K, *spatial) like the input, got {shape}")
            t = _targets(logits.detach(), target)
            (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), act)
    finally:
        handle.remove()
    weights = grad.mean(tuple(range(2, grad.ndim)), keepdim=True)
    cam = torch.relu((weights * act.detach()).sum(1, keepdim=True))
    if cam.shape[2:] != x.shape[2:]:
        cam = F.interpolate(cam, size=x.shape[2:], mode=_UPSAMPLE[x.ndim], align_corners=False)
    cam = cam[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(torch.finfo(cam.dtype).tiny)
    return cam / peak.view(-1, *([1] * (cam.ndim - 1)))
