"""The landmark task: direct regression of K points' normalised coordinates, a model output of 2K values.

Targets are a dict (what ``lwdc.data`` landmark layouts produce), or a plain tensor of points:

* ``points`` (N, K, 2): x, y as fractions of the image's width and height, ``u = (x + 0.5) / W`` for a pixel
  coordinate x whose top-left pixel's centre is 0 (DeepLabCut's convention); NaN where a point is not visible.
* ``size`` (N, 2): the original image's width and height in pixels. Errors are converted back to those pixels
  (``du * W``, ``dv * H``), so RMSE is stated in pixels of the frames as labelled, whatever the model's input
  size; without it, errors are in pixels of the model input (``input_size``).
* ``norm`` (N,): the NME normaliser of each sample in those pixels (the data set chooses it: see
  ``lwdc.data.landmarks``); without it, the diagonal of the visible true points' bounding box.

The model's output is read as ``(x0, y0, x1, y1, ...)`` in the same normalised units. Invisible points (NaN) are
masked out of the loss and of every metric: they contribute neither error nor count.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import torch

from .losses import get_loss

__all__ = ["Landmarks", "split_target"]


def split_target(target, n: int) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(points (N, K, 2), size (N, 2) or None, norm (N,) or None)`` of a landmark target."""
    if isinstance(target, Mapping):
        if "points" not in target:
            raise ValueError(f"landmark targets need a 'points' entry (N, K, 2); got keys {sorted(target)}")
        points, size, norm = target["points"], target.get("size"), target.get("norm")
    else:
        points, size, norm = target, None, None
    points = points.reshape(n, -1, 2) if points.dim() == 2 else points
    if points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"landmark points must be (N, K, 2); got {tuple(points.shape)}")
    return points.float(), None if size is None else size.float(), None if norm is None else norm.float()


class Landmarks:
    """Landmark regression: ``loss`` one of l2, l1, smooth-l1, wing, rwing (``lwdc.landmarks.losses``), with its
    parameters (``w``, ``eps``, ``r``, ``beta``; None: the loss's default) applied per coordinate to the error in
    pixels of the model input (``input_size`` (H, W); ``for_data`` takes it from the data), averaged over the
    visible coordinates.

    Metrics (``summarize``): ``rmse_px`` (root of the mean squared point distance), ``mean_error_px`` (mean
    point distance: DeepLabCut's "test error"), ``nme`` (per image, the mean point distance over the normaliser;
    averaged over images, in percent), ``pck`` (percent of points within ``pck_px`` pixels), ``error_px/<point>``
    (mean distance per point), ``visible`` (points counted). Lower is better for the headline ``nme``.
    """

    name = "landmarks"
    primary = "nme"
    higher_is_better = False

    def __init__(self, loss: str = "rwing", *, w: Optional[float] = None, eps: Optional[float] = None,
                 r: Optional[float] = None, beta: Optional[float] = None, input_size: Sequence[int] = (64, 64),
                 pck_px: float = 10.0, point_names: Optional[Sequence[str]] = None):
        params = {k: v for k, v in (("w", w), ("eps", eps), ("r", r), ("beta", beta)) if v is not None}
        self.criterion = get_loss(loss, **params)
        self.loss_name = str(loss)
        self.input_size = tuple(int(v) for v in input_size)
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ValueError(f"input_size must be (height, width) in pixels, got {self.input_size}")
        self.pck_px = float(pck_px)
        if not (math.isfinite(self.pck_px) and self.pck_px > 0):
            raise ValueError(f"pck_px must be a positive number of pixels, got {pck_px}")
        self.point_names = tuple(str(p) for p in point_names) if point_names is not None else None

    def __repr__(self) -> str:
        return (f"Landmarks({self.criterion!r}, input_size={self.input_size}, pck_px={self.pck_px:g}"
                f"{', points=' + ','.join(self.point_names) if self.point_names else ''})")

    @classmethod
    def for_data(cls, bundle, **options) -> "Landmarks":
        """The task for a landmark ``DataBundle``: its input size and point names, with ``options``."""
        y = bundle.train.y
        points = y.get("points") if isinstance(y, Mapping) else y
        if points is None or not torch.is_tensor(points) or points.dim() != 3 or points.shape[-1] != 2:
            found = f"targets {sorted(y)}" if isinstance(y, Mapping) else f"targets of shape {tuple(y.shape)}"
            raise ValueError(f"the landmarks task needs point targets (N, K, 2); {bundle.name} has {found}")
        names = (bundle.info or {}).get("points")
        options.setdefault("input_size", tuple(bundle.input_shape[1:]))
        options.setdefault("point_names", tuple(names) if names else None)
        return cls(**options)

    def output_size(self, bundle) -> int:
        y = bundle.train.y
        points = y["points"] if isinstance(y, Mapping) else y
        return 2 * int(points.shape[1])

    def _errors(self, output: torch.Tensor, target) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple]:
        """``(prediction - truth) (N, K, 2)`` in normalised units, zero where invisible; visibility (N, K)."""
        n = output.shape[0]
        points, size, norm = split_target(target, n)
        if output.shape[1:].numel() != points.shape[1] * 2:
            raise ValueError(f"the model gives {output.shape[1:].numel()} outputs per sample for {points.shape[1]} "
                             f"points: landmark regression needs 2 per point ({2 * points.shape[1]})")
        visible = torch.isfinite(points).all(-1)
        truth = torch.where(visible.unsqueeze(-1), points, torch.zeros_like(points))
        diff = (output.reshape(n, -1, 2) - truth) * visible.unsqueeze(-1)
        return diff, visible, truth, (size, norm)

    def _elementwise(self, diff: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        h, w = self.input_size
        scale = torch.tensor([w, h], dtype=diff.dtype, device=diff.device)
        return self.criterion(diff * scale) * visible.unsqueeze(-1)

    def loss(self, output: torch.Tensor, target) -> torch.Tensor:
        diff, visible, _, _ = self._errors(output, target)
        return self._elementwise(diff, visible).sum() / (2 * visible.sum()).clamp(min=1)

    @torch.no_grad()
    def batch_stats(self, output: torch.Tensor, target) -> dict[str, float]:
        diff, visible, truth, (size, norm) = self._errors(output.float(), target)
        h, w = self.input_size
        px = size.to(diff).unsqueeze(1) if size is not None else diff.new_tensor([w, h]).view(1, 1, 2)
        dist = ((diff * px) ** 2).sum(-1).sqrt() * visible                          # (N, K) pixels
        if norm is None:
            norm = _bbox_diagonal(truth * px, visible)
        per_image = dist.sum(1) / visible.sum(1).clamp(min=1) / norm.to(dist)
        scored = visible.any(1) & torch.isfinite(per_image) & (norm.to(dist) > 0)
        stats = {"loss_sum": float(self._elementwise(diff, visible).sum()), "coords": float(2 * visible.sum()),
                 "sq_sum": float((dist ** 2).sum()), "dist_sum": float(dist.sum()), "visible": float(visible.sum()),
                 "pck_hits": float(((dist <= self.pck_px) & visible).sum()),
                 "nme_sum": float(per_image[scored].sum()), "nme_images": float(scored.sum()),
                 "count": float(output.shape[0])}
        for k in range(visible.shape[1]):
            stats[f"point_sum/{k}"] = float(dist[:, k].sum())
            stats[f"point_count/{k}"] = float(visible[:, k].sum())
        return stats

    def summarize(self, stats: dict[str, float]) -> dict[str, float]:
        nan = float("nan")
        seen = stats.get("visible", 0.0)
        out = {"loss": stats.get("loss_sum", 0.0) / max(stats.get("coords", 0.0), 1.0),
               "rmse_px": math.sqrt(stats.get("sq_sum", 0.0) / seen) if seen else nan,
               "mean_error_px": stats.get("dist_sum", 0.0) / seen if seen else nan,
               "nme": 100.0 * stats["nme_sum"] / stats["nme_images"] if stats.get("nme_images") else nan,
               "pck": 100.0 * stats.get("pck_hits", 0.0) / seen if seen else nan,
               "visible": seen}
        k = 0
        while f"point_count/{k}" in stats:
            label = self.point_names[k] if self.point_names and k < len(self.point_names) else str(k)
            count = stats[f"point_count/{k}"]
            out[f"error_px/{label}"] = stats[f"point_sum/{k}"] / count if count else nan
            k += 1
        return out


def _bbox_diagonal(points_px: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Per sample, the diagonal of the visible points' bounding box (NaN with fewer than two visible points)."""
    big = torch.finfo(points_px.dtype).max
    lo = torch.where(visible.unsqueeze(-1), points_px, torch.full_like(points_px, big)).amin(1)
    hi = torch.where(visible.unsqueeze(-1), points_px, torch.full_like(points_px, -big)).amax(1)
    diag = (hi - lo).norm(dim=-1)
    return torch.where(visible.sum(1) >= 2, diag, torch.full_like(diag, float("nan")))
