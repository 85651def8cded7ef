"""``ddsem sets import|list|show|export|delete``: distilled sets in the database."""

from __future__ import annotations

from pathlib import Path

import typer

from ddsem.cli import common
from ddsem.errors import UserError

app = typer.Typer(help="Import, list, show and export distilled sets.", no_args_is_help=True)


@app.command("import")
def import_set(
    path: str = typer.Argument(
        ..., help="The file: .pt (paper dict, DC res_*.pt, MTT images_best.pt) or .npz."
    ),
    method: str = typer.Option(
        ..., "--method", help="The distillation method (bptt, dm, gm, tm, ...)."
    ),
    name: str = typer.Option(
        None, "--name", help="Name of the set in the database [default: the method]."
    ),
    fmt: str = typer.Option("auto", "--format", help="auto, paper, dc, mtt or npz."),
    exp: int = typer.Option(0, "--exp", help="DC res_*.pt: which experiment to import."),
    labels: str = typer.Option(
        None, "--labels", help="MTT: labels_best.pt [default: beside the images]."
    ),
    lr: str = typer.Option(
        None, "--lr", help="MTT: lr_best.pt, the learned synthetic learning rate."
    ),
    dataset: str = typer.Option(
        "cifar10", "--dataset", help="cifar10 or cifar100 (sets the class range)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a set of the same name."),
) -> None:
    """Import someone's distilled set (loaded with torch.load(weights_only=True) only)."""
    from ddsem.db.sets import add_distilled_set
    from ddsem.distill.formats import load_distilled, validate

    num_classes = {"cifar10": 10, "cifar100": 100}.get(dataset)
    if num_classes is None:
        raise UserError(f"unknown dataset {dataset!r}: use cifar10 or cifar100")
    loaded = validate(
        load_distilled(path, fmt, exp=exp, labels_path=labels, lr_path=lr), num_classes
    )
    db = common.open_database()
    summary = add_distilled_set(
        db,
        name or method.lower(),
        method.lower(),
        loaded.images,
        loaded.labels,
        dataset=dataset,
        synthetic_lr=loaded.synthetic_lr,
        provenance={
            "imported_from": str(Path(path).resolve()),
            "format": loaded.fmt,
            **loaded.extra,
        },
        overwrite=overwrite,
    )
    common.echo(
        f"imported {summary.num_images} images ({summary.ipc} per class, {loaded.fmt} format) "
        f"as set {summary.name!r} (method {summary.method})"
    )


@app.command("list")
def list_sets(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Every distilled set in the database."""
    from ddsem.db.sets import list_sets as _list

    sets = _list(common.open_database())
    if as_json:
        common.print_json([s.as_json() for s in sets])
        return
    if not sets:
        common.echo(
            "no distilled sets yet: `ddsem sets import FILE --method NAME` or `ddsem distill`"
        )
        return
    common.table(
        "distilled sets",
        ["name", "method", "dataset", "images", "ipc", "created"],
        [[s.name, s.method, s.dataset, s.num_images, s.ipc, s.created_at] for s in sets],
    )


@app.command("show")
def show(
    name: str = typer.Argument(None, help="Set name [or use --method]."),
    method: str = typer.Option(None, "--method", help="The newest set of this method."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """One set: provenance, labels per class and pixel statistics."""
    import numpy as np

    from ddsem.db.sets import find_set, set_tensors

    db = common.open_database()
    s = find_set(db, name, method)
    images, labels = set_tensors(db, s.id)
    per_class = np.bincount(labels).tolist()
    stats = {
        "per_class": per_class,
        "pixel_min": float(images.min()),
        "pixel_max": float(images.max()),
        "pixel_mean": float(images.mean()),
    }
    if as_json:
        common.print_json({**s.as_json(), **stats})
        return
    common.echo(
        f"set {s.name!r}: method {s.method}, {s.num_images} images, {s.ipc} per class, {s.dataset}"
    )
    common.echo(f"images per class: {per_class}")
    common.echo(
        f"normalised pixels: min {stats['pixel_min']:.3f}  max {stats['pixel_max']:.3f}  "
        f"mean {stats['pixel_mean']:.3f}"
    )
    if s.synthetic_lr is not None:
        common.echo(f"learned synthetic learning rate: {s.synthetic_lr:g}")
    for k, v in s.provenance.items():
        text = str(v)
        common.echo(f"  {k}: {text[:200]}")


@app.command("export")
def export(
    name: str = typer.Argument(None, help="Set name [or use --method]."),
    method: str = typer.Option(None, "--method", help="The newest set of this method."),
    out: str = typer.Option(..., "--out", help="Output .pt file (the paper's dict format)."),
    png: str = typer.Option(None, "--png", help="PNG grid of the images [default: beside --out]."),
) -> None:
    """Write the set in the paper's dict format and as a PNG grid (clipped only for display)."""
    from ddsem.data import denormalize
    from ddsem.db.sets import find_set, set_tensors
    from ddsem.distill.formats import export_paper
    from ddsem.plots import image_grid

    db = common.open_database()
    s = find_set(db, name, method)
    images, labels = set_tensors(db, s.id)
    out_path = Path(out).expanduser()
    if not out_path.parent.exists():
        raise UserError(f"output folder does not exist: {out_path.parent}")
    export_paper(out_path, images, labels)
    png_path = Path(png) if png else out_path.with_suffix(".png")
    image_grid(denormalize(images), png_path, titles=[str(int(v)) for v in labels], cols=10)
    common.echo(f"wrote {out_path} and {png_path}")


@app.command("delete")
def delete(name: str = typer.Argument(..., help="Set name.")) -> None:
    """Remove a set and its images."""
    from ddsem.db.sets import delete_set

    delete_set(common.open_database(), name)
    common.echo(f"deleted set {name!r}")
