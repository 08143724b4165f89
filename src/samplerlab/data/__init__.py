"""Data sets that work offline: bundled digits, 2-D toys, and loaders for standard local formats.

Every loader returns a ``Dataset`` of images scaled to [-1, 1] (N, C, H, W) or points (N, d),
with integer labels where the format has them. Missing or malformed files raise ``DataError``
naming the file and the problem.
"""

from .loaders import (
    DATASETS,
    DataError,
    Dataset,
    load_cifar10,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_image_folder,
    split_dataset,
)
from .toys import TOYS, make_toy
from .training import training_data

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "split_dataset",
    "TOYS",
    "make_toy",
    "training_data",
]
