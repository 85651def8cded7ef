"""Jobs ``sets import|list|show|export|delete``: distilled sets in the database."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.errors import UserError
from ddsem.jobs.common import DataSource, check, clip, fit_zca, load_data, zca_compute

if TYPE_CHECKING:
    from ddsem.db.sets import SetSummary, ZCAArrays
    from ddsem.distill.formats import LoadedSet
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
    # Are the images in ZCA space (MTT's --zca)? None: what the file says (a ddsem export's
    # "space", MTT's images_zca_*.pt), else for an MTT images_*.pt a test of their scale
    # (guess_space), else normalised. ZCA needs the data set's transform: ``data`` to fit it
    # (once; stored), or one stored already.
    zca: bool | None = None
    data: DataSource = None

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
        for given, what in ((self.labels, "--labels"), (self.lr, "--lr")):
            check(
                given is None or Path(given).expanduser().is_file(),
                f"{what} {clip(str(given))}: no such file",
            )
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
    space: str = "normalised"  # the stored set's space: normalised | zca
    space_reason: str = ""  # how that was decided (the file, --zca, the scale test)

    def as_json(self) -> dict[str, Any]:
        return {
            **self.summary.as_json(), "format": self.fmt, "space": self.space,
            "space_reason": self.space_reason,
        }  # fmt: skip


def _transform(ws: Workspace, request: ImportRequest, why: str) -> ZCAArrays:
    """The data set's ZCA transform: fitted on ``request.data`` (found or fitted and stored),
    else the one stored for the data set when there is exactly one."""
    from ddsem.data import DataNotFound
    from ddsem.data.zca import EPS
    from ddsem.db.sets import list_zca

    if request.data is None:
        stored = list_zca(ws.db, request.dataset, EPS)
        if len(stored) == 1:
            return stored[0]
    try:
        data = load_data(request.data, request.dataset)
    except DataNotFound:
        raise UserError(
            f"{why} needs the ZCA transform of {request.dataset}'s training split, and none is "
            f"stored: pass --data PATH (the training images; it is fitted once and stored)"
        ) from None
    return fit_zca(ws.db, data, device=ws.torch_device(), note=ws.progress.note)


def _space(ws: Workspace, request: ImportRequest, loaded: LoadedSet) -> tuple[Any, str, str]:
    """(the transform or None, the stored space, why) for a loaded file; MTT's images_zca_*.pt
    pixels become normalised images (and then ZCA space with the transform)."""
    import numpy as np

    from ddsem.data import MEAN, STD

    name = Path(loaded.source).name
    if loaded.space == "pixels":  # MTT's images_zca_*.pt: inverse_transform output, [0, 1]
        loaded.images = (loaded.images - np.asarray(MEAN, np.float32)[:, None, None]) / np.asarray(
            STD, np.float32
        )[:, None, None]
    if request.zca is False:
        return None, "normalised", "--no-zca"
    if request.zca is True:
        return _transform(ws, request, "--zca"), "zca", "--zca"
    if loaded.space == "zca":
        return _transform(ws, request, f"{name} (a ZCA-space export)"), "zca", "the file's 'space'"
    if loaded.space == "pixels":
        why = f"{name} is MTT's inverse of a --zca run"
        return _transform(ws, request, why), "zca", why
    if loaded.fmt != "mtt" or loaded.space == "normalised":
        return None, "normalised", f"{loaded.fmt} files hold normalised images"
    # MTT's images_*.pt: ZCA space after a --zca run, normalised otherwise; the file cannot say
    from ddsem.data import normalize, stratified_indices
    from ddsem.data.zca import guess_space

    option = "pass --zca (a --zca run) or --no-zca"
    try:  # the test needs the training images (and their transform)
        data = load_data(request.data, request.dataset)
        arrays = _transform(ws, request, f"telling whether {name} is in ZCA space")
    except UserError as e:  # never a silent guess: MTT's --zca runs write ZCA-space images
        raise UserError(
            f"cannot tell whether {name} is in ZCA space (MTT's --zca runs write it so) "
            f"without the {request.dataset} training images ({e}): pass --no-zca if it is "
            "normalised, or --zca with --data PATH"
        ) from None
    zca = zca_compute(arrays)
    sample = normalize(data.train_x[stratified_indices(data.train_y, 2000, 0)]).numpy()
    guess = guess_space(loaded.images, zca, sample)
    scale = (
        f"pixel RMS {guess.rms:.3g}; real images: {guess.rms_normalised:.3g} normalised, "
        f"{guess.rms_zca:.3g} ZCA-whitened"
    )
    if guess.verdict == "unsure":
        raise UserError(f"cannot tell whether {name} is in ZCA space ({scale}): {option}")
    if guess.verdict == "zca":
        return arrays, "zca", f"its scale looks ZCA-whitened ({scale})"
    return None, "normalised", f"its scale looks normalised ({scale})"


def import_set(ws: Workspace, request: ImportRequest) -> ImportResult:
    """Import someone's distilled set (read with torch.load(weights_only=True) only); the file
    is read and validated before the database is written, in one transaction. A set in ZCA
    space is stored as it is, with its data set's transform (``_space``)."""
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
    arrays, space, reason = _space(ws, request, loaded)
    ws.db.require_writable()
    if arrays is not None and loaded.space == "pixels":
        loaded.images = zca_compute(arrays).forward_np(loaded.images)
    if arrays is not None and "zca_eps" in loaded.extra and loaded.extra["zca_eps"] != arrays.eps:
        raise UserError(
            f"{loaded.source} was whitened with eps {loaded.extra['zca_eps']:g}, the stored "
            f"transform has eps {arrays.eps:g}"
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
            "space": space,
            "space_reason": reason,
        },
        overwrite=request.overwrite,
        zca_id=arrays.id if arrays is not None else None,
    )
    return ImportResult(summary, loaded.fmt, space, reason)


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
    pixel_min: float  # normalised pixels (a ZCA set's inverse-transformed)
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
    if s.zca is not None:  # the statistics a reader compares with other sets: normalised ones
        from ddsem.db.sets import set_zca

        images = set_zca(ws.db, s.id).to_normalised(images)
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
    # The .pt's images: "normalised" (a ZCA set inverse-transformed, what other tools read) or
    # "zca" (a ZCA set as stored, bit-exact, with "space": "zca": `sets import` takes it back)
    space: str = "normalised"

    def __post_init__(self) -> None:
        from ddsem.db.export import check_place

        check(
            self.space in ("normalised", "zca"),
            f"unknown --space {_shown(self.space)}: use normalised or zca",
        )

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
    shown, extra = images, {}
    if s.zca is not None:
        from ddsem.db.sets import set_zca

        shown = set_zca(ws.db, s.id).to_normalised(images)  # pixels for every display
        if request.space == "zca":
            extra = {"space": "zca", "zca_eps": float(s.zca["eps"])}
        else:
            images, extra = shown, {"space": "normalised"}
    elif request.space == "zca":
        raise UserError(f"set {s.name!r} is in the normalised space; --space zca is for ZCA sets")

    from ddsem.data import denormalize
    from ddsem.distill.formats import export_paper
    from ddsem.plots import image_grid

    with staged(out_path) as out_tmp, staged(png_path, ".png") as png_tmp:
        export_paper(out_tmp, images, labels, extra)
        image_grid(denormalize(shown), png_tmp, titles=[str(int(v)) for v in labels], cols=10)
    return SetExportResult(out_path, png_path)


def delete(ws: Workspace, name: str) -> None:
    """Remove a set and its images."""
    from ddsem.db.sets import delete_set

    delete_set(ws.db, name)
