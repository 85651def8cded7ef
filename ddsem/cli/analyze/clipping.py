"""``ddsem analyze clipping``: section 3 / Fig. 3 left, a face over ``ddsem.jobs.analyze.clipping``.

Pixel intensities of each distilled set against real images, the fraction outside [0, 1], and
the retrained test accuracy of the set as stored vs clipped to [0, 1]; stored per (set,
variant), drawn as one figure."""

from __future__ import annotations

import typer

from ddsem.cli import common
from ddsem.config import ClippingConfig, ModelConfig, TrainConfig
from ddsem.jobs.analyze.common import OUT

CLIPPING = ClippingConfig()
MODEL = ModelConfig()


def _pm(summary: dict) -> str:
    sd = summary["sd"]
    return f"{100 * summary['mean']:.2f}" + ("" if sd is None else f" ± {100 * sd:.2f}")


def _p(diff: dict) -> str:
    return "-" if diff["p"] is None else f"{diff['p']:.3g}"


def command(
    method: str = typer.Option(
        None, "--method", help="Comma-separated methods: each one's newest set (bptt,dm,...)."
    ),
    set_name: str = typer.Option(None, "--set", help="Comma-separated set names."),
    width: int = typer.Option(MODEL.width, "--width", help="ConvNet width."),
    depth: int = typer.Option(MODEL.depth, "--depth", help="ConvNet depth."),
    runs: int = typer.Option(
        CLIPPING.runs, "--runs", help="Models per variant (seeds; the same for both variants)."
    ),
    steps: int = typer.Option(
        TrainConfig.steps, "--steps", help="Full-batch steps on the set (lr 0.01, momentum 0.9)."
    ),
    test_limit: int = typer.Option(
        None, "--test-limit", help="Class-stratified test images [default: the whole split]."
    ),
    data: str = common.data_option(),
    out: str = typer.Option(OUT, "--out", help=common.OUT_HELP),
    as_json: bool = common.json_option(),
) -> None:
    """Pixel intensities of distilled sets vs real images, and retrained accuracy as stored vs
    clipped to [0, 1] (section 3, Fig. 3 left; paper: BPTT 58% -> 44%). Without --method or
    --set: every set."""
    from dataclasses import replace

    from ddsem.jobs.analyze import clipping as job

    request = job.ClippingRequest(
        methods=common.split_names(method, "--method"),
        set_names=common.split_names(set_name, "--set"),
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
    real = result.real
    rows = [
        [
            f"real (train, {real['images']})",
            f"{100 * real['outside_fraction']:.2f}",
            f"[{real['min']:.2f}, {real['max']:.2f}]",
            "-",
            "-",
            "-",
            "-",
        ]
    ]
    for s in result.sets:
        d = s.difference
        change = f"{100 * d['mean']:+.2f}" + ("" if d["sd"] is None else f" ± {100 * d['sd']:.2f}")
        rows.append(
            [
                f"{s.name} ({s.method}, {s.images})",
                f"{100 * s.pixels['outside_fraction']:.2f}",
                f"[{s.pixels['min']:.2f}, {s.pixels['max']:.2f}]",
                _pm(s.stored),
                _pm(s.clipped),
                change,
                _p(d),
            ]
        )
    common.table(
        f"clipping to [0, 1]: test accuracy %, mean ± sd over {result.runs} seeds (n = "
        f"{result.runs}, the same seeds for both), {result.steps} full-batch steps, "
        f"{result.test_images} test images; chance {100 * result.chance:.0f}%",
        [
            "set (method, images)",
            "outside [0,1] %",
            "pixel range",
            "as stored",
            "clipped",
            "change (points)",
            "p (paired t)",
        ],
        rows,
    )
    trained = f"{result.trained} of {2 * len(result.sets)} units trained now"
    common.echo(f"{real['note']}; {trained}; paper: BPTT 58% -> 44%")
    common.echo(f"wrote {result.figure}")
