"""``ddsem tui``: open the terminal UI on the database."""

from __future__ import annotations

from pathlib import Path

import typer

from ddsem.cli import common
from ddsem.errors import UserError


def tui(
    db: str = typer.Option(
        None, "--db", help="Database file or SQLAlchemy URL [default: the global --db]."
    ),
    ask: str = typer.Option(
        "", "--ask", help='Open with this question asked, e.g. --ask "yellow cars".'
    ),
) -> None:
    """Explore sets, distilled images, influence, attributes and questions with the keyboard."""
    from ddsem.db import open_db, resolve_url

    url = resolve_url(db or common.OPTIONS.db)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            raise UserError(
                f"no database at {path}: create one with `ddsem sets import FILE --method NAME` "
                "or `ddsem demo`, or point --db at one"
            )
    database = open_db(url, create=False)
    from ddsem.tui import run

    try:
        run(database, query=ask)
    finally:
        database.close()
