"""Landmark (keypoint) regression: the losses (L2, L1, smooth L1, Wing, RWing) and the ``Landmarks`` task.

The data side (CSV and DeepLabCut layouts, augmentations that move points with pixels, pose balancing, folds)
lives in :mod:`lwdc.data.landmarks`, :mod:`lwdc.data.landmark_augment` and :mod:`lwdc.data.poses`; starting
from another run's weights in :mod:`lwdc.transfer`. See docs/landmarks.md.
"""
from .losses import LOSSES, L1, L2, RWing, SmoothL1, Wing, get_loss, loss_parameters
from .task import Landmarks, split_target

__all__ = ["Landmarks", "split_target", "LOSSES", "L1", "L2", "SmoothL1", "Wing", "RWing", "get_loss",
           "loss_parameters"]
