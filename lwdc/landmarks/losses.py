"""Landmark regression losses, each an element-wise function of the coordinate error ``x`` (prediction minus
truth), in pixels of the model's input image (see ``Landmarks``: a normalised error times the input size).

Wing and RWing are from Feng et al., "Wing loss for robust facial landmark localisation with convolutional
neural networks" (CVPR 2018) and its rectified variant (Feng et al., IJCV 2020). Small and medium errors are
what a trained model is left with; L2 hardly weighs them (its gradient shrinks with the error), L1 weighs them
evenly; Wing's log zone gives them a larger gradient (w/eps at zero), its linear zone keeps outliers from
dominating as they do under L2. RWing adds a zone of radius ``r`` with zero loss, so the model stops chasing
errors as small as the labels' own noise.

Each loss is a small frozen dataclass: its parameters are checked once, printed in its repr and stored in a
run's settings. Formulas (``|x|`` the absolute error, all parameters in input pixels):

* ``l2``        0.5 x^2
* ``l1``        |x|
* ``smooth-l1`` 0.5 x^2 / beta for |x| < beta, |x| - 0.5 beta beyond (Girshick 2015; beta = 1 as in the Wing paper)
* ``wing``      w ln(1 + |x|/eps) for |x| < w, |x| - C beyond, C = w - w ln(1 + w/eps) (continuous at w)
* ``rwing``     0 for |x| < r, w ln(1 + (|x| - r)/eps) for r <= |x| < w, |x| - C beyond,
                C = w - w ln(1 + (w - r)/eps) (continuous at r and at w)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

__all__ = ["L2", "L1", "SmoothL1", "Wing", "RWing", "LOSSES", "get_loss", "loss_parameters"]


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value}")


@dataclass(frozen=True)
class L2:
    """0.5 x^2: the mean squared error's shape; large errors dominate the gradient."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * x


@dataclass(frozen=True)
class L1:
    """|x|: every error pulls with the same force (gradient +-1)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()


@dataclass(frozen=True)
class SmoothL1:
    """Quadratic below ``beta`` pixels, linear beyond: L1 without its kink at zero."""

    beta: float = 1.0

    def __post_init__(self) -> None:
        _positive("beta", self.beta)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a = x.abs()
        return torch.where(a < self.beta, 0.5 * x * x / self.beta, a - 0.5 * self.beta)


@dataclass(frozen=True)
class Wing:
    """Log zone for |x| < ``w`` (curvature set by ``eps``: smaller eps, steeper near zero), linear beyond.

    Defaults w = 10, eps = 2 are the Wing paper's (errors in input pixels of 64x64 to 128x128 face crops)."""

    w: float = 10.0
    eps: float = 2.0

    def __post_init__(self) -> None:
        _positive("w", self.w)
        _positive("eps", self.eps)

    @property
    def C(self) -> float:
        return self.w - self.w * math.log1p(self.w / self.eps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a = x.abs()
        return torch.where(a < self.w, self.w * torch.log1p(a.clamp(max=self.w) / self.eps), a - self.C)


@dataclass(frozen=True)
class RWing:
    """Wing with a zero-loss zone of radius ``r``: 0 (and zero gradient) for |x| < r, then Wing's log shape
    shifted by r up to ``w``, linear beyond. r = 0 is Wing. Default r = 0.5 input pixels is ours (about the
    rounding error of a label at the input resolution); w and eps as Wing's."""

    w: float = 10.0
    eps: float = 2.0
    r: float = 0.5

    def __post_init__(self) -> None:
        _positive("w", self.w)
        _positive("eps", self.eps)
        if not (math.isfinite(self.r) and 0 <= self.r < self.w):
            raise ValueError(f"r must be in [0, w) = [0, {self.w}), got {self.r}")

    @property
    def C(self) -> float:
        return self.w - self.w * math.log1p((self.w - self.r) / self.eps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a = x.abs()
        inner = (a.clamp(min=self.r, max=self.w) - self.r) / self.eps   # 0 inside r: constant, zero gradient
        return torch.where(a < self.w, self.w * torch.log1p(inner), a - self.C)


LOSSES = {"l2": L2, "l1": L1, "smooth-l1": SmoothL1, "wing": Wing, "rwing": RWing}


def loss_parameters(name: str) -> list[str]:
    """The parameters the loss ``name`` takes (``w``, ``eps``, ``r``, ``beta``)."""
    return [f.name for f in fields(_loss_class(name))]


def _loss_class(name: str) -> type:
    key = str(name).lower().replace("_", "-")
    if key not in LOSSES:
        raise ValueError(f"unknown landmark loss {name!r}; known: {', '.join(LOSSES)}")
    return LOSSES[key]


def get_loss(name: str, **params: float):
    """The loss ``name`` with ``params`` (a parameter it does not take is an error naming those it does)."""
    cls = _loss_class(name)
    unknown = sorted(set(params) - set(loss_parameters(name)))
    if unknown:
        raise ValueError(f"loss {name} takes no parameter(s) {', '.join(unknown)}; it takes: "
                         f"{', '.join(loss_parameters(name)) or 'none'}")
    return cls(**{k: float(v) for k, v in params.items()})
