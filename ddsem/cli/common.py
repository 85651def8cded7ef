"""What every command shares: global options, the database, output, progress bars.

Imports here stay light (no torch): ``ddsem --help`` must answer at once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ddsem.errors import UserError

if TYPE_CHECKING:
    from ddsem.db import Database


@dataclass
class GlobalOptions:
    db: str | None = None
    device: str = "auto"
    seed: int = 0
    quiet: bool = False


OPTIONS = GlobalOptions()


def open_database(create: bool = True) -> Database:
    from ddsem.db import open_db

    return open_db(OPTIONS.db, create=create)


def device():
    from ddsem.runtime import resolve_device

    return resolve_device(OPTIONS.device)


def echo(text: str = "") -> None:
    """Human output (suppressed by --quiet)."""
    if not OPTIONS.quiet:
        from rich.console import Console

        Console(highlight=False, soft_wrap=True).print(text, markup=False)


def echo_rich(renderable: Any) -> None:
    if not OPTIONS.quiet:
        from rich.console import Console

        Console(highlight=False).print(renderable)


def print_json(data: Any) -> None:
    """Machine output for --json: always printed, stable keys, UTF-8."""
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
def progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar with an ETA; yields ``advance(n)``. Silent under --quiet."""
    if OPTIONS.quiet:
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


def parse_int_list(text: str, what: str) -> list[int]:
    """ "0,1,2" -> [0, 1, 2]; refuses junk and duplicates with one clear line."""
    try:
        values = [int(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise UserError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise UserError(f"{what} is empty")
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise UserError(f"{what} lists {', '.join(map(str, dupes))} more than once")
    return values


def default_set_name(db: Database, set_name: str | None, method: str | None) -> str | None:
    """The set to use: as named, else by method (``None``), else the only set in the database."""
    if set_name or method:
        return set_name
    from ddsem.db.sets import list_sets

    sets = list_sets(db)
    if len(sets) == 1:
        return sets[0].name
    if not sets:
        raise UserError(
            "no distilled set yet: `ddsem distill --method bptt` or `ddsem sets import FILE`"
        )
    names = ", ".join(f"{s.name} ({s.method})" for s in sets)
    raise UserError(f"several distilled sets: choose one with --method or --set ({names})")
