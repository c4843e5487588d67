"""Data: in-memory data sets from the layouts lwdc reads, batch loaders and tensor augmentations."""
from .augment import random_crop_flip, random_shift
from .datasets import LAYOUTS, ArrayDataset, DataBundle, DataLayoutError, load_data
from .loader import BatchLoader

__all__ = ["ArrayDataset", "DataBundle", "DataLayoutError", "load_data", "BatchLoader", "random_crop_flip",
           "random_shift", "LAYOUTS"]
