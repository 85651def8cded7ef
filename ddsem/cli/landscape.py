"""``ddsem landscape``: appendix A's loss plane, a face over ``ddsem.jobs.landscape``.

The plane through the initial, real-trained and distilled-trained weights, with the loss on the
test set and on the distilled set over a grid; stored once, reused by an identical request.
"""

from __future__ import annotations

import typer

from ddsem.cli import common
from ddsem.config import LandscapeConfig, ModelConfig
from ddsem.jobs.curvature import OUT

LANDSCAPE = LandscapeConfig()
MODEL = ModelConfig()


def landscape(
    method: str = common.method_option(),
    set_name: str = common.set_option(),
    grid: int = typer.Option(LANDSCAPE.grid, "--grid", help="Grid points per axis."),
    margin: float = typer.Option(
        LANDSCAPE.margin, "--margin", help="Room around the three points (fraction of a span)."
    ),
    distilled_steps: int = typer.Option(
        LANDSCAPE.distilled_steps, "--distilled-steps", help="Full-batch steps on the set."
    ),
    test_samples: int = typer.Option(
        None, "--test-samples", help="Class-stratified test images [default: all]."
    ),
    train_samples: int = typer.Option(
        None, "--train-samples", help="Real training images (stratified) [default: all]."
    ),
    width: int = typer.Option(MODEL.width, "--width", help="ConvNet width."),
    depth: int = typer.Option(MODEL.depth, "--depth", help="ConvNet depth."),
    data: str = common.data_option(),
    out: str = typer.Option(OUT, "--out", help="Folder for the PNG figure."),
    as_json: bool = common.json_option(),
) -> None:
    """Loss plane through the initial weights, one epoch on real data and training on the
    distilled set (appendix A, Fig. 11): test and distilled loss on a grid, stored and drawn.
    Without --method or --set: the only distilled set."""
    from dataclasses import replace

    from ddsem.jobs import landscape as job

    request = job.LandscapeRequest(
        method=method,
        set_name=set_name,
        grid=grid,
        margin=margin,
        distilled_steps=distilled_steps,
        test_samples=test_samples,
        train_samples=train_samples,
        width=width,
        depth=depth,
        seed=common.seed(),
        out=out,
    )
    ws = common.workspace(quiet=as_json)
    job.preflight(ws, request)  # refused before the data is looked for (or offered for download)
    result = job.run(ws, replace(request, data=common.data_source(data)))
    if as_json:
        common.print_json(result.as_json())
        return
    record = result.record
    what = "stored before" if result.reused else "computed"
    common.echo(
        f"landscape {result.analysis_id} ({what}): set {result.set_name!r}, {grid}x{grid} grid, "
        f"{record['test_images']} test images; real model after {record['real_steps']} steps "
        f"(1 epoch of {result.params['train_images']} images), distilled model after "
        f"{distilled_steps} steps"
    )
    rows = [
        [
            point,
            f"({round(x, 3) + 0.0:.3f}, {round(y, 3) + 0.0:.3f})",
            *[f"{v:.4f}" for v in losses],
        ]
        for point, (x, y), losses in result.point_rows()
    ]
    common.table(
        "loss at the three weight vectors",
        ["weights", "plane (x, y)", *[f"{s} loss" for s in record["sources"]]],
        rows,
    )
    common.echo(f"wrote {result.figure}")
