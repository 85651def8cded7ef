"""``ddsem analyze mixing``: section 3 / Fig. 3 right, a face over ``ddsem.jobs.analyze.mixing``.

Each distilled set plus k real images per class, against as many random real images per class
plus the same k; test accuracy over seeds, stored per (set or baseline, count), one figure."""

from __future__ import annotations

import typer

from ddsem.cli import common
from ddsem.jobs.analyze.common import OUT
from ddsem.jobs.analyze.mixing import MIXING, MODEL, TRAIN


def _pm(mean: float, sd: float | None) -> str:
    return f"{100 * mean:.2f}" + ("" if sd is None else f" ± {100 * sd:.2f}")


def _change(diff: dict | None) -> str:
    if diff is None:
        return "-"
    p = "" if diff["p"] is None else f" (p {diff['p']:.2g})"
    return f"{100 * diff['mean']:+.2f}{p}"


def command(
    method: str = common.method_option(
        "Comma-separated methods (bptt,dm,gm,tm): each one's newest set [default: every set]."
    ),
    set_name: str = common.set_option("Comma-separated distilled set names."),
    counts: str = typer.Option(
        ",".join(map(str, MIXING.counts)),
        "--counts",
        help="Real images added per class, comma-separated (the paper's: 0,2,10,50,250).",
    ),
    width: int = typer.Option(MODEL.width, "--width", help="ConvNet width."),
    depth: int = typer.Option(MODEL.depth, "--depth", help="ConvNet depth."),
    runs: int = typer.Option(
        MIXING.runs, "--runs", help="Models per point (seeds; the same for every point)."
    ),
    steps: int = typer.Option(
        TRAIN.steps, "--steps", help="Full-batch steps (SGD lr 0.01, momentum 0.9)."
    ),
    test_limit: int = typer.Option(
        None, "--test-limit", help="Class-stratified test images [default: the whole split]."
    ),
    data: str = common.data_option(),
    out: str = typer.Option(OUT, "--out", help=common.OUT_HELP),
    as_json: bool = common.json_option(),
) -> None:
    """A distilled set plus k real images per class vs the same number of random real images
    (Fig. 3 right; paper: adding 2-50 real images to 10 distilled ones per class lowers the
    accuracy). The global --seed draws the real images and seeds the models. Without --method
    or --set: every set."""
    from dataclasses import replace

    from ddsem.jobs.analyze import mixing as job

    request = job.MixingRequest(
        methods=common.split_names(method, "--method"),
        set_names=common.split_names(set_name, "--set"),
        counts=common.parse_int_list(counts, "--counts"),
        width=width,
        depth=depth,
        runs=runs,
        steps=steps,
        test_limit=test_limit,
        seed=common.seed(),
        out=out,
    )
    ws = common.workspace(quiet=as_json)
    job.preflight(ws, request)  # refused before the data is looked for (or offered)
    result = job.run(ws, replace(request, data=common.data_source(data)))
    if as_json:
        common.print_json(result.as_json())
        return
    heads = [f"+{k}" for k in result.counts]
    rows = [
        [line["label"]] + [_pm(pt["mean"], pt["sd"]) for pt in line["points"]]
        for line in result.lines
    ]
    common.table(
        f"mixing: test accuracy %, mean ± sd over {result.runs} seeds (n = {result.runs}) per "
        f"real images added per class; {result.protocol}; {result.test_images} test images; "
        f"chance {100 * result.chance:.0f}%",
        ["line (own images)", *heads],
        rows,
    )
    if 0 in result.counts and len(result.counts) > 1:
        rows = [
            [line["label"]] + [_change(pt["vs_zero"]) for pt in line["points"] if pt["count"]]
            for line in result.lines
        ]
        common.table(
            "change vs +0 (points, paired over the same seeds; p: paired t-test)",
            ["line", *[h for h in heads if h != "+0"]],
            rows,
        )
    rows = [
        [line["label"]] + [_change(pt["vs_random"]) for pt in line["points"]]
        for line in result.lines
        if line["role"] == "set"
    ]
    common.table(
        "set minus random real images at the same count (points, paired; p: paired t-test)",
        ["set", *heads],
        rows,
    )
    total = len(result.analysis_ids)
    common.echo(
        f"real images drawn class-stratified with seed {result.draw_seed} (nested over counts); "
        f"{result.trained} of {total} units trained now; paper: +2 to +50 lower the accuracy "
        "of 10 distilled images per class"
    )
    common.echo(f"wrote {result.figure}")
