"""``ddsem tui``: a Textual terminal UI over the database (sets, images, influence, attributes).

This package's ``__init__`` stays import-light (no Textual, no torch, no SQLAlchemy): the app
lives in ``ddsem.tui.app`` and is imported by ``run`` only when the command starts.
"""

from __future__ import annotations

from ddsem.errors import UserError


def run(db: str, *, query: str = "") -> None:
    """Start the terminal UI on the database at ``db`` (a path or URL); blocks until the user
    quits. A database that cannot be opened raises UserError after the terminal is restored."""
    from ddsem.tui.app import DdsemApp

    app = DdsemApp(db, query=query)
    try:
        app.run()
    finally:
        if app.db is not None:
            app.db.close()
    if app.open_error:
        raise UserError(app.open_error)
