"""Widgets: a focusable image tile and a grid of tiles with keyboard movement.

They only display what the screens hand them (``TileData`` from ``ddsem.tui.tiles``);
layout arithmetic lives in ``ddsem.tui.viewmodel``.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.events import Resize
from textual.geometry import Size
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from ddsem.tui.render import Rows
from ddsem.tui.tiles import TileData
from ddsem.tui.viewmodel import move_index

FULL_TILE = (34, 18)  # 32 x 16 characters (a 32 x 32 image) inside a border
COMPACT_TILE = (18, 10)  # the image halved: 16 x 8 characters


class Picture(Widget):
    """Pre-rendered segment lines (a half-block image) painted line by line: Textual takes the
    segments as they are, which is many times cheaper than restyling a rich Text per cell."""

    DEFAULT_CSS = "Picture { width: auto; height: auto; }"

    def __init__(
        self, rows: Rows | None = None, *, id: str | None = None, classes: str = ""
    ) -> None:  # noqa: A002
        super().__init__(id=id, classes=classes)
        self.rows: Rows = rows or []
        self.strips = [Strip(line) for line in self.rows]

    def show(self, rows: Rows) -> None:
        self.rows = rows
        self.strips = [Strip(line) for line in rows]
        self.refresh(layout=True)

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return max((strip.cell_length for strip in self.strips), default=0)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.strips)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y < len(self.strips):
            return self.strips[y].crop_extend(0, width, self.rich_style)
        return Strip.blank(width, self.rich_style)

    def text(self) -> str:
        """The characters drawn (for tests and screen readers of the source)."""
        return "\n".join(strip.text for strip in self.strips)


class ImageTile(Picture, can_focus=True):
    """A drawn image in a border whose title and subtitle carry its class and value."""

    BINDINGS = [
        Binding("left", "move('left')", "Left", show=False),
        Binding("right", "move('right')", "Right", show=False),
        Binding("up", "move('up')", "Up", show=False),
        Binding("down", "move('down')", "Down", show=False),
        Binding("enter", "choose", "Open", show=False),
    ]

    def __init__(self, data: TileData, position: int, *, classes: str = "") -> None:
        super().__init__(data.picture, classes=classes)
        self.data = data
        self.position = position
        self.border_title = data.title
        self.border_subtitle = data.subtitle

    def action_move(self, direction: str) -> None:
        self.post_message(TileGrid.Move(self.position, direction))

    def action_choose(self) -> None:
        self.post_message(TileGrid.Chosen(self.data.key, self.parent.id if self.parent else None))

    def on_click(self) -> None:
        self.focus()
        self.action_choose()


class TileGrid(VerticalScroll):
    """Tiles in as many columns as fit; arrows move the focus, Enter chooses a tile."""

    class Move(Message):
        def __init__(self, position: int, direction: str) -> None:
            super().__init__()
            self.position = position
            self.direction = direction

    class Chosen(Message):
        """A tile was opened (Enter or click): its TileData.key and the grid's id."""

        def __init__(self, key: int, grid_id: str | None) -> None:
            super().__init__()
            self.key = key
            self.grid_id = grid_id

    def __init__(self, *, id: str | None = None, classes: str = "") -> None:  # noqa: A002
        super().__init__(id=id, classes=classes)
        self.compact = False
        self.can_focus = False

    @property
    def tiles(self) -> list[ImageTile]:
        return list(self.query(ImageTile))

    @property
    def tile_width(self) -> int:
        return (COMPACT_TILE if self.compact else FULL_TILE)[0]

    @property
    def columns(self) -> int:
        usable = self.scrollable_content_region.width or self.size.width
        return max(1, usable // self.tile_width)

    async def show(self, tiles: list[TileData], *, compact: bool, focus_key: int | None) -> None:
        """Replace the tiles; focus the one with ``focus_key`` (or the first) if asked to."""
        self.compact = compact
        await self.remove_children()
        size = "compact" if compact else "full"
        await self.mount_all(ImageTile(t, k, classes=size) for k, t in enumerate(tiles))
        self._layout_columns()
        if focus_key is not None and tiles:
            position = next((k for k, t in enumerate(tiles) if t.key == focus_key), 0)
            self.tiles[position].focus()

    def focused_key(self) -> int | None:
        focused = self.screen.focused
        return (
            focused.data.key if isinstance(focused, ImageTile) and focused.parent is self else None
        )

    def _layout_columns(self) -> None:
        self.styles.grid_size_columns = self.columns

    def on_resize(self, _event: Resize) -> None:
        self._layout_columns()

    def on_tile_grid_move(self, message: TileGrid.Move) -> None:
        message.stop()
        tiles = self.tiles
        target = move_index(message.position, message.direction, len(tiles), self.columns)
        if tiles:
            tiles[target].focus()
            tiles[target].scroll_visible()
