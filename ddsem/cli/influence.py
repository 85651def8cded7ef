"""``ddsem influence``: exact leave-one-out influence of distilled images on real test images.

``ddsem influence --method bptt`` computes and stores it (paper section 5.1), resumably;
``ddsem influence show`` prints the most influenced test images or a summary of the runs;
``ddsem influence check`` validates the runs (seed consistency, context independence, pixel
similarity, numerical noise floor; paper Figures 7 and 8). The work is ``ddsem.jobs.influence``
and ``ddsem.jobs.influence_check``; this module is their face.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import typer

from ddsem.cli import common
from ddsem.config import (
    ESTIMATORS,
    EstimatorConfig,
    InfluenceConfig,
    ModelConfig,
    TrainConfig,
)

if TYPE_CHECKING:
    from ddsem.jobs.influence import ImageInfluence, RunsView

app = typer.Typer(
    help=(
        "Leave-one-out influence: `ddsem influence --method bptt [--seeds 0,1,2]` computes it "
        "exactly, `--estimator if|tracin|trak` approximates it from one training; `show`, "
        "`check` and `compare` read it."
    ),
    invoke_without_command=True,
)

CPU_CHUNK = 4  # ddsem.jobs.influence.CPU_CHUNK (not imported: the help must not load the job)
ESTIMATION = EstimatorConfig()
ESTIMATOR_HELP = (
    "loo: exact leave-one-out (N+1 trainings per seed); if: influence functions with EK-FAC "
    "curvature (kronfluence); tracin: gradient dot products over checkpoints (TracIn); trak: "
    "TRAK (traker). The approximations train one model per seed and are stored beside the "
    "exact runs; `ddsem influence compare` scores them against exact LOO."
)


def estimator_option() -> str:
    return typer.Option("loo", "--estimator", help=f"{' | '.join(ESTIMATORS)}. " + ESTIMATOR_HELP)


@app.callback(invoke_without_command=True)
def influence(
    ctx: typer.Context,
    method: str = common.method_option(),
    set_name: str = common.set_option(),
    seeds: str = typer.Option("0", "--seeds", help="Initialisation seeds, e.g. 0,1,2."),
    context: str = typer.Option(
        InfluenceConfig.context,
        "--context",
        help="distilled: the set without image i; real: 100 real images with image i added.",
    ),
    test_limit: int = typer.Option(
        None,
        "--test-limit",
        help="Class-stratified subset of the test split, the same one `ddsem annotate --limit N` takes [default: all].",
    ),
    width: int = typer.Option(ModelConfig.width, "--width", help="ConvNet width (paper: 128)."),
    depth: int = typer.Option(ModelConfig.depth, "--depth", help="ConvNet depth (paper: 3)."),
    steps: int = typer.Option(
        TrainConfig.steps, "--steps", help="Full-batch SGD steps (paper: 300)."
    ),
    lr: float = typer.Option(TrainConfig.lr, "--lr", help="SGD learning rate (paper: 0.01)."),
    momentum: float = typer.Option(
        TrainConfig.momentum, "--momentum", help="SGD momentum (paper: 0.9)."
    ),
    real_images: int = typer.Option(
        InfluenceConfig.real_images,
        "--real-images",
        help="Real context: real training images (paper: 100).",
    ),
    top_k: int = typer.Option(
        InfluenceConfig.top_k, "--top-k", help="Top-k table size per distilled image."
    ),
    chunk: int = typer.Option(
        0,
        "--chunk",
        help=f"Models trained and stored per transaction [default: all on CUDA, {CPU_CHUNK} on CPU].",
    ),
    data: str = common.data_option(),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace runs of this set/seed/context with another config."
    ),
    estimator: str = estimator_option(),
    checkpoints: int = typer.Option(
        ESTIMATION.checkpoints,
        "--checkpoints",
        help="tracin, trak: checkpoints of the training, evenly spaced, the last the final model.",
    ),
    damping: float = typer.Option(
        None,
        "--damping",
        help="if: damping added to the curvature [default: kronfluence's heuristic, 0.1 x the "
        "mean eigenvalue].",
    ),
    strategy: str = typer.Option(
        ESTIMATION.strategy, "--strategy", help="if: ekfac, kfac, diagonal or identity."
    ),
    proj_dim: int = typer.Option(
        ESTIMATION.proj_dim, "--proj-dim", help="trak: random projection dimension."
    ),
    as_json: bool = common.json_option(),
    processes: int = common.processes_option(),
) -> None:
    """Train N+1 models per seed from one initialisation, store influence(i, j) =
    loss_j(without i) - loss_j(with all); a killed run resumes, a repeated one is a no-op.
    The same command started twice at once on one database: the two processes split the
    models (each is claimed before it is trained) and both end with the one complete run.
    --processes N (or `accelerate launch -m ddsem influence ...`) splits every seed's models
    between N processes; the stored rows equal a single process's.
    The global --seed picks the real context's images [default: 0].
    --estimator if|tracin|trak instead trains ONE model per seed (the exact run's reference
    model) and approximates every influence from gradients; it is stored beside the exact
    runs, skipped when stored, and scored against them by `ddsem influence compare`."""
    if ctx.invoked_subcommand is not None:
        return
    if method is None and set_name is None:
        typer.echo(ctx.get_help())
        return
    from ddsem.jobs import influence as job

    request = job.InfluenceRequest(
        set_name=set_name,
        method=method,
        seeds=common.parse_int_list(seeds, "--seeds"),
        context=context,
        test_limit=test_limit,
        width=width,
        depth=depth,
        steps=steps,
        lr=lr,
        momentum=momentum,
        real_images=real_images,
        top_k=top_k,
        chunk=chunk,
        overwrite=overwrite,
        selection_seed=common.seed(),
        estimator=estimator,
        estimation=EstimatorConfig(
            checkpoints=checkpoints, damping=damping, strategy=strategy, proj_dim=proj_dim
        ),
    )
    source = common.data_source(data)
    common.launch(processes, "influence")
    ws = common.workspace(quiet=as_json)
    result = job.run(ws, replace(request, data=source))
    if as_json:
        common.print_json(result.as_json())


@app.command("show")
def show(
    method: str = common.method_option(),
    set_name: str = common.set_option(),
    image: int = typer.Option(
        None, "--image", help="A distilled image: its most influenced test images."
    ),
    context: str = typer.Option(InfluenceConfig.context, "--context", help="distilled or real."),
    top: int = typer.Option(10, "--top", help="With --image: how many test images."),
    estimator: str = typer.Option("loo", "--estimator", help="With --image: whose runs."),
    as_json: bool = common.json_option(),
) -> None:
    """The runs of a set, or (--image K) the test images distilled image K influences most.
    With --image, the global --seed S shows seed S's run [default: mean over seeds]."""
    from ddsem.jobs import influence as job

    request = job.ShowRequest(set_name, method, image, common.OPTIONS.seed, context, top, estimator)
    ws = common.workspace(create=False, quiet=as_json)
    view = job.show(ws, request)
    if as_json:
        common.print_json(view.as_json())
    elif isinstance(view, job.RunsView):
        _print_runs(view)
    else:
        _print_image(view)


def _print_runs(view: RunsView) -> None:
    if not view.runs:
        common.echo(
            f"no influence runs for set {view.set_name!r}: `ddsem influence --method {view.method}`"
        )
        return
    common.table(
        f"influence runs of set {view.set_name!r} ({view.num_images} images)",
        [
            "estimator",
            "seed",
            "context",
            "status",
            "models",
            "tests",
            "ref. accuracy",
            "device",
            "train s",
        ],
        [
            [
                r.estimator,
                r.seed,
                r.context,
                r.status,
                f"{r.models_done}/{r.num_models}"
                if r.estimator == "loo"
                else f"{r.num_models} trained",
                r.num_test,
                "-" if r.full_accuracy is None else f"{100 * r.full_accuracy:.2f}%",
                r.device,
                f"{r.wall_seconds or 0:.1f}",
            ]
            for r in view.runs
        ],
    )


def _print_image(view: ImageInfluence) -> None:
    if view.stored_top_k is not None:
        common.echo(f"(the stored top-k table holds {view.stored_top_k} per image)")
    seeds_text = ",".join(str(s) for s in view.seeds)
    what = "mean over seeds" if view.scope == "mean" else "seed"
    how = "exact LOO" if view.estimator == "loo" else f"estimator {view.estimator}"
    common.echo(
        f"distilled image {view.image} ({view.class_name}) of set {view.set_name!r}: the test "
        f"images it influences most ({how}, {view.context} context, {what} {seeds_text})"
    )
    common.table(
        "",
        ["rank", "test index", "class", "influence"],
        [[t.rank, t.test_index, t.class_name, f"{t.value:+.5f}"] for t in view.top],
    )


@app.command("check")
def check(
    method: str = common.method_option(),
    set_name: str = common.set_option(),
    out: str = typer.Option(None, "--out", help="Folder for the PNG scatter plots."),
    data: str = common.data_option(),
    noise: bool = typer.Option(
        True,
        "--noise/--no-noise",
        help="Retrain the reference model once to measure the numerical noise floor.",
    ),
    as_json: bool = common.json_option(),
) -> None:
    """Seed consistency and context independence (Pearson; paper Fig. 8), influence vs pixel
    distance (Spearman, faiss; Fig. 7) and the numerical noise floor of the stored runs."""
    from ddsem.jobs import influence_check as job

    ws = common.workspace(create=False, quiet=as_json)
    request = job.CheckRequest(set_name, method, out, common.data_source(data), noise)
    report = job.run(ws, request)
    if as_json:
        common.print_json(report.as_json())
        return
    for line in report.describe():
        common.echo(line)


@app.command("compare")
def compare(
    method: str = common.method_option(),
    set_name: str = common.set_option(),
    top_k: int = typer.Option(
        10, "--top-k", help="Most influenced test images per distilled image, for the overlap."
    ),
    out: str = typer.Option(None, "--out", help="Folder for the PNG scatter plots."),
    semantic: bool = typer.Option(
        True,
        "--semantic/--no-semantic",
        help="Also compare the significant semantic answers (needs annotated test images).",
    ),
    alpha: float = typer.Option(
        0.05, "--alpha", help="Significant: Benjamini-Hochberg q below it."
    ),
    draws: int = typer.Option(
        10_000, "--draws", help="Most permutation-null draws per (test images, positives)."
    ),
    as_json: bool = common.json_option(),
) -> None:
    """Score every approximate estimator's runs of the set against exact LOO: Pearson and
    Spearman (per distilled image and overall), top-k overlap of the most influenced test
    images (chance: k / T), how many of exact LOO's significant (image, class, attribute)
    answers each estimate also finds and how many it adds, and the cost of each. With two
    exact seeds, the first row is exact LOO of one seed against the other: how much exact LOO
    itself moves with the initialisation (an estimate starts from the same initial state as
    the exact run it is compared with, so it can agree with it more than another seed does)."""
    from ddsem.jobs import influence_compare as job

    ws = common.workspace(create=False, quiet=as_json)
    request = job.CompareRequest(set_name, method, top_k, out, semantic, alpha, draws)
    report = job.run(ws, request)
    if as_json:
        common.print_json(report.as_json())
        return
    _print_comparison(report)


def _print_comparison(report) -> None:  # noqa: ANN001  (ddsem.jobs.influence_compare.CompareReport)
    rows = [r for r in [report.reference, *report.comparisons] if r is not None]
    first = rows[0].fidelity
    common.table(
        f"estimators of set {report.set_name!r} ({report.num_images} distilled images x "
        f"{rows[0].test_images} test images) against exact LOO of the same seed",
        ["estimator", "vs LOO seed", "Pearson", "Spearman", "per image", f"top-{first.top_k}",
         "answers found", "added", "seconds", "trainings", "speed-up"],
        [
            [
                c.estimator if c.estimator != "loo" and c.seed == c.exact_seed
                else f"{c.estimator} seed {c.seed}",
                c.exact_seed,
                f"{c.fidelity.pearson:.3f}",
                f"{c.fidelity.spearman:.3f}",
                f"{c.fidelity.spearman_mean:.3f}",
                f"{c.fidelity.overlap:.2f}",
                "-" if c.answers is None else f"{c.answers.found}/{c.answers.exact}",
                "-" if c.answers is None else c.answers.added,
                f"{c.cost.seconds:.1f}",
                c.cost.trainings,
                f"{c.speedup:.1f}x",
            ]
            for c in rows
        ],
    )  # fmt: skip
    common.echo(
        f"top-{first.top_k}: share of each distilled image's {first.top_k} most influenced test "
        f"images both find (chance {first.chance_overlap:.3f}); per image: mean Spearman over "
        f"the distilled images; answers found: exact LOO's "
        "significant (image, class filter, attribute) answers the estimate also finds, added: "
        "significant only under the estimate"
    )
    if report.reference is not None:
        common.echo(
            f"loo seed {report.reference.seed}: exact LOO of another seed against seed "
            f"{report.reference.exact_seed}: how much exact LOO itself moves with the "
            "initialisation (an estimate shares its exact run's initial state)"
        )
    notes = {c.answers_note for c in rows if c.answers_note}
    for note in sorted(notes):
        common.echo(f"semantic answers: {note}")
    common.echo(
        f"exact LOO cost {rows[0].exact_cost.seconds:.1f} s for {rows[0].exact_cost.trainings} "
        "trainings per seed; speed-up = exact seconds / the estimate's seconds"
    )
    for path in report.figures:
        common.echo(f"figure: {path}")
