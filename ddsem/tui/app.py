"""The Textual application: global keys, the database, the screen stack.

Imported only by the ``tui`` command (and tests): ``import ddsem.tui`` alone loads no Textual.
The database is opened (through ``ddsem.jobs.views``, the TUI's read layer, which imports the
database layer) in a worker thread on first use, so the first screen is drawn while SQLAlchemy
loads.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import App
from textual.binding import Binding

from ddsem.tui.screens import DataScreen, HelpScreen, QueryScreen, SetsScreen, describe_error
from ddsem.tui.style import CSS

if TYPE_CHECKING:
    from ddsem.jobs.views import Database, SetOverview


def _open(target: str) -> Database:
    """Open an existing database (imports the read layer and the database layer: runs in a
    worker thread)."""
    from ddsem.jobs import views

    return views.open_database(target)


class DdsemApp(App):
    """Explore distilled sets, their influence on real test images and their semantics."""

    CSS = CSS
    TITLE = "ddsem"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "Quit", tooltip="quit (ctrl+q while typing)"),
        Binding("question_mark,f1", "help", "Help", key_display="?", tooltip="this help (f1)"),
        Binding("slash", "ask", "Ask", key_display="/",
                tooltip='ask a question such as "yellow cars" about the current set'),
        Binding("r", "reload", "Refresh",
                tooltip="read the database again (another command may be writing it)"),
    ]  # fmt: skip

    def __init__(self, db: Database | str, *, query: str = "") -> None:
        """``db``: an open Database, or a path/URL opened on first use."""
        super().__init__()
        self.target = db
        self.db: Database | None = None if isinstance(db, str) else db
        self.open_error: str | None = None  # why the database could not be opened
        self._opening = asyncio.Lock()
        self.initial_query = query
        self.sets: dict[int, SetOverview] = {}  # the latest sets overview, by id
        self.current_set_id: int | None = None  # the set a question is asked about
        self.sub_title = _database_label(db if isinstance(db, str) else db.url)

    async def database(self) -> Database:
        """The open database; the first caller opens it in a thread. A database that cannot be
        opened ends the app with exit code 2 and the reason in ``open_error``."""
        async with self._opening:
            if self.db is None:
                try:
                    self.db = await asyncio.to_thread(_open, str(self.target))
                except Exception as e:
                    self.open_error = describe_error(e)
                    self.exit(return_code=2)
                    raise
        return self.db

    def on_mount(self) -> None:
        self.push_screen(SetsScreen())
        if self.initial_query:
            self.push_screen(QueryScreen(text=self.initial_query))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_ask(self) -> None:
        if isinstance(self.screen, QueryScreen):
            self.screen.query_one("#query").focus()
        elif not isinstance(self.screen, HelpScreen):
            self.push_screen(QueryScreen(self.current_set_id))

    def action_reload(self) -> None:
        if isinstance(self.screen, DataScreen):
            self.screen.reload()
            self.notify("reloaded from the database", timeout=2)


def _database_label(target: str) -> str:
    """The database as shown in the header: a SQLite file's name, or the URL without secrets."""
    if target.startswith("sqlite:///"):
        return Path(target.removeprefix("sqlite:///")).name
    if "://" in target:
        return target.split("@")[-1]
    return Path(target).name
