"""``ddsem annotate``: answers of an annotator (LLaVA or the colour palette) about real images.

Resumable and idempotent: each (image, prompt, annotator, model) is answered once; every batch
is committed on its own, so Ctrl-C keeps finished batches and a re-run does only the rest.
"""

from __future__ import annotations

import time

import typer

from ddsem.cli import common
from ddsem.config import AnnotateConfig
from ddsem.errors import UserError

DATA_HELP = (
    "torchvision's cifar-10-batches-py folder, an image folder {train,test}/<class>/*.jpg, "
    "or its .tar.gz [default: $DDSEM_DATA]"
)
ANNOTATORS = ("color", "llava")
DEFAULTS = AnnotateConfig()


def parse_classes(text: str, classes: tuple[str, ...] | list[str]) -> list[int]:
    """ "automobile,frog" or "1,6" -> class indices; one clear line for anything unknown."""
    wanted = [t.strip() for t in text.split(",") if t.strip()]
    if not wanted:
        raise UserError("--classes is empty: name classes, e.g. --classes automobile,frog")
    out: list[int] = []
    for item in wanted:
        if item.isdigit() and int(item) < len(classes):
            index = int(item)
        elif item.lower() in classes:
            index = list(classes).index(item.lower())
        else:
            raise UserError(
                f"unknown class {item!r}: classes are {', '.join(classes)} (or 0-{len(classes) - 1})"
            )
        if index not in out:
            out.append(index)
    return out


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
    data: str = typer.Option(None, "--data", help=DATA_HELP),
    dataset: str = typer.Option("cifar10", "--dataset", help="cifar10 or cifar100."),
) -> None:
    """Describe real images with an annotator; answers become Annotation rows."""
    import numpy as np

    from ddsem.annotate.prompts import DEFAULT_PROMPTS, Prompt, parse_prompts
    from ddsem.data import load_dataset, stratified_indices
    from ddsem.db import annotations as store
    from ddsem.db.sets import ensure_dataset, ensure_images

    # -- check everything before the database is touched ----------------------------------------
    annotator = annotator.strip().lower()
    if annotator not in ANNOTATORS:
        raise UserError(f"unknown annotator {annotator!r}: use {' or '.join(ANNOTATORS)}")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be a positive number of images, got {limit}")
    if annotator == "color":
        from ddsem.annotate.color import COLOR_PROMPTS, PALETTE_VERSION

        if prompt:
            raise UserError(
                "--prompt is for --annotator llava; the colour annotator answers object and background"
            )
        if model:
            raise UserError(
                f"--model is for --annotator llava; the colour annotator is {PALETTE_VERSION}"
            )
        prompts = [Prompt(n, t) for n, t in COLOR_PROMPTS.items()]
        model_id = PALETTE_VERSION
        batch = batch_size or DEFAULTS.color_batch_size
    else:
        from ddsem.annotate.llava import model_key

        prompts = parse_prompts(prompt, DEFAULT_PROMPTS)
        model_id = model_key(model or DEFAULTS.model)
        batch = batch_size or DEFAULTS.llava_batch_size

    data_set = load_dataset(data, dataset)
    pixels, labels = data_set.split(split)
    indices = stratified_indices(labels, limit, seed=0)
    if classes is not None:
        keep = parse_classes(classes, data_set.classes)
        indices = indices[np.isin(labels[indices], keep)]
    if len(indices) == 0:
        raise UserError(
            f"no images selected ({split} split, --limit {limit}, --classes {classes}): "
            "widen the selection"
        )

    db = common.open_database()
    stored = store.stored_prompts(db, annotator, model_id)
    for p in prompts:
        if p.name in stored and stored[p.name] != p.text:
            raise UserError(
                f"prompt {p.name!r} was answered by {annotator} {model_id} with another text "
                f"({stored[p.name]!r}); give the new question another NAME"
            )
    known = store.image_ids(db, data_set.name, split)
    done = store.answered(
        db, [known[i] for i in map(int, indices) if i in known], annotator, model_id
    )
    todo = [
        (p, int(i))
        for p in prompts
        for i in indices
        if int(i) not in known or (known[int(i)], p.name) not in done
    ]
    if not todo:
        common.echo(
            f"all {len(indices)} images already have {annotator} ({model_id}) answers to "
            f"{', '.join(p.name for p in prompts)}: nothing to do"
        )
        return

    if annotator == "color":
        from ddsem.annotate.color import ColorAnnotator

        engine = ColorAnnotator()
    else:
        from ddsem.annotate.llava import load_llava

        engine = load_llava(model or DEFAULTS.model, common.device(), max_new_tokens=max_new_tokens)

    # -- write: register the images, then answer batch by batch ---------------------------------
    dataset_row = ensure_dataset(
        db,
        data_set.name,
        data_set.source,
        data_set.classes,
        len(data_set.train_y),
        len(data_set.test_y),
    )
    ensure_images(db, dataset_row.id, split, indices, pixels, labels)
    ids = store.image_ids(db, data_set.name, split)

    common.echo(
        f"{annotator} ({model_id}): {len(todo)} answers to give for {len(indices)} {split} images "
        f"({len(indices) * len(prompts) - len(todo)} already stored), batch {batch}"
    )
    start = time.perf_counter()
    written = 0
    with common.progress(len(todo), f"{annotator} answers") as advance:
        for first in range(0, len(todo), batch):
            chunk = todo[first : first + batch]
            answers = engine.answer(pixels[[i for _, i in chunk]], [p for p, _ in chunk])
            rows = [(ids[i], p.name, p.text, a) for (p, i), a in zip(chunk, answers, strict=True)]
            written += store.add_annotations(db, annotator, model_id, rows)
            advance(len(chunk))
    seconds = time.perf_counter() - start
    images_per_second = len(todo) / len(prompts) / max(seconds, 1e-9)
    common.echo(
        f"wrote {written} answers in {seconds:.1f} s: {images_per_second:.1f} images/s "
        f"({len(todo) / max(seconds, 1e-9):.1f} answers/s)"
    )
    i = todo[0][1]
    sample = store.read_annotations(db, annotator, model_id, image_ids=[ids[i]])
    for row in sample:
        common.echo(f"  {split}[{i}] {row.prompt_name}: {row.response[:160]}")

    if store.list_attributes(db):
        from ddsem.annotate.attributes import label_pairs

        count = store.relabel(db, label_pairs)
        common.echo(f"attribute labels recomputed: {count} image-attribute labels")


def register(app: typer.Typer) -> None:
    """Mount ``ddsem annotate`` and the ``ddsem attributes`` group."""
    from ddsem.cli import attributes

    app.command("annotate")(annotate)
    app.add_typer(attributes.app, name="attributes")
