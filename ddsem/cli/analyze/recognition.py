"""``ddsem analyze recognition``: the paper's Fig. 5 (section 4.2), a face over
``ddsem.jobs.analyze.recognition``.

A ConvNet trained on real data; after every iteration its accuracy on the real test images and
on each distilled set (its own labels), over several seeds. Stored per seed, resumable.
"""

from __future__ import annotations

import typer

from ddsem.cli import common
from ddsem.config import ModelConfig, RecognitionConfig
from ddsem.jobs.analyze.common import OUT

RECOGNITION = RecognitionConfig()
MODEL = ModelConfig()


def command(
    method: str = common.method_option(
        "Comma-separated methods: each one's newest set (bptt,dm,gm,tm) [default: every set]."
    ),
    set_name: str = common.set_option("Comma-separated distilled sets by name."),
    width: int = typer.Option(MODEL.width, "--width", help="ConvNet width."),
    depth: int = typer.Option(MODEL.depth, "--depth", help="ConvNet depth."),
    epochs: int = typer.Option(
        RECOGNITION.epochs, "--epochs", help="Epochs on the real training images (batch 256)."
    ),
    train_samples: int = typer.Option(
        None, "--train-samples", help="Real training images (stratified) [default: all]."
    ),
    test_limit: int = typer.Option(
        None, "--test-limit", help="Class-stratified test images [default: all]."
    ),
    every: int = typer.Option(
        RECOGNITION.every, "--every", help="Measure accuracy after every N-th iteration."
    ),
    runs: int = typer.Option(RECOGNITION.seeds, "--runs", help="Models (seeds) for the band."),
    tolerance: float = typer.Option(
        RECOGNITION.tolerance,
        "--tolerance",
        help="Settled: accuracy stays within this of its final value (0.05 = 5 points).",
    ),
    data: str = common.data_option(),
    out: str = typer.Option(OUT, "--out", help=common.OUT_HELP),
    as_json: bool = common.json_option(),
) -> None:
    """When a model trained on real data recognises distilled data (Fig. 5): accuracy on the
    test images and on each set after every iteration, the iteration each settles at, and the
    final accuracies (mean ± sd over seeds)."""
    from dataclasses import replace

    from ddsem.jobs.analyze import recognition as job

    request = job.RecognitionRequest(
        methods=common.split_names(method, "--method"),
        set_names=common.split_names(set_name, "--set"),
        width=width,
        depth=depth,
        epochs=epochs,
        train_samples=train_samples,
        test_limit=test_limit,
        every=every,
        runs=runs,
        tolerance=tolerance,
        seed=common.seed(),
        out=out,
    )
    ws = common.workspace(quiet=as_json)
    job.preflight(ws, request)  # refused before the data is looked for (or offered for download)
    result = job.run(ws, replace(request, data=common.data_source(data)))
    if as_json:
        common.print_json(result.as_json())
        return
    p, n = result.params, len(result.seeds)
    model, train = p["model"], p["train"]
    stored = n - len(result.trained)
    common.echo(
        f"recognition: ConvNet-{model['width']}-{model['depth']} trained on "
        f"{p['train_images']} real images for {result.steps} iterations ({p['epochs']} epochs, "
        f"batch {train['batch_size']}, SGD lr {train['lr']:g} momentum {train['momentum']:g}); "
        f"accuracy every {p['every']} iteration(s); {n} seed(s): {len(result.trained)} trained "
        f"now, {stored} stored before"
    )
    rows = []
    for r in result.rows:
        j = r.as_json()
        rows.append(
            [
                "real test" if r.set_id is None else r.source,
                r.method or "-",
                r.images,
                f"{100 * j['final_accuracy_mean']:.1f} ± {100 * j['final_accuracy_sd']:.1f}",
                f"{j['settled_iteration_mean']:.0f} ± {j['settled_iteration_sd']:.0f}",
                r.settled_of_mean,
            ]
        )
    common.table(
        f"accuracy after {result.steps} iterations, mean ± sd over n={n} seed(s); chance "
        f"{100 * result.chance:g}%; settled = first iteration from which accuracy stays within "
        f"{100 * result.tolerance:g} points of its final value",
        ["source", "method", "images", "final acc %", "settled at (iter)", "mean curve settles"],
        rows,
    )
    common.echo(
        "paper (Fig. 5): BPTT/TM sets reach 100% by iteration ~150 and DM/GM plateau at "
        "70-80%, while test accuracy keeps rising"
    )
    common.echo(f"wrote {result.figure}")
