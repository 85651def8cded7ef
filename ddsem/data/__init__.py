"""Data sets: CIFAR-10/100 from torchvision's folder, a JPEG/PNG image folder or its .tar.gz."""

from ddsem.data.cifar import (
    CIFAR10_CLASSES,
    MEAN,
    STD,
    DataNotFound,
    ImageData,
    cache_dir,
    denormalize,
    download_reachable,
    download_root,
    find_data,
    load_dataset,
    normalize,
    stratified_indices,
)

__all__ = [
    "CIFAR10_CLASSES",
    "MEAN",
    "STD",
    "DataNotFound",
    "ImageData",
    "cache_dir",
    "denormalize",
    "download_reachable",
    "download_root",
    "find_data",
    "load_dataset",
    "normalize",
    "stratified_indices",
]
