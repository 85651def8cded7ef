"""``ddsem analyze inverse``: paper Fig. 2, a face over ``ddsem.jobs.analyze.inverse``.

Models trained on real data classify each distilled set (accuracy per set and per class,
beside chance and the model's own real test accuracy); their penultimate features of distilled
and real test images are embedded in 2-D and plotted by class.
"""

from __future__ import annotations

from dataclasses import replace

import typer

from ddsem.cli import common
from ddsem.config import InverseConfig
from ddsem.jobs.analyze.common import OUT

INVERSE = InverseConfig()
PAPER_MODELS = ",".join(
    s.arch if s.arch != "convnet" else f"{s.arch}:{s.width}" for s in INVERSE.models
)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def command(
    method: str = common.method_option("Comma-separated methods: each one's newest set."),
    set_name: str = common.set_option("Comma-separated distilled sets by name."),
    models: str = typer.Option(
        PAPER_MODELS,
        "--models",
        help="Real-data models, comma-separated arch[:width] (width 128 when left out).",
    ),
    epochs: str = typer.Option(
        None,
        "--epochs",
        help="Epochs on real data: one for all or one per model [default: the paper's, 20 "
        "for convnet:16, 40 for the others].",
    ),
    train_samples: int = typer.Option(
        None, "--train-samples", help="Real training images (class-stratified) [default: all]."
    ),
    test_limit: int = typer.Option(
        None, "--test-limit", help="Real test images (class-stratified) [default: all]."
    ),
    embed_test: int = typer.Option(
        INVERSE.embed_test,
        "--embed-test",
        help="Real test images embedded with the distilled ones [default: every test image].",
    ),
    embed_model: str = typer.Option(
        None, "--embed-model", help="Embed only these models (arch[:width]) [default: all]."
    ),
    no_embed: bool = typer.Option(False, "--no-embed", help="No 2-D embedding (Fig. 2 right)."),
    data: str = common.data_option(),
    out: str = typer.Option(OUT, "--out", help=common.OUT_HELP),
    as_json: bool = common.json_option(),
) -> None:
    """Real-data models classify distilled sets (Fig. 2 left) and embed their penultimate
    features with the real test images (Fig. 2 right: UMAP, or t-SNE without umap-learn).
    Without --method or --set: every set. Stored models and results are reused."""
    from ddsem.jobs.analyze import inverse as job

    request = job.InverseRequest(
        methods=common.split_names(method, "--method"),
        set_names=common.split_names(set_name, "--set"),
        models=job.model_specs(models, epochs),
        train_samples=train_samples,
        test_limit=test_limit,
        embed=not no_embed,
        embed_models=job.embed_labels(embed_model),
        embed_test=embed_test,
        seed=common.seed(),
        out=out,
    )
    ws = common.workspace(quiet=as_json)
    job.preflight(ws, request)  # refused before the data is looked for (or offered for download)
    result = job.run(ws, replace(request, data=common.data_source(data)))
    if as_json:
        common.print_json(result.as_json())
        return
    chance = result.chance
    common.echo(
        f"inverse: {len(result.models)} real-data models ({result.train_images} training "
        f"images, batch {INVERSE.batch_size}; {result.note}), {result.test_images} test "
        f"images; trained {result.trained} model(s) now, computed {result.computed} unit(s)"
    )
    common.table(
        "real-data models",
        ["model", "epochs", "steps", "real test %", "paper test %"],
        [
            [m["model"], m["epochs"], m["steps"], _pct(m["test_accuracy"]),
             _pct(m["paper_test_accuracy"])]
            for m in result.models
        ],
    )  # fmt: skip
    common.table(
        f"accuracy on each distilled set (chance {100 * chance:.0f}%)",
        ["model", "set", "method", "images", "accuracy %", "chance %", "real test %"],
        [
            [r["model"], r["set"], r["method"], r["images"], _pct(r["accuracy"]),
             _pct(r["chance"]), _pct(r["test_accuracy"])]
            for r in result.results
        ],
    )  # fmt: skip
    counts = {n for r in result.results for n in r["counts"]}
    n = counts.pop() if len(counts) == 1 else None
    per = f"{n} image{'' if n == 1 else 's'} per class" if n else "images per class differ"
    common.table(
        f"per-class accuracy % on each distilled set ({per}; chance {100 * chance:.0f}%)",
        ["model", "set", *[c[:5] for c in result.classes]],
        [
            [r["model"], r["set"],
             *["-" if a is None else f"{100 * a:.0f}" for a in r["per_class"]]]
            for r in result.results
        ],
    )  # fmt: skip
    for e in result.embeddings:
        what = "UMAP" if e["embedder"] == "umap" else f"{e['embedder']} (umap-learn not installed)"
        points = ", ".join(f"{n} of {k}" for k, n in e["set_points"].items())
        common.echo(
            f"embedding {e['analysis_id']} ({'stored before' if e['reused'] else 'computed'}): "
            f"{e['model']} penultimate features ({e['features']}-d) by {what}; "
            f"{e['test_points']} real test points, {points}"
        )
    for f in result.figures:
        common.echo(f"wrote {f}")
