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
from ddsem.config import InfluenceConfig, ModelConfig, TrainConfig

if TYPE_CHECKING:
    from ddsem.jobs.influence import ImageInfluence, RunsView

app = typer.Typer(
    help=(
        "Exact leave-one-out influence: `ddsem influence --method bptt [--seeds 0,1,2]` computes "
        "it; `show` and `check` read it."
    ),
    invoke_without_command=True,
)

CPU_CHUNK = 4  # ddsem.jobs.influence.CPU_CHUNK (not imported: the help must not load the job)


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
    as_json: bool = common.json_option(),
    processes: int = common.processes_option(),
) -> None:
    """Train N+1 models per seed from one initialisation, store influence(i, j) =
    loss_j(without i) - loss_j(with all); a killed run resumes, a repeated one is a no-op.
    The same command started twice at once on one database: the two processes split the
    models (each is claimed before it is trained) and both end with the one complete run.
    --processes N (or `accelerate launch -m ddsem influence ...`) splits every seed's models
    between N processes; the stored rows equal a single process's.
    The global --seed picks the real context's images [default: 0]."""
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
    as_json: bool = common.json_option(),
) -> None:
    """The runs of a set, or (--image K) the test images distilled image K influences most.
    With --image, the global --seed S shows seed S's run [default: mean over seeds]."""
    from ddsem.jobs import influence as job

    request = job.ShowRequest(set_name, method, image, common.OPTIONS.seed, context, top)
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
        ["seed", "context", "status", "models", "tests", "ref. accuracy", "device", "train s"],
        [
            [
                r.seed,
                r.context,
                r.status,
                f"{r.models_done}/{r.num_models}",
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
    common.echo(
        f"distilled image {view.image} ({view.class_name}) of set {view.set_name!r}: the test "
        f"images it influences most ({view.context} context, {what} {seeds_text})"
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
