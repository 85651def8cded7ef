"""``ddsem tui``: open the terminal UI on the database."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ddsem.cli import common
from ddsem.errors import UserError


def tui(
    ask: str = typer.Option(
        "", "--ask", help='Open with this question asked, e.g. --ask "yellow cars".'
    ),
) -> None:
    """Explore sets, distilled images, influence, attributes and questions with the keyboard.

    The database is the global --db, given before or after tui."""
    from ddsem.tui import run

    target = database_target(common.OPTIONS.db)
    path = sqlite_path(target)
    if path is not None:
        _check_ddsem_file(path)
    run(target, query=ask)


def database_target(value: str | None) -> str:
    """The --db value, else $DDSEM_DB, else ./ddsem.db: what ``ddsem.db.resolve_url`` reads,
    found here without importing the database layer (the TUI loads it behind its first
    screen; a test holds the two in step)."""
    return value or os.environ.get("DDSEM_DB") or "ddsem.db"


def sqlite_path(target: str) -> Path | None:
    """The SQLite file a target names (None for another database URL)."""
    if target.startswith("sqlite:///"):
        return Path(target.removeprefix("sqlite:///"))
    if "://" in target:
        return None
    return Path(target).expanduser()


def _check_ddsem_file(path: Path) -> None:
    """Refuse, before anything is written, a path that is not a ddsem database: the TUI only
    reads, so it must neither create a file nor add tables to someone else's database."""
    import sqlite3

    if not path.exists():
        raise UserError(
            f"no database at {path}: create one with `ddsem sets import FILE --method NAME` "
            "or `ddsem distill`, or point --db at one"
        )
    if path.is_dir():
        raise UserError(f"database path is a folder: {path}")
    with open(path, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise UserError(f"{path} is not a SQLite database")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = con.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        raise UserError(f"cannot read {path}: {e}") from e
    if found is None:
        raise UserError(f"{path} is not a ddsem database (it has no ddsem tables)")
