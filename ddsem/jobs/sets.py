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

IMPORT_FORMATS = ("auto", "paper", "dc", "mtt", "npz")  # ddsem.distill.formats.FORMATS


def _shown(text: str) -> str:
    """A user's string for an error line: escaped and cut, so the line stays one short line."""
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:57] + "..."


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
            f"unknown dataset {_shown(self.dataset)}: use cifar10 or cifar100",
        )
        check(
            self.fmt in IMPORT_FORMATS,
            f"unknown format {_shown(self.fmt)}: use one of " + ", ".join(IMPORT_FORMATS),
        )
        check(self.exp >= 0, f"--exp must be 0 or more, got {self.exp}")
        check(str(self.path).strip() != "", "the file to import is empty: give a .pt or .npz")
        method = str(self.method).strip().lower()
        check(method != "", "--method must name the distillation method (bptt, dm, gm, tm, ...)")
        check(method.isprintable(), f"--method {_shown(self.method)} holds control characters")
        check(len(method) <= 64, f"--method is {len(method)} characters long; at most 64")
        object.__setattr__(self, "method", method)
        if self.name is not None:
            name = str(self.name).strip()
            check(name != "", "--name must not be empty (leave it out to use the method)")
            check(name.isprintable(), f"--name {_shown(self.name)} holds control characters")
            check(len(name) <= 128, f"--name is {len(name)} characters long; at most 128")
            object.__setattr__(self, "name", name)

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
    out: str | os.PathLike  # the .pt file (the paper's dict format)
    name: str | None = None  # the set by name, else the newest of method
    method: str | None = None
    png: str | os.PathLike | None = None  # the PNG grid [default: beside out]
    force: bool = False  # replace existing files (never the database or its -wal/-shm)

    def __post_init__(self) -> None:
        from ddsem.db.export import check_place

        out, png = self.paths()
        check_place(out, "--out")
        check_place(png, "--png")
        if out.resolve() == png.resolve():
            raise UserError(
                f"the PNG grid would overwrite --out {out}: give --png another file, or --out "
                "a .pt name"
            )

    def paths(self) -> tuple[Path, Path]:
        """(the .pt file, the PNG grid)."""
        out = Path(self.out).expanduser()
        png = Path(self.png).expanduser() if self.png else out.with_suffix(".png")
        return out, png


@dataclass
class SetExportResult:
    out: Path
    png: Path

    def as_json(self) -> dict[str, Any]:
        return {"out": str(self.out), "png": str(self.png)}


def export(ws: Workspace, request: SetExportRequest) -> SetExportResult:
    """Write the set in the paper's dict format and as a PNG grid (clipped only for display).
    Never writes over the database or its side files, nor over an existing file without
    ``force``; both files are written to temporary files beside them, which replace the targets
    only when both are complete."""
    from ddsem.db.engine import database_files
    from ddsem.db.export import check_output, staged
    from ddsem.db.sets import find_set, set_tensors

    out_path, png_path = request.paths()
    protected = database_files(ws.db)
    check_output(out_path, force=request.force, protected=protected, option="--out")
    check_output(png_path, force=request.force, protected=protected, option="--png")
    s = find_set(ws.db, request.name, request.method)
    images, labels = set_tensors(ws.db, s.id)

    from ddsem.data import denormalize
    from ddsem.distill.formats import export_paper
    from ddsem.plots import image_grid

    with staged(out_path) as out_tmp, staged(png_path, ".png") as png_tmp:
        export_paper(out_tmp, images, labels)
        image_grid(denormalize(images), png_tmp, titles=[str(int(v)) for v in labels], cols=10)
    return SetExportResult(out_path, png_path)


def delete(ws: Workspace, name: str) -> None:
    """Remove a set and its images."""
    from ddsem.db.sets import delete_set

    delete_set(ws.db, name)
