"""Data: in-memory data sets from registered names and file layouts, a fast batch loader and batch-wise
augmentation that moves targets with samples.

This package imports nothing else from lwdc, so it can be used (and tested) on its own. Importing it registers
the built-in data sets (cifar10-subset, cifar10, cifar100, fsdd) and layouts (pickled CIFAR, image folders, FSDD's
spoken digits, P300 EEG epochs, landmark sets).
"""
from . import cifar, images, audio, eeg, landmarks  # noqa: F401,I001  (registers data sets, layouts; detection order)
from .archives import DEFAULT_MAX_UNPACK_BYTES
from .augment import AUTO, Augment, Target, as_augment, default_augment, random_crop_flip, random_shift
from .cifar import SUBSET_PATH
from .datasets import ArrayDataset, DataBundle, make_bundle
from .eeg import eeg_folds
from .errors import DataLayoutError, UnsafeArchiveError
from .landmark_augment import landmark_augment
from .landmarks import (LandmarkDataError, MissingColumnsError, PointCountMismatchError, PointOutsideImageError,
                        UnreadableImageError, kfold_indices)
from .loader import BatchLoader
from .poses import balance_indices
from .registry import (default_cache_dir, describe_layouts, list_datasets, list_layouts, load_data, parse_options,
                       register_dataset, register_layout)

LAYOUTS = describe_layouts()   # the built-in layouts' descriptions; describe_layouts() includes later registrations

__all__ = ["ArrayDataset", "DataBundle", "DataLayoutError", "UnsafeArchiveError", "load_data", "BatchLoader",
           "random_crop_flip", "random_shift", "Augment", "Target", "AUTO", "as_augment", "default_augment",
           "make_bundle", "register_dataset", "register_layout", "list_datasets", "list_layouts", "describe_layouts",
           "LAYOUTS", "SUBSET_PATH", "DEFAULT_MAX_UNPACK_BYTES", "default_cache_dir", "parse_options", "eeg_folds",
           "landmark_augment", "kfold_indices", "balance_indices", "LandmarkDataError", "MissingColumnsError",
           "PointCountMismatchError", "PointOutsideImageError", "UnreadableImageError"]
