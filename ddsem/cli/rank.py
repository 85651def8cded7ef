"""``ddsem rank``, ``ddsem query "yellow cars"`` and ``ddsem report``: which semantics the
distilled images store, measured by the PR-AUC of their influence rankings (paper 5.2).

The work is done by ``ddsem.jobs.rank``, ``ddsem.jobs.query`` and ``ddsem.jobs.report``; the
global ``--seed`` chooses the influence run (not given: the only run, or the mean)."""

from __future__ import annotations

import typer

from ddsem.cli import common
from ddsem.config import SignificanceConfig

MEAN_HELP = (
    "Average the complete runs' influence over seeds (scope mean); the global --seed S takes the "
    "run of seed S instead."
)
SIGNIFICANCE = SignificanceConfig()
ALPHA_HELP = (
    "False discovery rate: an answer is significant when its Benjamini-Hochberg q-value is "
    "below it (0 < alpha < 1)."
)
DRAWS_HELP = (
    "Most permutation-null draws per (test images, positives): a null starts with "
    f"{SIGNIFICANCE.min_draws:,} and is drawn 10x deeper while fewer than 10 draws reach the "
    "most extreme AP. The smallest p-value is 1/(draws+1), printed as '<1/(draws+1)' "
    "(e.g. '<1.0e-04' for 10,000)."
)


def alpha_option() -> float:
    return typer.Option(SIGNIFICANCE.alpha, "--alpha", help=ALPHA_HELP)


def draws_option() -> int:
    return typer.Option(SIGNIFICANCE.max_draws, "--draws", help=DRAWS_HELP)


def estimator_option() -> str:
    return typer.Option(
        "loo",
        "--estimator",
        help="Whose influence: loo (exact leave-one-out) or an approximation stored by "
        "`ddsem influence --estimator if|tracin|trak` (its scores are kept apart, as scope "
        "ESTIMATOR/seed:S or ESTIMATOR/mean).",
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
    alpha: float = alpha_option(),
    draws: int = draws_option(),
    estimator: str = estimator_option(),
    as_json: bool = common.json_option(),
) -> None:
    """PR-AUC (scikit-learn's average precision) of every distilled image x attribute (x class),
    and whether it is better than chance.

    Test images are ranked by each distilled image's influence, highest first; the positives
    are the test images with the attribute (within-class: among the test images of the class).
    Stores AP, positive rate, positives, chance AP, lift (AP / chance AP), p, q and the null
    draws; a re-run replaces. Chance is the exact expected AP of a random ranking of the T test
    images with P positives; p is one-sided under the null that the ranking is independent of
    the attribute (a permutation null per (T, P), shared by every distilled image); q is
    Benjamini-Hochberg over every score the run stores for the set and scope, and an answer is
    significant when q < --alpha. Printed: the significant count and the strongest answers by
    q, then AP; a p below the floor of its draws as "<1/(draws+1)", e.g. "<5.0e-05".
    A mean over several seeds also scores each seed (its own family, stored as scope seed:S)
    and prints how well the seeds agree (Spearman of their APs, significant in every seed).
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
        alpha=alpha,
        draws=draws,
        estimator=estimator,
    )
    result = job.run(common.workspace(quiet=as_json), request)
    if as_json:
        common.print_json(result.as_json())
        return
    render_rank(result, min_positives)


def render_rank(result, min_positives: int) -> None:
    """What `ddsem rank` prints (the demo prints the same)."""
    from ddsem.jobs.judging import format_p, format_q
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
    common.echo(
        f"{result.significant} of {result.family} answers are better than chance at "
        f"q < {result.alpha:g} (Benjamini-Hochberg over the {result.family} scores of scope "
        f"{result.scope}; one-sided permutation p from {result.min_draws:,} to "
        f"{result.max_draws:,} null draws per (test images, positives), "
        f"{result.significance_seconds:.2f} s)"
    )
    agreement = result.seed_agreement
    if agreement is not None:
        scopes = ", ".join(agreement.scopes)
        per_seed = ", ".join(
            f"seed {s}: {n}"
            for s, n in zip(agreement.seeds, agreement.significant_by_seed, strict=True)
        )
        rho = ", ".join(f"{a} vs {b} {r:.2f}" for a, b, r in agreement.spearman)
        common.echo(
            f"each seed scored on its own (stored as scopes {scopes}): significant {per_seed}; "
            f"{agreement.significant_in_every_seed} answers significant in every seed; "
            f"Spearman of the seeds' APs: {rho}"
        )
    if result.top:
        by_seed = agreement is not None
        headers = ["distilled", "its class", "attribute", "among", "AP", "chance", "lift"]
        headers += ["p", "q", "sig"] + (["AP by seed (mean ± sd)", "every seed"] if by_seed else [])
        rows = []
        for r in result.top:
            row = [
                r.distilled_index,
                r.distilled_class,
                r.attribute,
                r.class_filter,
                f"{r.ap:.3f}",
                f"{r.chance_ap:.3f}",
                f"{r.lift:.2f}",
                format_p(r.p_value, r.draws),
                format_q(r.q_value),
                "*" if r.significant else "",
            ]
            if by_seed:
                row += [_seed_cell(r.ap_by_seed, r.ap_sd), _yes(r.significant_in_every_seed)]
            rows.append(row)
        common.table(
            f"strongest answers, lowest q then highest AP (attributes with >= {min_positives} "
            f"positives; * q < {result.alpha:g}; lift = AP / chance AP)",
            headers,
            rows,
        )


def _seed_cell(ap_by_seed, sd) -> str:
    if not ap_by_seed:
        return "-"
    mean = sum(ap_by_seed) / len(ap_by_seed)
    return f"{mean:.3f} ± {sd:.3f}"


def _yes(flag) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


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
    alpha: float = alpha_option(),
    draws: int = draws_option(),
    estimator: str = estimator_option(),
    as_json: bool = common.json_option(),
) -> None:
    """Which distilled images drive a semantic? Ranked by average precision, judged against
    chance.

    Each distilled image's AP is shown with the chance AP (the exact expected AP of a random
    ranking of the question's T test images with P positives), lift (AP / chance AP), a
    one-sided permutation p-value (the same null per (T, P) as `ddsem rank`) and a
    Benjamini-Hochberg q-value over all the distilled images ranked for the question; * marks
    q < --alpha, and a last line says in plain words whether any of them predicts the
    question better than chance. A p below the floor of its draws prints as "<1/(draws+1)".
    With a mean over several seeds: AP per seed (mean ± sd) and significance in every seed.
    """
    from ddsem.jobs import query as job

    request = job.QueryRequest(
        text,
        set_name=set_name,
        method=method,
        seed=common.OPTIONS.seed,
        mean_over_seeds=mean_over_seeds,
        top=top,
        images=images,
        alpha=alpha,
        draws=draws,
        estimator=estimator,
    )
    answer = job.run(common.workspace(create=False, quiet=as_json), request)
    if as_json:
        common.print_json(answer.as_json())
        return
    render_answer(answer)


def render_answer(answer) -> None:
    """What `ddsem query` prints (the demo prints the same)."""
    from ddsem.jobs.judging import format_p, format_q
    from ddsem.jobs.query import ESTIMATOR_TEXT

    parsed = answer.parsed
    common.echo(parsed.describe())
    where = f"{parsed.class_name} " if parsed.class_name else ""
    what = " and ".join(parsed.attributes)
    common.echo(
        f"set {answer.set_name!r} ({answer.method}), scope {answer.scope}: {answer.positives} of "
        f"{answer.total} annotated {where}test images have {what} "
        f"(positive rate {answer.positive_rate:.3f}, chance AP {answer.chance_ap:.3f})"
    )
    by_seed = any(r.ap_by_seed is not None for r in answer.results)
    headers = ["rank", "distilled", "its class", "AP", "chance", "lift", "p", "q", "sig"]
    if by_seed:
        headers += ["AP by seed (mean ± sd)", "every seed"]
    headers.append(f"most influenced {what} test images")
    rows = []
    for i, r in enumerate(answer.results):
        row = [
            i + 1,
            r.distilled_index,
            r.class_name,
            f"{r.ap:.3f}",
            f"{r.chance_ap:.3f}",
            f"{r.lift:.2f}",
            format_p(r.p_value, answer.draws),
            format_q(r.q_value),
            "*" if r.significant else "",
        ]
        if by_seed:
            row += [_seed_cell(r.ap_by_seed, r.ap_sd), _yes(r.significant_in_every_seed)]
        row.append("  ".join(f"#{h.test_index} ({h.influence:+.3g})" for h in r.top_images))
        rows.append(row)
    common.table(
        f"distilled images ranked by {ESTIMATOR_TEXT} (* q < {answer.alpha:g}, Benjamini-Hochberg "
        f"over the {answer.num_distilled} distilled images)",
        headers,
        rows,
    )
    if answer.seed_spearman:
        rho = ", ".join(f"{a} vs {b} {r:.2f}" for a, b, r in answer.seed_spearman)
        common.echo(f"Spearman of the seeds' APs over the {answer.num_distilled} images: {rho}")
    common.echo(answer.verdict)


def report(
    out: str = typer.Option(..., "--out", help="Folder for the figures and tables."),
    method: str = common.method_option(),
    set_name: str = common.set_option(),
    mean_over_seeds: bool = typer.Option(False, "--mean-over-seeds", help=MEAN_HELP),
    question: str = typer.Option(
        None,
        "--query",
        help=(
            'PR curves for this question (e.g. "yellow cars") [default: the stored pair of lowest '
            "q, then highest lift]."
        ),
    ),
    top: int = typer.Option(5, "--top", help="Distilled images drawn in the PR curves."),
    per_image: int = typer.Option(
        3, "--attributes-per-image", help="Attributes listed per distilled image in the table."
    ),
    min_positives: int = typer.Option(
        5, "--min-positives", help="Table: only attributes with this many positives."
    ),
    alpha: float = alpha_option(),
    draws: int = draws_option(),
    estimator: str = estimator_option(),
) -> None:
    """Figures and tables of the semantics: PR curves, influence grids, Table 1 (MD, CSV).

    PR curves of the distilled images that best find an attribute (paper Fig 9; the chance AP
    dashed, each curve with its p and q as `ddsem query` gives them), each distilled image
    beside the 3x3 grid of its most influenced test images (Fig 10), and a Table-1-style summary
    of each image's most predictive attributes from the scores `ddsem rank` stored (lowest q,
    then highest lift = AP / chance AP; * marks q < --alpha)."""
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
        alpha=alpha,
        draws=draws,
        estimator=estimator,
    )
    render_report(job.run(common.workspace(), request))


def render_report(result) -> None:
    """What `ddsem report` prints (the demo prints the same)."""
    common.echo(f"PR curves for {result.attributes} among {result.among}: {result.pr_curves}")
    common.echo(f"{len(result.grids)} influence grids: {result.influence_dir}")
    n = result.curves_significant
    common.echo(
        f"{n} distilled image{'' if n == 1 else 's'} find{'s' if n == 1 else ''} "
        f"{result.attributes} among {result.among} better than chance (q < {result.alpha:g})"
    )
    common.echo(
        f"table: {result.table_md} and {result.table_csv} ({result.table_significant} of "
        f"{result.table_rows} rows significant)"
    )
