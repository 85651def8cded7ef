"""``ddsem data info|prepare``: find, verify and decode a data set."""

from __future__ import annotations

import typer

from ddsem.cli import common

app = typer.Typer(help="Find, verify and unpack CIFAR-10/100.", no_args_is_help=True)

DATA_HELP = (
    "torchvision's cifar-10-batches-py folder, an image folder {train,test}/<class>/*.jpg, "
    "or its .tar.gz [default: $DDSEM_DATA]"
)


@app.command("info")
def info(
    data: str = typer.Option(None, "--data", help=DATA_HELP),
    dataset: str = typer.Option("cifar10", "--dataset", help="cifar10 or cifar100."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Per-split and per-class counts, channel means and stds, and the cache location."""
    import numpy as np

    from ddsem.data import load_dataset

    d = load_dataset(data, dataset)
    out: dict = {"dataset": d.name, "source": d.source, "cache": d.cache_path, "splits": {}}
    for split in ("train", "test"):
        x, y = d.split(split)
        pix = x.reshape(-1, 3).astype(np.float64) / 255.0
        out["splits"][split] = {
            "images": int(len(y)),
            "per_class": {c: int((y == k).sum()) for k, c in enumerate(d.classes)},
            "channel_mean": [round(float(v), 4) for v in pix.mean(0)],
            "channel_std": [round(float(v), 4) for v in pix.std(0)],
        }
    if as_json:
        common.print_json(out)
        return
    common.echo(f"{d.name} from {d.source}")
    common.echo(f"cache: {d.cache_path}")
    rows = []
    for c in d.classes:
        rows.append(
            [c, out["splits"]["train"]["per_class"][c], out["splits"]["test"]["per_class"][c]]
        )
    rows.append(["total", out["splits"]["train"]["images"], out["splits"]["test"]["images"]])
    common.table("images per class", ["class", "train", "test"], rows)
    for split in ("train", "test"):
        s = out["splits"][split]
        common.echo(f"{split}: channel mean {s['channel_mean']}  std {s['channel_std']}")


@app.command("prepare")
def prepare(
    data: str = typer.Option(None, "--data", help=DATA_HELP),
    dataset: str = typer.Option("cifar10", "--dataset", help="cifar10 or cifar100."),
    download: bool = typer.Option(
        False, "--download", help="Download with torchvision (needs a network)."
    ),
) -> None:
    """Decode the data set once into the cache, so every later command loads it in a second."""
    from ddsem.data import load_dataset

    d = load_dataset(None if download and not data else data, dataset, download=download)
    common.echo(
        f"{d.name}: {len(d.train_y)} train, {len(d.test_y)} test images; cache {d.cache_path}"
    )
