"""Data: in-memory data sets from the layouts lwdc reads, a fast batch loader and batch-wise augmentation.

This package imports nothing else from lwdc, so it can be used (and tested) on its own.
"""
from .augment import Augment, random_crop_flip, random_shift
from .datasets import SUBSET_PATH, ArrayDataset, DataBundle, default_cache_dir, load_data
from .layouts import LAYOUTS, DataLayoutError, UnsafeArchiveError
from .loader import BatchLoader

__all__ = ["ArrayDataset", "DataBundle", "DataLayoutError", "UnsafeArchiveError", "load_data", "BatchLoader",
           "random_crop_flip", "random_shift", "Augment", "LAYOUTS", "SUBSET_PATH", "default_cache_dir"]
