"""``ddsem demo``: the whole product on real CIFAR-10 on a CPU, in minutes.

Every step is the command a user would run (``ddsem.cli.run`` with the same arguments, printed
before it runs); the demo only chooses small settings. Re-running on the same database reuses
what is done (the set, the influence run, the annotations) and finishes in seconds.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import typer

from ddsem.cli import common
from ddsem.errors import UserError


@dataclass(frozen=True)
class DemoSettings:
    """Small settings that keep the demo under 5 minutes on 2 CPU cores."""

    set_name: str = "demo-dm"
    ipc: int = 2  # 20 distilled images
    iterations: int = 200  # DM iterations (the paper's protocol: 20,000)
    width: int = 32  # ConvNet width for distilling and for the influence models (paper: 128)
    batch_real: int = 32  # DM real images per class per step (paper: 256); 64 gained nothing
    steps: int = 300  # the paper's 300 full-batch SGD steps for every LOO model
    test_limit: int = 500  # class-stratified test images (paper: all 10,000)
    questions: tuple[str, ...] = ("yellow cars", "blue sky planes", "green grass frogs")


SHRUNKEN = DemoSettings(
    set_name="demo-dm-small", iterations=20, width=8, batch_real=16, steps=30, test_limit=100
)


def demo(
    data: str = typer.Option(
        None,
        "--data",
        help="CIFAR-10 (folder or .tar.gz) [default: $DDSEM_DATA, then the usual places].",
    ),
    out: str = typer.Option("ddsem-demo", "--out", help="Folder for the figures and tables."),
    small: bool = typer.Option(
        False, "--small", help="A much smaller run (seconds; for tests and a first look)."
    ),
) -> None:
    """Distil CIFAR-10 with DM, compute exact LOO influence, annotate, rank and ask questions."""
    from ddsem.cli import run
    from ddsem.data import find_data

    settings = SHRUNKEN if small else DemoSettings()
    data_path = str(find_data(data))
    os.environ["DDSEM_DATA"] = data_path  # every step below finds the same data
    db_args = ["--db", common.OPTIONS.db] if common.OPTIONS.db else []
    global_args = [*db_args, "--device", common.OPTIONS.device, "--seed", "0"]
    if common.OPTIONS.quiet:
        global_args.append("--quiet")
    out_dir = Path(out).expanduser()
    started = time.perf_counter()

    def step(number: int, title: str, *args: str) -> None:
        common.echo(f"\n[{number}/7] {title}\n$ ddsem {' '.join(_quote(a) for a in args)}")
        code = run([*global_args, *args])
        if code != 0:
            raise UserError(f"demo step {number} ({title}) failed with exit code {code}")

    s = settings
    if _set_exists(s.set_name):
        common.echo(f"\n[1/7] distilled set {s.set_name!r} is already in the database: reused")
    else:
        step(
            1, f"distil CIFAR-10 with distribution matching ({s.ipc} images per class)",
            "distill", "--method", "dm", "--ipc", str(s.ipc), "--iterations", str(s.iterations),
            "--width", str(s.width), "--batch-real", str(s.batch_real), "--name", s.set_name,
        )  # fmt: skip
    step(
        2, "exact leave-one-out influence of every distilled image on real test images",
        "influence", "--set", s.set_name, "--width", str(s.width), "--steps", str(s.steps),
        "--test-limit", str(s.test_limit),
    )  # fmt: skip
    step(
        3, "annotate those test images with the offline colour annotator",
        "annotate", "--annotator", "color", "--limit", str(s.test_limit),
    )  # fmt: skip
    step(4, "extract the attribute vocabulary from the answers", "attributes", "extract")
    step(
        5,
        "rank: average precision of every distilled image x attribute",
        "rank",
        "--set",
        s.set_name,
    )
    for q in s.questions:
        step(6, f"ask: {q!r}", "query", q, "--set", s.set_name, "--top", "3", "--images", "3")
    step(
        7, "figures: PR curves, most influenced test images, Table 1",
        "report", "--set", s.set_name, "--out", str(out_dir), "--query", s.questions[0],
    )  # fmt: skip
    figures = sorted(p for p in out_dir.rglob("*") if p.suffix in (".png", ".md", ".csv"))
    common.echo(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    common.echo(f"{len(figures)} figures and tables in {out_dir}/, among them:")
    for p in [f for f in figures if f.parent == out_dir] + [
        f for f in figures if f.parent != out_dir
    ][:2]:
        common.echo(f"  {p}")
    db = f" --db {common.OPTIONS.db}" if common.OPTIONS.db else ""
    common.echo(
        "next:\n"
        f"  ddsem{db} tui                     # explore sets, images, influence and questions\n"
        f'  ddsem{db} query "red trucks" --set {s.set_name}\n'
        f"  ddsem{db} influence show --set {s.set_name} --image 0\n"
        f"  ddsem{db} influence check --set {s.set_name} --out {out_dir}"
    )


def _set_exists(name: str) -> bool:
    from ddsem.db.sets import list_sets

    return any(s.name == name for s in list_sets(common.open_database()))


def _quote(arg: str) -> str:
    return f'"{arg}"' if " " in arg else arg


__all__ = ["DemoSettings", "SHRUNKEN", "demo", "replace"]
