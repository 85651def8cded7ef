"""Data sets: CIFAR-10/100 from torchvision's folder, a JPEG/PNG image folder or its .tar.gz."""

from ddsem.data.cifar import (
    CIFAR10_CLASSES,
    MEAN,
    STD,
    ImageData,
    cache_dir,
    denormalize,
    find_data,
    load_dataset,
    normalize,
    stratified_indices,
)

__all__ = [
    "CIFAR10_CLASSES",
    "MEAN",
    "STD",
    "ImageData",
    "cache_dir",
    "denormalize",
    "find_data",
    "load_dataset",
    "normalize",
    "stratified_indices",
]
