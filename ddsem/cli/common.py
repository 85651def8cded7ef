"""What every command face shares: global options, the workspace a job runs in, rich output,
the option help written once, and the offer to download CIFAR-10.

Imports here stay light (no torch): ``ddsem --help`` must answer at once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

from ddsem.errors import UserError

if TYPE_CHECKING:
    from ddsem.jobs import Workspace


@dataclass
class GlobalOptions:
    db: str | None = None
    device: str = "auto"
    seed: int | None = None  # None: not given (compute: 0; reading stored runs: not chosen)
    quiet: bool = False


OPTIONS = GlobalOptions()

# -- option help, written once -------------------------------------------------------------------

METHOD_HELP = "The newest distilled set of this method (bptt, dm, gm, tm, ...)."
SET_HELP = "The distilled set by name (instead of --method)."
DATA_HELP = (
    "CIFAR data: torchvision's cifar-10-batches-py folder, an image folder "
    "{train,test}/<class>/*.jpg, or its .tar.gz [default: $DDSEM_DATA]."
)
JSON_HELP = "Machine-readable output (stable keys) on stdout."
OUT_HELP = "Folder for the figures."


def method_option(help: str = METHOD_HELP) -> Any:
    return typer.Option(None, "--method", help=help)


def set_option(help: str = SET_HELP) -> Any:
    return typer.Option(None, "--set", help=help)


def data_option() -> Any:
    return typer.Option(None, "--data", help=DATA_HELP)


def json_option() -> Any:
    return typer.Option(False, "--json", help=JSON_HELP)


def seed() -> int:
    """The seed of new work: the global --seed, 0 when not given."""
    return 0 if OPTIONS.seed is None else OPTIONS.seed


# -- the workspace jobs run in -------------------------------------------------------------------


def workspace(
    create: bool = True, *, readonly: bool | None = None, quiet: bool = False
) -> Workspace:
    """The database, device and progress of the global options. ``create=False``: an existing
    database, read-only unless ``readonly=False``. ``quiet``: --json, whose stdout carries only
    the JSON (bars go to stderr either way, notes are dropped)."""
    from ddsem.jobs import SILENT, Workspace

    silent = OPTIONS.quiet or quiet or not _main_process()
    return Workspace.open(
        OPTIONS.db,
        create=create,
        readonly=readonly,
        device=OPTIONS.device,
        progress=SILENT if silent else RichProgress(),
    )


class RichProgress:
    """The jobs' progress protocol as rich bars on stderr and notes as lines on stdout."""

    @contextmanager
    def phase(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        with progress(total, description) as advance:
            yield advance

    def note(self, text: str) -> None:
        echo(text)


# -- output --------------------------------------------------------------------------------------


def _main_process() -> bool:
    """False in the workers of a job run as several processes but the first: they are quiet."""
    from ddsem.jobs.shard import is_main_process

    return is_main_process()


def echo(text: str = "") -> None:
    """Human output (suppressed by --quiet, and in all but the main process of several)."""
    if not OPTIONS.quiet and _main_process():
        from rich.console import Console

        Console(highlight=False, soft_wrap=True).print(text, markup=False)


# Tables written to a file or a pipe: rich would assume 80 columns and cut the p/q columns.
PIPE_WIDTH = 120


def echo_rich(renderable: Any) -> None:
    if not OPTIONS.quiet and _main_process():
        import os

        from rich.console import Console

        piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
        Console(highlight=False, width=PIPE_WIDTH if piped else None).print(renderable)


def print_json(data: Any) -> None:
    """Machine output for --json: always printed (by the main process of several), stable
    keys, UTF-8."""
    if not _main_process():
        return
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(v) for v in r])
    echo_rich(t)


@contextmanager
def progress(total: int, description: str) -> Iterator[Callable[..., None]]:
    """A rich progress bar with an ETA on stderr; yields ``advance(n)``. Silent under --quiet."""
    if OPTIONS.quiet or not _main_process():
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        transient=False,
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


# -- parsing -------------------------------------------------------------------------------------


def parse_int_list(text: str, what: str) -> tuple[int, ...]:
    """ "0,1,2" -> (0, 1, 2); refuses junk, empty items ("5,,6") and duplicates with one clear
    line."""
    shown = text if len(text) <= 80 else text[:77] + "..."
    items = [v.strip() for v in text.split(",")]
    if all(v == "" for v in items):
        raise UserError(f"{what} is empty")
    if any(v == "" for v in items):
        raise UserError(f"{what} has an empty item in {shown!r}: write e.g. 0,1,2")
    try:
        values = tuple(int(v) for v in items)
    except ValueError:
        raise UserError(f"{what} must be comma-separated integers, got {shown!r}") from None
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise UserError(f"{what} lists {', '.join(map(str, dupes))} more than once")
    return values


def split_names(text: str | None, what: str = "a name list") -> tuple[str, ...]:
    """ "bptt, dm" -> ("bptt", "dm"); None -> (); "" or " , " -> one line (nothing named)."""
    names = tuple(t.strip() for t in (text or "").split(",") if t.strip())
    if text is not None and not names:
        raise UserError(f"{what} is empty: give a name, or leave the option out")
    return names


# -- real data: where it is, or an offer to download it -------------------------------------------


def data_source(value: str | None, dataset: str = "cifar10") -> str:
    """The data path a command will read: ``--data``, $DDSEM_DATA or the usual places. When
    nothing is found and a person is at the terminal of a machine with a network, offer
    torchvision's download into the cache; otherwise one line naming both ways out."""
    from ddsem.jobs import data as data_job

    try:
        return str(data_job.locate(value))
    except data_job.DataNotFound as missing:
        hint = f"{missing}; or download it once with `ddsem data prepare --download`"
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise UserError(hint) from None
        if not data_job.download_reachable():
            raise UserError(f"{hint} (this machine has no network now)") from None
        name = data_job.DOWNLOAD_NAMES.get(dataset, dataset)
        if not typer.confirm(
            f"{name} was not found. Download it with torchvision into {data_job.download_root()}?",
            default=True,
        ):
            raise UserError(hint) from None
        return str(data_job.download(dataset))


# -- several processes on this machine (--processes N) --------------------------------------------

PROCESSES_HELP = (
    "Run as N worker processes on this machine, splitting the work units between them: the "
    "command starts itself N times as plain subprocesses with the environment `accelerate "
    "launch` sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; a gloo group, one "
    "GPU per process on CUDA) and waits for all. Several machines: `accelerate launch -m ddsem "
    "...` on each, on one shared --db."
)


def processes_option() -> Any:
    return typer.Option(1, "--processes", min=1, help=PROCESSES_HELP)


def launch(processes: int, command: str) -> None:
    """With ``--processes N`` > 1 (and not already one of N workers): run this command line as
    N worker processes and exit with their status. Only the main worker (rank 0) prints; an
    error of another one reaches the user as its last line and a non-zero exit. A worker that
    fails stops the others (each unit it finished stays stored; a re-run does the rest)."""
    from ddsem.jobs import shard

    if processes <= 1 or shard.world_size() > 1:
        return
    argv = sys.argv[1:]
    if command not in argv:
        raise UserError(f"--processes needs the command line `ddsem {command} ...` (sys.argv)")
    failure = shard.run_workers(argv, processes)
    if failure is not None:
        code, line = failure
        if line:  # else the main worker printed its own error line
            sys.stderr.write(f"error: {line}\n")
        raise typer.Exit(code)
    raise typer.Exit(0)
