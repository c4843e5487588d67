"""Augmentations for landmark data that move the points with the pixels: flip (with a left/right swap), rotation,
scale and shift in one affine warp, and colour jitter (points unmoved).

The geometry is one matrix per sample, in pixels of the model input measured from the image centre (x right,
y down): ``q' = s R(angle) F q + t`` (F mirrors x when flipped). Pixels are resampled through
``affine_grid``/``grid_sample`` (``align_corners=False``: normalised -1 and 1 are the image's outer edges, the same
convention as the points' ``u = (x + 0.5) / W``) with the inverse matrix, and the points are mapped with the
matrix itself, so both move identically. A positive angle turns the image clockwise on screen. A point the warp
carries out of the frame becomes invisible (NaN): its pixels are gone. A flipped sample's points are then
renumbered through the data's ``mirror`` target (each point's left/right partner, ``lwdc.data.landmarks``), so a
left ear mirrored into a right ear's place is labelled right ear.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F

from .augment import Augment, Target

__all__ = ["landmark_augment", "warp", "warp_matrices", "colour_jitter"]


def warp_matrices(angle_deg: torch.Tensor, scale: torch.Tensor, shift_px: torch.Tensor,
                  flip: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) forward matrices ``[s R F | t]`` in centred input pixels: angle in degrees, scale, shift (N, 2)
    in pixels, flip a bool per sample."""
    a = angle_deg.double() * math.pi / 180.0
    c, s = torch.cos(a) * scale.double(), torch.sin(a) * scale.double()
    f = torch.where(flip, -1.0, 1.0).double()
    m = torch.zeros(len(a), 2, 3, dtype=torch.float64)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c * f, -s, s * f, c
    m[:, :, 2] = shift_px.double()
    return m


def _points_of(y: Target) -> torch.Tensor:
    points = y["points"] if isinstance(y, Mapping) else y
    if points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"landmark augmentation needs points (N, K, 2); got {tuple(points.shape)}")
    return points


def _with_points(y: Target, points: torch.Tensor) -> Target:
    return {**y, "points": points} if isinstance(y, Mapping) else points


def warp(x: torch.Tensor, y: Target, matrices: torch.Tensor, flipped: torch.Tensor | None = None) -> tuple:
    """Apply forward ``matrices`` (``warp_matrices``) to images (N, C, H, W) and their points; flipped samples'
    points are renumbered through ``y["mirror"]`` when the targets carry it."""
    n, _, h, w = x.shape
    points = _points_of(y)
    size = torch.tensor([w, h], dtype=torch.float64)
    a, t = matrices[:, :, :2], matrices[:, :, 2]
    inv = torch.linalg.inv(a)
    half = size / 2
    theta = torch.cat([inv * half.view(1, 1, 2) / half.view(1, 2, 1),                    # S^-1 A^-1 S
                       -(inv @ t.unsqueeze(-1)) / half.view(1, 2, 1)], dim=2)             # -S^-1 A^-1 t
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    q = (points.double() - 0.5) * size                                                    # centred pixels
    moved = (q @ a.transpose(1, 2) + t.unsqueeze(1)) / size + 0.5
    inside = ((moved >= 0) & (moved <= 1)).all(-1, keepdim=True)
    moved = torch.where(inside, moved, torch.full_like(moved, float("nan"))).to(points.dtype)
    if flipped is not None and isinstance(y, Mapping) and "mirror" in y:
        partner = y["mirror"].long()
        swapped = torch.gather(moved, 1, partner.unsqueeze(-1).expand_as(moved))
        moved = torch.where(flipped.view(n, 1, 1), swapped, moved)
    return out, _with_points(y, moved)


def colour_jitter(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Per sample: brightness, contrast (around the sample's mean) and, for RGB, saturation, each a factor drawn
    in [1 - strength, 1 + strength]; values clipped to 0..1 (the loader augments before normalising)."""
    n, c = x.shape[:2]
    draw = lambda: 1 + strength * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)  # noqa: E731
    bright, contrast, saturation = draw(), draw(), draw()
    x = x * bright
    x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) * contrast + x.mean(dim=(1, 2, 3), keepdim=True)
    if c == 3:
        grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = grey + (x - grey) * saturation
    return x.clamp(0.0, 1.0)


def landmark_augment(flip: float = 0.5, rotate: float = 15.0, scale: float = 0.1, shift: float = 0.05,
                     colour: float = 0.2) -> Augment:
    """Random flip (probability ``flip``), rotation (uniform in +-``rotate`` degrees), scale (factor in
    1 +- ``scale``), shift (up to ``shift`` of the width/height either way) and colour jitter (``colour``), drawn
    per sample from the loader's generator. Zero turns a part off. The defaults are ours: moderate enough for
    the few hundred frames of a DeepLabCut set, where a larger warp carries points out of the frame too often."""
    for name, value in (("flip", flip), ("rotate", rotate), ("scale", scale), ("shift", shift), ("colour", colour)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be >= 0, got {value}")
    if flip > 1 or scale >= 1 or colour > 1:
        raise ValueError(f"flip and colour must be at most 1 and scale below 1; got {flip}, {colour}, {scale}")

    def apply(x: torch.Tensor, y: Target, generator: torch.Generator) -> tuple[torch.Tensor, Target]:
        if x.dim() != 4:
            raise ValueError(f"landmark_augment expects images (N, C, H, W), got shape {tuple(x.shape)}")
        n, _, h, w = x.shape
        uniform = lambda *shape: 2 * torch.rand(*shape, generator=generator, dtype=torch.float64) - 1  # noqa: E731
        flipped = torch.rand(n, generator=generator) < flip
        angle, factor = rotate * uniform(n), 1 + scale * uniform(n)
        offset = shift * uniform(n, 2) * torch.tensor([w, h], dtype=torch.float64)
        x, y = warp(x, y, warp_matrices(angle, factor, offset, flipped), flipped)
        if colour > 0:
            x = colour_jitter(x, colour, generator)
        return x, y

    apply.__name__ = f"landmark_augment(flip={flip:g}, rotate={rotate:g}, scale={scale:g}, shift={shift:g}, " \
                     f"colour={colour:g})"
    return apply
