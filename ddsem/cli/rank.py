"""``ddsem rank``, ``ddsem query "yellow cars"`` and ``ddsem report``: which semantics the
distilled images store, measured by the PR-AUC of their influence rankings (paper 5.2).

The work is done by ``ddsem.jobs.rank``, ``ddsem.jobs.query`` and ``ddsem.jobs.report``; the
global ``--seed`` chooses the influence run (not given: the only run, or the mean)."""

from __future__ import annotations

import typer

from ddsem.cli import common

MEAN_HELP = (
    "Average the complete runs' influence over seeds (scope mean); the global --seed S takes the "
    "run of seed S instead."
)


def register(app: typer.Typer) -> None:
    """Mount the three top-level commands on the root app."""
    app.command("rank")(rank)
    app.command("query")(query)
    app.command("report")(report)


def rank(
    method: str = common.method_option(),
    set_name: str = common.set_option(),
    mean_over_seeds: bool = typer.Option(False, "--mean-over-seeds", help=MEAN_HELP),
    within_class: bool = typer.Option(
        False, "--within-class", help="Only rank within each class [default: both kinds]."
    ),
    all_classes: bool = typer.Option(
        False, "--all-classes", help="Only rank over all test images [default: both kinds]."
    ),
    top: int = typer.Option(10, "--top", help="How many of the best scores to print."),
    min_positives: int = typer.Option(
        5, "--min-positives", help="Print only scores of attributes with this many positives."
    ),
    as_json: bool = common.json_option(),
) -> None:
    """PR-AUC (scikit-learn's average precision) of every distilled image x attribute (x class).

    Test images are ranked by each distilled image's influence, highest first; the positives
    are the test images with the attribute (within-class: among the test images of the class).
    Stores AP, positive rate, positives and lift (AP / positive rate); a re-run replaces.
    """
    from ddsem.jobs import rank as job

    request = job.RankRequest(
        set_name=set_name,
        method=method,
        seed=common.OPTIONS.seed,
        mean_over_seeds=mean_over_seeds,
        within_class=within_class,
        all_classes=all_classes,
        top=top,
        min_positives=min_positives,
    )
    result = job.run(common.workspace(quiet=as_json), request)
    if as_json:
        common.print_json(result.as_json())
        return
    render_rank(result, min_positives)


def render_rank(result, min_positives: int) -> None:
    """What `ddsem rank` prints (the demo prints the same)."""
    from ddsem.jobs.rank import ESTIMATOR_TEXT

    seeds = ", ".join(map(str, result.seeds))
    common.echo(
        f"set {result.set_name!r} ({result.method}), influence scope {result.scope} "
        f"(seed{'s' if len(result.seeds) > 1 else ''} {seeds}): {result.distilled_images} "
        f"distilled images x {result.test_images} annotated test images x {result.attributes} "
        "attributes"
    )
    if result.skipped_unannotated:
        common.echo(
            f"left out {result.skipped_unannotated} test images of the run that are not "
            "annotated yet (`ddsem annotate` adds them)"
        )
    common.echo(
        f"stored {result.stored} scores, {result.kinds}, in {result.seconds:.2f} s; "
        f"estimator: {ESTIMATOR_TEXT}"
    )
    if result.undefined:
        common.echo(
            f"{result.undefined} (attribute, class) pairs have no positive test image: AP is "
            "undefined there and nothing is stored"
        )
    if result.top:
        common.table(
            f"highest lift (AP / positive rate; attributes with >= {min_positives} positives)",
            ["distilled", "its class", "attribute", "among", "AP", "pos. rate", "lift"],
            [
                [
                    r.distilled_index,
                    r.distilled_class,
                    r.attribute,
                    r.class_filter,
                    f"{r.ap:.3f}",
                    f"{r.positive_rate:.3f}",
                    f"{r.lift:.2f}",
                ]
                for r in result.top
            ],
        )


def query(
    text: str = typer.Argument(
        ..., help='The question, e.g. "yellow cars" or "planes on a runway".'
    ),
    method: str = common.method_option(),
    set_name: str = common.set_option(),
    mean_over_seeds: bool = typer.Option(False, "--mean-over-seeds", help=MEAN_HELP),
    top: int = typer.Option(5, "--top", help="How many distilled images to show."),
    images: int = typer.Option(
        5, "--images", help="Most influenced matching test images shown per distilled image."
    ),
    as_json: bool = common.json_option(),
) -> None:
    """Which distilled images drive a semantic? Ranked by average precision, with lift."""
    from ddsem.jobs import query as job

    request = job.QueryRequest(
        text,
        set_name=set_name,
        method=method,
        seed=common.OPTIONS.seed,
        mean_over_seeds=mean_over_seeds,
        top=top,
        images=images,
    )
    answer = job.run(common.workspace(quiet=as_json), request)
    if as_json:
        common.print_json(answer.as_json())
        return
    render_answer(answer)


def render_answer(answer) -> None:
    """What `ddsem query` prints (the demo prints the same)."""
    from ddsem.jobs.query import ESTIMATOR_TEXT

    parsed = answer.parsed
    common.echo(parsed.describe())
    where = f"{parsed.class_name} " if parsed.class_name else ""
    what = " and ".join(parsed.attributes)
    common.echo(
        f"set {answer.set_name!r} ({answer.method}), scope {answer.scope}: {answer.positives} of "
        f"{answer.total} annotated {where}test images have {what} "
        f"(positive rate {answer.positive_rate:.3f})"
    )
    common.table(
        f"distilled images ranked by {ESTIMATOR_TEXT}",
        ["rank", "distilled", "its class", "AP", "lift", f"most influenced {what} test images"],
        [
            [
                i + 1,
                r.distilled_index,
                r.class_name,
                f"{r.ap:.3f}",
                f"{r.lift:.2f}",
                "  ".join(f"#{h.test_index} ({h.influence:+.3g})" for h in r.top_images),
            ]
            for i, r in enumerate(answer.results)
        ],
    )


def report(
    out: str = typer.Option(..., "--out", help="Folder for the figures and tables."),
    method: str = common.method_option(),
    set_name: str = common.set_option(),
    mean_over_seeds: bool = typer.Option(False, "--mean-over-seeds", help=MEAN_HELP),
    question: str = typer.Option(
        None,
        "--query",
        help='PR curves for this question (e.g. "yellow cars") [default: the highest-lift pair].',
    ),
    top: int = typer.Option(5, "--top", help="Distilled images drawn in the PR curves."),
    per_image: int = typer.Option(
        3, "--attributes-per-image", help="Attributes listed per distilled image in the table."
    ),
    min_positives: int = typer.Option(
        5, "--min-positives", help="Table: only attributes with this many positives."
    ),
) -> None:
    """Figures and tables of the semantics: PR curves, influence grids, Table 1 (MD, CSV).

    PR curves of the distilled images that best find an attribute (paper Fig 9), each distilled
    image beside the 3x3 grid of its most influenced test images (Fig 10), and a Table-1-style
    summary of each image's most predictive attributes, from the scores `ddsem rank` stored."""
    from ddsem.jobs import report as job

    request = job.ReportRequest(
        out,
        set_name=set_name,
        method=method,
        seed=common.OPTIONS.seed,
        mean_over_seeds=mean_over_seeds,
        question=question,
        top=top,
        attributes_per_image=per_image,
        min_positives=min_positives,
    )
    render_report(job.run(common.workspace(), request))


def render_report(result) -> None:
    """What `ddsem report` prints (the demo prints the same)."""
    common.echo(f"PR curves for {result.attributes} among {result.among}: {result.pr_curves}")
    common.echo(f"{len(result.grids)} influence grids: {result.influence_dir}")
    common.echo(f"table: {result.table_md} and {result.table_csv}")
