"""``ddsem analyze extra-training``: appendix E / Fig. 24, a face over
``ddsem.jobs.analyze.extra_training``.

A ConvNet trained on real data (300 iterations, batch 256), then trained further on each
distilled set with the distilled-data protocol; test accuracy before and after, stored per set,
drawn as one figure."""

from __future__ import annotations

import typer

from ddsem.cli import common
from ddsem.config import ExtraTrainingConfig, ModelConfig, TrainConfig
from ddsem.jobs.analyze.common import OUT

EXTRA = ExtraTrainingConfig()
MODEL = ModelConfig()


def _pm(summary: dict) -> str:
    sd = summary["sd"]
    return f"{100 * summary['mean']:.2f}" + ("" if sd is None else f" ± {100 * sd:.2f}")


def command(
    method: str = typer.Option(
        None, "--method", help="Comma-separated methods: each one's newest set (bptt,dm,...)."
    ),
    set_name: str = typer.Option(None, "--set", help="Comma-separated set names."),
    width: int = typer.Option(MODEL.width, "--width", help="ConvNet width."),
    depth: int = typer.Option(MODEL.depth, "--depth", help="ConvNet depth."),
    runs: int = typer.Option(
        EXTRA.runs, "--runs", help="Seeds: one real-data model each, reused for every set."
    ),
    steps: int = typer.Option(
        TrainConfig.steps, "--steps", help="Full-batch steps on each set (lr 0.01, momentum 0.9)."
    ),
    real_iterations: int = typer.Option(
        EXTRA.real_iterations,
        "--real-iterations",
        help=f"Minibatch steps on real data first (batch {EXTRA.batch_size}).",
    ),
    train_samples: int = typer.Option(
        None, "--train-samples", help="Real training images (stratified) [default: all]."
    ),
    test_limit: int = typer.Option(
        None, "--test-limit", help="Class-stratified test images [default: the whole split]."
    ),
    data: str = common.data_option(),
    out: str = typer.Option(OUT, "--out", help=common.OUT_HELP),
    as_json: bool = common.json_option(),
) -> None:
    """Train a model on real data, then further on each distilled set: test accuracy before and
    after (appendix E, Fig. 24; paper: BPTT and TM change little, DM and GM lose 5-7 points).
    Without --method or --set: every set."""
    from dataclasses import replace

    from ddsem.jobs.analyze import extra_training as job

    request = job.ExtraTrainingRequest(
        methods=common.split_names(method, "--method"),
        set_names=common.split_names(set_name, "--set"),
        width=width,
        depth=depth,
        runs=runs,
        steps=steps,
        real_iterations=real_iterations,
        train_samples=train_samples,
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
    rows = []
    for s in result.sets:
        c = s.change
        change = f"{100 * c['mean']:+.2f}" + ("" if c["sd"] is None else f" ± {100 * c['sd']:.2f}")
        p = "-" if c["p"] is None else f"{c['p']:.3g}"
        rows.append([f"{s.name} ({s.method}, {s.images})", _pm(s.before), _pm(s.after), change, p])
    common.table(
        f"extra training: test accuracy %, mean ± sd, n = {result.runs} seeds; "
        f"{result.real_iterations} real iterations ({result.train_images} images), then "
        f"{result.steps} steps on the set; {result.test_images} test images; "
        f"chance {100 * result.chance:.0f}%",
        ["set (method, images)", "before", "after", "change (points)", "p (paired t)"],
        rows,
    )
    common.echo(
        f"{result.trained_real} real models and {result.trained} of {len(result.sets)} sets "
        "trained now; paper: BPTT and TM change little, DM and GM lose 5-7 points"
    )
    common.echo(f"wrote {result.figure}")
