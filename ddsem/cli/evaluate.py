"""``ddsem evaluate``: retrained test accuracy of a distilled set across architectures and
protocols (the cross-architecture table of the analysis paper's appendix F), stored so a re-run
prints what is done and trains only what is missing. A face over ``ddsem.jobs.evaluate``."""

from __future__ import annotations

from dataclasses import replace

import typer

from ddsem.cli import common
from ddsem.config import ModelConfig
from ddsem.jobs import evaluate as job


def evaluate(
    name: str = typer.Option(
        None, "--set", help="The distilled set [or --method: its newest set]."
    ),
    method: str = typer.Option(None, "--method", help="Evaluate the newest set of this method."),
    arch: str = typer.Option(
        "convnet",
        "--arch",
        help="Comma-separated: convnet, alexnet, vgg11, resnet18 (+ vgg11bn, resnet18bn).",
    ),
    protocol: str = typer.Option(
        "paper,dc",
        "--protocol",
        help="Comma-separated: paper (300 full-batch steps), dc (DC: 300 epochs, lr step, "
        "wd 5e-4), dsa (DSA/DM/MTT: 1000 epochs, DSA augmentation, learned lr of a TM set).",
    ),
    runs: int = typer.Option(5, "--runs", help="Models per architecture and protocol (seeds)."),
    width: int = typer.Option(
        ModelConfig.width, "--width", help="Width: ConvNet channels; others scale by width/128."
    ),
    test_limit: int = typer.Option(
        None,
        "--test-limit",
        help="Class-stratified test subset size [default: the whole test split].",
    ),
    epochs: int = typer.Option(
        None,
        "--epochs",
        help="dc and dsa: train this many epochs [default: theirs, 300 and 1000]; a shortened "
        "protocol is stored under its own key.",
    ),
    data: str = typer.Option(None, "--data", help="CIFAR data [default: $DDSEM_DATA]."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Train models on a distilled set and report mean and std of their test accuracy."""
    request = job.EvaluateRequest(
        set_name=name, method=method, archs=tuple(arch.split(",")),
        protocols=tuple(protocol.split(",")), runs=runs, width=width, test_limit=test_limit,
        epochs=epochs, seed=common.seed(),
    )  # fmt: skip
    request = replace(request, data=common.data_source(data))
    result = job.run(common.workspace(quiet=as_json), request)
    if as_json:
        common.print_json(result.as_json())
        return
    rows = []
    for a in result.archs:
        cells = []
        for p in result.protocols:
            r = result.results[(a, p)]
            cells.append(f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}")
        rows.append([a, *cells])
    common.table(
        f"{result.set_name} ({result.method}, {result.num_images} images): test accuracy %, "
        f"{result.runs} runs, {result.test_images} test images",
        ["arch", *result.protocols],
        rows,
    )
    for p in result.protocols:
        i = result.protocol_info.get(p)
        if i:
            lr = f"lr {i['lr']:g}" + (
                " (the set's learned lr)" if i["lr_source"] == "learned" else ""
            )
            common.echo(
                f"{p}: {i['steps']} steps, {lr}, weight decay {i['weight_decay']:g}, "
                f"augmentation {i['augmentation']}"
            )
