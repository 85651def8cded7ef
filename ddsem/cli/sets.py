"""``ddsem sets import|list|show|export|delete``: distilled sets in the database
(``ddsem.jobs.sets``)."""

from __future__ import annotations

import typer

from ddsem.cli import common

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
    zca: bool = typer.Option(
        None,
        "--zca/--no-zca",
        help="The images are (not) in ZCA space, as MTT's images_*.pt of a --zca run "
        "[default: what the file says, else for MTT files a test of their scale].",
    ),
    data: str = typer.Option(
        None,
        "--data",
        help="The data set's training images, to fit its ZCA transform (once; stored) "
        "[default: $DDSEM_DATA].",
    ),
) -> None:
    """Import someone's distilled set (loaded with torch.load(weights_only=True) only).

    A set in ZCA space is stored as it is, with the ZCA transform of the data set's training
    split (kornia's ZCAWhitening, eps 0.1, as MTT), which every command then applies to the real
    images and inverts for display and export."""
    from ddsem.jobs import sets as job

    request = job.ImportRequest(
        path, method, name, fmt, exp, labels, lr, dataset, overwrite, zca,
        common.data_source(data, dataset) if data else None,
    )  # fmt: skip
    result = job.import_set(common.workspace(), request)
    s = result.summary
    space = f"; ZCA space ({result.space_reason})" if result.space == "zca" else ""
    common.echo(
        f"imported {s.num_images} images ({s.ipc} per class, {result.fmt} format) "
        f"as set {s.name!r} (method {s.method}){space}"
    )


@app.command("list")
def list_sets(as_json: bool = common.json_option()) -> None:
    """Every distilled set in the database."""
    from ddsem.jobs import sets as job

    listing = job.list_sets(common.workspace(create=False, quiet=as_json))
    if as_json:
        common.print_json(listing.as_json())
        return
    if not listing.sets:
        common.echo(
            "no distilled sets yet: `ddsem sets import FILE --method NAME` or `ddsem distill`"
        )
        return
    common.table(
        "distilled sets",
        ["name", "method", "dataset", "images", "ipc", "created"],
        [[s.name, s.method, s.dataset, s.num_images, s.ipc, s.created_at] for s in listing.sets],
    )


@app.command("show")
def show(
    name: str = typer.Argument(None, help="Set name [or use --method]."),
    method: str = typer.Option(None, "--method", help="The newest set of this method."),
    as_json: bool = common.json_option(),
) -> None:
    """One set: provenance, labels per class and pixel statistics."""
    from ddsem.jobs import sets as job

    d = job.show(common.workspace(create=False, quiet=as_json), name, method)
    if as_json:
        common.print_json(d.as_json())
        return
    s = d.summary
    common.echo(
        f"set {s.name!r}: method {s.method}, {s.num_images} images, {s.ipc} per class, {s.dataset}"
    )
    common.echo(f"images per class: {d.per_class}")
    common.echo(
        f"normalised pixels: min {d.pixel_min:.3f}  max {d.pixel_max:.3f}  mean {d.pixel_mean:.3f}"
    )
    if s.zca is not None:
        common.echo(
            f"stored in ZCA space (eps {s.zca['eps']:g}, transform {s.zca['transform_id']}); "
            "the pixels above are inverse-transformed"
        )
    if s.synthetic_lr is not None:
        common.echo(f"learned synthetic learning rate: {s.synthetic_lr:g}")
    for k, v in s.provenance.items():
        common.echo(f"  {k}: {str(v)[:200]}")


@app.command("export")
def export(
    name: str = typer.Argument(None, help="Set name [or use --method]."),
    method: str = typer.Option(None, "--method", help="The newest set of this method."),
    out: str = typer.Option(..., "--out", help="Output .pt file (the paper's dict format)."),
    png: str = typer.Option(None, "--png", help="PNG grid of the images [default: beside --out]."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace an existing --out or --png file (never the database or its -wal/-shm).",
    ),
    space: str = typer.Option(
        "normalised",
        "--space",
        help="A ZCA set's images in the .pt: normalised (inverse-transformed) or zca (as "
        "stored; `sets import` reads it back exactly).",
    ),
) -> None:
    """Write the set in the paper's dict format and as a PNG grid (clipped only for display).

    An existing file is refused unless --force; the database and its -wal, -shm and -journal
    files are refused always. Both files are written whole or not at all."""
    from ddsem.jobs import sets as job

    request = job.SetExportRequest(out, name, method, png, force, space)
    result = job.export(common.workspace(), request)
    common.echo(f"wrote {result.out} and {result.png}")


@app.command("delete")
def delete(name: str = typer.Argument(..., help="Set name.")) -> None:
    """Remove a set and its images."""
    from ddsem.jobs import sets as job

    job.delete(common.workspace(), name)
    common.echo(f"deleted set {name!r}")
