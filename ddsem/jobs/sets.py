"""Jobs ``sets import|list|show|export|delete``: distilled sets in the database."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.errors import UserError
from ddsem.jobs.common import check

if TYPE_CHECKING:
    from ddsem.db.sets import SetSummary
    from ddsem.jobs.workspace import Workspace

NUM_CLASSES = {"cifar10": 10, "cifar100": 100}

__all__ = [
    "SetExportRequest",
    "SetExportResult",
    "ImportRequest",
    "ImportResult",
    "SetDetails",
    "SetList",
    "delete",
    "export",
    "import_set",
    "list_sets",
    "show",
]


# -- import ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportRequest:
    path: str | os.PathLike  # .pt (paper dict, DC res_*.pt, MTT images_best.pt) or .npz
    method: str  # the distillation method (bptt, dm, gm, tm, ...), stored lower-case
    name: str | None = None  # None: the method
    fmt: str = "auto"  # auto | paper | dc | mtt | npz
    exp: int = 0  # DC res_*.pt: which experiment
    labels: str | None = None  # MTT: labels_best.pt [default: beside the images]
    lr: str | None = None  # MTT: lr_best.pt, the learned synthetic learning rate
    dataset: str = "cifar10"
    overwrite: bool = False

    def __post_init__(self) -> None:
        check(
            self.dataset in NUM_CLASSES,
            f"unknown dataset {self.dataset!r}: use cifar10 or cifar100",
        )
        object.__setattr__(self, "method", self.method.lower())

    @property
    def set_name(self) -> str:
        return self.name or self.method


@dataclass
class ImportResult:
    summary: SetSummary
    fmt: str  # the format the file was read as

    def as_json(self) -> dict[str, Any]:
        return {**self.summary.as_json(), "format": self.fmt}


def import_set(ws: Workspace, request: ImportRequest) -> ImportResult:
    """Import someone's distilled set (read with torch.load(weights_only=True) only); the file
    is read and validated before the database is written, in one transaction."""
    from ddsem.db.sets import add_distilled_set
    from ddsem.distill.formats import load_distilled, validate

    loaded = validate(
        load_distilled(
            request.path,
            request.fmt,
            exp=request.exp,
            labels_path=request.labels,
            lr_path=request.lr,
        ),
        NUM_CLASSES[request.dataset],
    )
    summary = add_distilled_set(
        ws.db,
        request.set_name,
        request.method,
        loaded.images,
        loaded.labels,
        dataset=request.dataset,
        synthetic_lr=loaded.synthetic_lr,
        provenance={
            "imported_from": str(Path(request.path).resolve()),
            "format": loaded.fmt,
            **loaded.extra,
        },
        overwrite=request.overwrite,
    )
    return ImportResult(summary, loaded.fmt)


# -- list, show -----------------------------------------------------------------------------------


@dataclass
class SetList:
    sets: list[SetSummary]

    def as_json(self) -> list[dict[str, Any]]:
        return [s.as_json() for s in self.sets]


def list_sets(ws: Workspace) -> SetList:
    """Every distilled set in the database, oldest first."""
    from ddsem.db.sets import list_sets as stored

    return SetList(stored(ws.db))


@dataclass
class SetDetails:
    summary: SetSummary
    per_class: list[int]
    pixel_min: float  # normalised pixels
    pixel_max: float
    pixel_mean: float

    def as_json(self) -> dict[str, Any]:
        return {
            **self.summary.as_json(),
            "per_class": self.per_class,
            "pixel_min": self.pixel_min,
            "pixel_max": self.pixel_max,
            "pixel_mean": self.pixel_mean,
        }


def show(ws: Workspace, name: str | None = None, method: str | None = None) -> SetDetails:
    """One set (by name, else the newest of ``method``): labels per class, pixel statistics."""
    import numpy as np

    from ddsem.db.sets import find_set, set_tensors

    s = find_set(ws.db, name, method)
    images, labels = set_tensors(ws.db, s.id)
    return SetDetails(
        s,
        np.bincount(labels).tolist(),
        float(images.min()),
        float(images.max()),
        float(images.mean()),
    )


# -- export, delete -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetExportRequest:
    out: str | os.PathLike  # the .pt file (the paper's dict format); an existing file is replaced
    name: str | None = None  # the set by name, else the newest of method
    method: str | None = None
    png: str | os.PathLike | None = None  # the PNG grid [default: beside out]


@dataclass
class SetExportResult:
    out: Path
    png: Path

    def as_json(self) -> dict[str, Any]:
        return {"out": str(self.out), "png": str(self.png)}


def export(ws: Workspace, request: SetExportRequest) -> SetExportResult:
    """Write the set in the paper's dict format and as a PNG grid (clipped only for display)."""
    from ddsem.data import denormalize
    from ddsem.db.sets import find_set, set_tensors
    from ddsem.distill.formats import export_paper
    from ddsem.plots import image_grid

    s = find_set(ws.db, request.name, request.method)
    images, labels = set_tensors(ws.db, s.id)
    out_path = Path(request.out).expanduser()
    if not out_path.parent.exists():
        raise UserError(f"output folder does not exist: {out_path.parent}")
    export_paper(out_path, images, labels)
    png_path = Path(request.png) if request.png else out_path.with_suffix(".png")
    image_grid(denormalize(images), png_path, titles=[str(int(v)) for v in labels], cols=10)
    return SetExportResult(out_path, png_path)


def delete(ws: Workspace, name: str) -> None:
    """Remove a set and its images."""
    from ddsem.db.sets import delete_set

    delete_set(ws.db, name)
