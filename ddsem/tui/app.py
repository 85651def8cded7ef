"""The Textual application: global keys, the open database, the screen stack.

Imported only by the ``tui`` command (and tests): ``import ddsem.tui`` alone loads no Textual.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.binding import Binding

from ddsem.db import Database
from ddsem.db.views import SetOverview
from ddsem.tui.screens import DataScreen, HelpScreen, QueryScreen, SetsScreen
from ddsem.tui.style import CSS


class DdsemApp(App):
    """Explore distilled sets, their influence on real test images and their semantics."""

    CSS = CSS
    TITLE = "ddsem"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("slash", "ask", "Ask", key_display="/"),
        Binding("r", "reload", "Refresh"),
    ]

    def __init__(self, db: Database, *, query: str = "") -> None:
        super().__init__()
        self.db = db
        self.initial_query = query
        self.sets: dict[int, SetOverview] = {}  # the latest sets overview, by id
        self.current_set_id: int | None = None  # the set a question is asked about
        self.sub_title = _database_label(db.url)

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


def _database_label(url: str) -> str:
    """The database as shown in the header: a SQLite file's name, or the URL without secrets."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).name
    return url.split("@")[-1]
