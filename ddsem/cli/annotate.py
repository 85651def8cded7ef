"""``ddsem annotate``: answers of an annotator (LLaVA or the colour palette) about real images.

Resumable and idempotent: each (image, prompt, annotator, model) is answered once; every batch
is committed on its own, so Ctrl-C keeps finished batches and a re-run does only the rest.
The work is the job ``ddsem.jobs.annotate``; this module is its face.
"""

from __future__ import annotations

from dataclasses import replace

import typer

from ddsem.cli import common
from ddsem.config import AnnotateConfig

DEFAULTS = AnnotateConfig()


def annotate(
    annotator: str = typer.Option(
        DEFAULTS.annotator, "--annotator", help="color (offline, any CPU) or llava (the paper's)."
    ),
    model: str = typer.Option(
        None,
        "--model",
        help=f"LLaVA: a hub name or a local model folder [default: {DEFAULTS.model}].",
    ),
    prompt: list[str] = typer.Option(
        None,
        "--prompt",
        help="LLaVA: NAME=TEXT, repeatable; replaces the two default prompts "
        "(object='Describe the object.', background='Describe the background.').",
    ),
    split: str = typer.Option(DEFAULTS.split, "--split", help="train or test."),
    limit: int = typer.Option(
        None,
        "--limit",
        help="A class-stratified subset of N images of the split (seed 0: the same images as "
        "`ddsem influence --test-limit N`).",
    ),
    classes: str = typer.Option(
        None,
        "--classes",
        help="Only these classes (names or indices, comma-separated), taken from the --limit subset.",
    ),
    batch_size: int = typer.Option(
        None,
        "--batch-size",
        help=f"Answers per batch [default: {DEFAULTS.llava_batch_size} for llava, "
        f"{DEFAULTS.color_batch_size} for color].",
    ),
    max_new_tokens: int = typer.Option(
        DEFAULTS.max_new_tokens, "--max-new-tokens", help="LLaVA: longest answer, in tokens."
    ),
    data: str = common.data_option(),
    dataset: str = typer.Option("cifar10", "--dataset", help="cifar10 or cifar100."),
    processes: int = common.processes_option(),
) -> None:
    """Describe real images with an annotator; answers become Annotation rows.

    Each batch is committed on its own (Ctrl-C keeps finished batches; a re-run does the
    rest). Started twice at once on one database, the two processes split the batches;
    --processes N (or `accelerate launch -m ddsem annotate ...`) splits them between N."""
    from ddsem.jobs import annotate as job

    request = job.AnnotateRequest(
        annotator=annotator,
        model=model,
        prompts=tuple(prompt or ()),
        split=split,
        limit=limit,
        classes=classes,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        dataset=dataset,
    )  # checked before the data is looked for
    request = replace(request, data=common.data_source(data, dataset))
    common.launch(processes, "annotate")
    render(job.run(common.workspace(), request))


def render(result) -> None:
    """What `ddsem annotate` prints after the work (the demo prints the same)."""
    if result.nothing_to_do:
        common.echo(
            f"all {result.images} images already have {result.annotator} ({result.model}) "
            f"answers to {', '.join(result.prompts)}: nothing to do"
        )
        return
    common.echo(
        f"wrote {result.written} answers in {result.seconds:.1f} s: "
        f"{result.images_per_second:.1f} images/s ({result.answers_per_second:.1f} answers/s)"
    )
    for index, name, response in result.samples:
        common.echo(f"  {result.split}[{index}] {name}: {response[:160]}")
    if result.relabelled is not None:
        common.echo(f"attribute labels recomputed: {result.relabelled} image-attribute labels")


def register(app: typer.Typer) -> None:
    """Mount ``ddsem annotate`` and the ``ddsem attributes`` group."""
    from ddsem.cli import attributes

    app.command("annotate")(annotate)
    app.add_typer(attributes.app, name="attributes")
