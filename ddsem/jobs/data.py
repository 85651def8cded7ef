"""Jobs ``data info`` and ``data prepare``: find, verify, download and decode a data set."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddsem.data.cifar import DataNotFound, download_reachable, download_root, find_data
from ddsem.jobs.common import DataSource, check, load_data

DOWNLOAD_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
DATASETS = tuple(DOWNLOAD_NAMES)

__all__ = [
    "DATASETS",
    "DOWNLOAD_NAMES",
    "DataNotFound",
    "DataInfo",
    "DataRequest",
    "download",
    "download_reachable",
    "download_root",
    "info",
    "locate",
    "prepare",
]


def locate(path: str | None) -> Path:
    """The data source ``path`` names, else $DDSEM_DATA, else the usual places
    (``DataNotFound`` when there is none)."""
    return find_data(path)


def download(dataset: str = "cifar10") -> Path:
    """torchvision's download of ``dataset`` into ``download_root()``, decoded into the cache."""
    from ddsem.data import load_dataset

    load_dataset(None, dataset, download=True)
    return download_root()


@dataclass(frozen=True)
class DataRequest:
    data: DataSource = None
    dataset: str = "cifar10"
    download: bool = False

    def __post_init__(self) -> None:
        check(
            self.dataset in DATASETS,
            f"unknown dataset {self.dataset!r}: use {' or '.join(DATASETS)}",
        )


@dataclass
class DataInfo:
    dataset: str
    source: str
    cache: str | None
    classes: list[str]
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "source": self.source,
            "cache": self.cache,
            "splits": self.splits,
        }


def prepare(request: DataRequest) -> DataInfo:
    """Decode (or download, then decode) the data set into the cache; counts only."""
    from ddsem.data import load_dataset

    if request.download and request.data is None:
        d = load_dataset(None, request.dataset, download=True)
    else:
        d = load_data(request.data, request.dataset)
    splits = {s: {"images": int(len(d.split(s)[1]))} for s in ("train", "test")}
    return DataInfo(d.name, d.source, d.cache_path, list(d.classes), splits)


def info(request: DataRequest) -> DataInfo:
    """Per-split and per-class counts and channel statistics of the data set."""
    import numpy as np

    d = load_data(request.data, request.dataset)
    result = DataInfo(d.name, d.source, d.cache_path, list(d.classes))
    for split in ("train", "test"):
        x, y = d.split(split)
        pix = x.reshape(-1, 3).astype(np.float64) / 255.0
        result.splits[split] = {
            "images": int(len(y)),
            "per_class": {c: int((y == k).sum()) for k, c in enumerate(d.classes)},
            "channel_mean": [round(float(v), 4) for v in pix.mean(0)],
            "channel_std": [round(float(v), 4) for v in pix.std(0)],
        }
    return result
