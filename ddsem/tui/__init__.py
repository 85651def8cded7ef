"""``ddsem tui``: a Textual terminal UI over the database (sets, images, influence, attributes).

This package's ``__init__`` stays import-light (no Textual, no torch): the app lives in
``ddsem.tui.app`` and is imported by ``run`` only when the command starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ddsem.db import Database


def run(db: Database, *, query: str = "") -> None:
    """Start the terminal UI on an open database (blocks until the user quits)."""
    from ddsem.tui.app import DdsemApp

    DdsemApp(db, query=query).run()
