"""``ddsem data info|prepare``: find, verify and decode a data set (``ddsem.jobs.data``)."""

from __future__ import annotations

from dataclasses import replace

import typer

from ddsem.cli import common

app = typer.Typer(help="Find, verify and unpack CIFAR-10/100.", no_args_is_help=True)


@app.command("info")
def info(
    data: str = common.data_option(),
    dataset: str = typer.Option("cifar10", "--dataset", help="cifar10 or cifar100."),
    as_json: bool = common.json_option(),
) -> None:
    """Per-split and per-class counts, channel means and stds, and the cache location."""
    from ddsem.jobs import data as job

    request = job.DataRequest(dataset=dataset)  # checked before the data is looked for
    d = job.info(replace(request, data=common.data_source(data, dataset)))
    if as_json:
        common.print_json(d.as_json())
        return
    common.echo(f"{d.dataset} from {d.source}")
    common.echo(f"cache: {d.cache}")
    train, test = d.splits["train"], d.splits["test"]
    rows = [[c, train["per_class"][c], test["per_class"][c]] for c in d.classes]
    rows.append(["total", train["images"], test["images"]])
    common.table("images per class", ["class", "train", "test"], rows)
    for split in ("train", "test"):
        s = d.splits[split]
        common.echo(f"{split}: channel mean {s['channel_mean']}  std {s['channel_std']}")


@app.command("prepare")
def prepare(
    data: str = common.data_option(),
    dataset: str = typer.Option("cifar10", "--dataset", help="cifar10 or cifar100."),
    download: bool = typer.Option(
        False, "--download", help="Download with torchvision (needs a network)."
    ),
) -> None:
    """Decode the data set once into the cache, so every later command loads it in a second."""
    from ddsem.jobs import data as job

    request = job.DataRequest(dataset=dataset, download=download)
    if data or not download:  # --download alone: torchvision's download, nothing to look for
        request = replace(request, data=common.data_source(data, dataset))
    d = job.prepare(request)
    common.echo(
        f"{d.dataset}: {d.splits['train']['images']} train, {d.splits['test']['images']} test "
        f"images; cache {d.cache}"
    )
