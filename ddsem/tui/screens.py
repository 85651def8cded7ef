"""The screens: sets -> distilled images -> one image's detail, the query screen and help.

Every database read runs in a worker (``asyncio.to_thread`` inside an exclusive Textual worker),
so the interface never waits on SQLite; a newer load of the same kind cancels the older one.
What to show is decided by ``ddsem.tui.viewmodel``; the screens only place it.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, Select, Static

from ddsem.errors import UserError
from ddsem.tui import tiles as tile_builders
from ddsem.tui import viewmodel as vm
from ddsem.tui.widgets import Picture, TileGrid


class Deferred:
    """A module whose functions are imported when called, not when named: the read layer and
    the database layer under it (SQLAlchemy and SQLModel, half a second to import) then load in
    a worker thread, behind the first screen."""

    def __init__(self, module: str) -> None:
        self.module = module

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(importlib.import_module(self.module), name)(*args, **kwargs)

        call.__name__ = name
        return call


if TYPE_CHECKING:
    from ddsem.jobs import views
    from ddsem.jobs.views import Answer, RankingInputs
    from ddsem.tui.app import DdsemApp
else:
    views = Deferred("ddsem.jobs.views")

R = TypeVar("R")

IMAGES_PER_PAGE = 30  # distilled images drawn at once (a set may hold thousands)
INFLUENCED_PER_PAGE = 12  # most influenced test images drawn at once
EVIDENCE_IMAGES = 6  # test images shown beside a query answer
ASKED = "asked"  # row key of a question's attribute(s) in the attribute table


def describe_error(error: Exception) -> str:
    """A worker's failure as one line: a UserError's own words, else its type and text."""
    return str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"


class RowTable(DataTable):
    """A table with a row cursor that keeps its place across refreshes."""

    def __init__(self, *, id: str, cell_padding: int = 1) -> None:  # noqa: A002
        super().__init__(id=id, cursor_type="row", zebra_stripes=True, cell_padding=cell_padding)

    def highlighted_key(self) -> str | None:
        if self.row_count == 0:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def move_to_key(self, key: str | None) -> None:
        if key is not None and key in self.rows:  # gone after a refresh: the cursor stays
            self.move_cursor(row=self.get_row_index(key))


class OpenTable(RowTable):
    """A row table whose Enter (shown in the footer) opens the highlighted row."""

    BINDINGS = [Binding("enter", "select_cursor", "Open")]


class DataScreen(Screen):
    """A screen that reads the database in workers and reloads on the refresh key."""

    @property
    def ddsem(self) -> DdsemApp:
        return self.app  # type: ignore[return-value]

    async def read(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``fn(db, *args)`` in a thread (the database opens on first use), awaited without
        blocking the interface."""
        db = await self.ddsem.database()
        return await asyncio.to_thread(fn, db, *args, **kwargs)

    async def compute(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Blocking work that needs no database (decoding, drawing, curves) in a thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def hint(self, selector: str, message: str) -> None:
        """Show (or, given "", hide) an empty-state or error line."""
        widget = self.query_one(selector, Static)
        widget.update(message)
        widget.display = bool(message)

    def reload(self) -> None:
        """Read everything shown again (the refresh key)."""

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()


# -- sets ----------------------------------------------------------------------------------------


class SetsScreen(DataScreen):
    """Every distilled set with what exists for it; Enter opens its images."""

    TITLE = "distilled sets"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="sets-hint", classes="hint")
        yield OpenTable(id="sets")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#sets", OpenTable).add_columns(*vm.SET_COLUMNS)
        self.hint("#sets-hint", "")
        self.reload()

    def reload(self) -> None:
        self.load()

    @work(exclusive=True, group="load")
    async def load(self) -> None:
        table = self.query_one("#sets", OpenTable)
        table.loading = table.row_count == 0
        try:
            overviews = await self.read(views.sets_overview)
        except Exception as e:  # shown, never fatal: the file may be mid-write
            self.hint("#sets-hint", f"could not read the sets: {describe_error(e)}")
            return
        finally:
            table.loading = False
        self.ddsem.sets = {o.id: o for o in overviews}
        keep = table.highlighted_key()
        table.clear()
        for overview in overviews:
            table.add_row(*vm.set_row(overview), key=str(overview.id))
        table.move_to_key(keep)
        self.hint("#sets-hint", "" if overviews else vm.no_sets_message())
        if overviews and self.ddsem.current_set_id is None:
            self.ddsem.current_set_id = overviews[0].id

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.ddsem.current_set_id = int(event.row_key.value)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        overview = self.ddsem.sets.get(int(event.row_key.value or -1))
        if overview is not None:
            self.app.push_screen(ImagesScreen(overview))


# -- one set's distilled images ------------------------------------------------------------------


class ImagesScreen(DataScreen):
    """Every distilled image of a set, drawn in half blocks, a page at a time."""

    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="back to the sets"),
        Binding("left_square_bracket", "page(-1)", "Prev page", key_display="[",
                tooltip="previous page of images"),
        Binding("right_square_bracket", "page(1)", "Next page", key_display="]",
                tooltip="next page of images"),
        Binding("z", "zoom", "Zoom", tooltip="full size (32 x 32) or compact (16 x 16) pictures"),
    ]  # fmt: skip

    def __init__(self, overview: views.SetOverview) -> None:
        super().__init__()
        self.overview = overview
        self.paging = vm.Paging(0, overview.num_images, IMAGES_PER_PAGE)
        self.compact = False
        self.focus_key: int | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="images-summary", classes="summary")
        yield Static(id="images-hint", classes="hint")
        yield TileGrid(id="images")
        yield Static(id="images-pager", classes="pager")
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"set {self.overview.name}"
        self.ddsem.current_set_id = self.overview.id
        self.show_summary()
        self.load()

    def show_summary(self) -> None:
        o = self.overview
        self.query_one("#images-summary", Static).update(
            f"{o.name}: {o.method}, {o.ipc} per class, {o.num_images} images, retrained accuracy "
            f"{vm.format_accuracy(o.accuracy)}, influence {vm.influence_summary(o)}"
        )
        self.hint("#images-hint", "" if o.seeds else vm.no_influence_message(o.name, o.method))

    def reload(self) -> None:
        self.load(refresh_overview=True)

    @work(exclusive=True, group="load")
    async def load(self, refresh_overview: bool = False) -> None:
        grid = self.query_one("#images", TileGrid)
        grid.loading = True
        try:
            if refresh_overview:
                fresh = await self.read(views.set_overview, self.overview.id)
                if fresh is None:
                    self.hint("#images-hint", f"set {self.overview.name!r} was deleted")
                    return
                self.overview = fresh
                self.show_summary()
            page = await self.read(
                views.distilled_images,
                self.overview.id,
                self.paging.offset,
                self.paging.per_page,
            )
            compact = self.compact
            tiles = await self.compute(
                lambda: [tile_builders.distilled_tile(i, compact) for i in page.items]
            )
        except Exception as e:
            self.hint("#images-hint", f"could not read the images: {describe_error(e)}")
            return
        finally:
            grid.loading = False
        fitted = self.paging.with_total(page.total)
        if fitted.page != self.paging.page:  # the set shrank under us: load the last page
            self.paging = fitted
            self.load()
            return
        self.paging = fitted
        focus = self.focus_key if self.focus_key is not None else (tiles[0].key if tiles else None)
        await grid.show(tiles, compact=compact, focus_key=focus)
        self.query_one("#images-pager", Static).update(
            f"images {self.paging.label()}   [ ] pages   z {'full size' if compact else 'compact'}"
        )
        if not tiles:
            self.hint("#images-hint", f"set {self.overview.name!r} has no images")

    def action_page(self, step: int) -> None:
        turned = self.paging.turn(step)
        if turned != self.paging:
            self.paging = turned
            self.focus_key = None
            self.load()

    def action_zoom(self) -> None:
        self.compact = not self.compact
        self.focus_key = self.query_one("#images", TileGrid).focused_key()
        self.load()

    def on_tile_grid_chosen(self, message: TileGrid.Chosen) -> None:
        self.focus_key = message.key
        self.app.push_screen(DetailScreen(self.overview, message.key))


# -- one distilled image -------------------------------------------------------------------------


class DetailScreen(DataScreen):
    """One distilled image: its most influenced test images, attributes by AP, and the PR curve
    of the highlighted attribute."""

    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="back to the images (or the answers)"),
        Binding("s", "cycle_scope", "Seed/mean",
                tooltip="scores and test images of each seed, or of the seeds' mean"),
        Binding("f", "cycle_filter", "Class filter",
                tooltip="rank among all test images, or only among one class"),
        Binding("left_square_bracket", "page(-1)", "Prev page", key_display="[",
                tooltip="previous page of most influenced test images"),
        Binding("right_square_bracket", "page(1)", "Next page", key_display="]",
                tooltip="next page of most influenced test images"),
        Binding("z", "zoom", "Zoom", tooltip="compact or full-size test images"),
    ]  # fmt: skip

    def __init__(
        self,
        overview: views.SetOverview,
        index: int,
        *,
        scope: str | None = None,
        class_filter: int | None = None,
        asked: vm.Asked | None = None,
    ) -> None:
        super().__init__()
        self.overview = overview
        self.index = index
        self.scope = scope
        self.class_filter = class_filter
        self.asked = asked  # a question's attribute(s): a row of its own unless already ranked
        self.image: views.ImageView | None = None
        self.classes_: list[str] = []
        self.runs: list = []  # exact LOO's complete runs
        self.estimates: list = []  # the approximate estimators' complete runs
        self.scopes: list[str] = []
        self.filters: list[int] = []
        self.scores: dict[str, views.ScoreView] = {}
        self.inputs: dict[str, RankingInputs] = {}  # influence + labels per scope, for curves
        self.paging = vm.Paging(0, 0, INFLUENCED_PER_PAGE)
        self.compact = True
        self.no_scores_hint = ""

    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        yield Header()
        with Horizontal(id="detail-top"):
            with Vertical(id="detail-image"):
                yield Picture(id="picture")
                yield Static(id="facts")
            with Vertical(id="detail-scores"):
                yield Static(id="scores-title", classes="title")
                yield Static(id="scores-hint", classes="hint")
                yield RowTable(id="scores", cell_padding=0)  # eight columns in 50 cells
            with Vertical(id="detail-curve"):
                yield Static(id="curve-title", classes="title three-lines")
                yield Static(id="curve-hint", classes="hint")
                yield PlotextPlot(id="curve")
        with Vertical(id="detail-bottom"):
            yield Static(id="influenced-title", classes="title")
            yield Static(id="influenced-hint", classes="hint")
            yield TileGrid(id="influenced")
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"set {self.overview.name} \u00b7 image #{self.index}"
        scores = self.query_one("#scores", RowTable)
        for label, width in vm.SCORE_COLUMNS:
            scores.add_column(label, width=width)
        for selector in ("#scores-hint", "#curve-hint", "#influenced-hint"):
            self.hint(selector, "")
        self.load()

    def reload(self) -> None:
        self.inputs.clear()
        self.load()

    # -- loading --

    @work(exclusive=True, group="load")
    async def load(self) -> None:
        o = self.overview
        try:
            fresh = await self.read(views.set_overview, o.id)
            self.overview = o = fresh or o
            self.image = await self.read(views.distilled_image, o.id, self.index)
            self.classes_ = await self.read(views.class_names, o.dataset)
            runs = await self.read(views.complete_runs, o.id, "distilled", None)
            self.runs = [r for r in runs if r.estimator == "loo"]
            self.estimates = [r for r in runs if r.estimator != "loo"]
            options = await self.read(views.score_options, o.id, self.index)
            attributes = await self.read(views.attribute_count)
        except Exception as e:
            self.hint(
                "#influenced-hint", f"could not read image #{self.index}: {describe_error(e)}"
            )
            return
        if self.image is None:
            self.hint("#influenced-hint", f"set {o.name!r} has no image #{self.index}")
            return
        self.show_image()
        self.scopes = vm.available_scopes(
            options.scopes,
            [r.seed for r in self.runs],
            [(r.estimator, r.seed) for r in self.estimates],
        )
        if self.scope not in self.scopes:  # prefer a scope with stored scores
            self.scope = (options.scopes or self.scopes or [None])[0]
        self.filters = vm.available_filters(
            options.class_filters, self.image.label, self.class_filter
        )
        if self.class_filter not in self.filters:
            self.class_filter = self.filters[0]
        self.no_scores_hint = (
            vm.no_scores_message(o, attributes) if not options.scopes else "no scores for this view"
        )
        self.load_influenced()
        self.load_scores()

    def show_image(self) -> None:
        assert self.image is not None
        picture = self.query_one("#picture", Picture)
        picture.show(tile_builders.picture(self.image.png, compact=False))
        picture.border_title = f"#{self.image.index} {self.image.class_name}"
        o = self.overview
        self.query_one("#facts", Static).update(
            f"set {o.name} ({o.method}, ipc {o.ipc})\n"
            f"retrained acc. {vm.format_accuracy(o.accuracy)}\n"
            f"influence: {vm.influence_summary(o)}"
        )

    def topk_run(self) -> Any:
        """The run whose top-k table is shown: the scope's estimator and seed, else (a mean) that
        estimator's first seed, else exact LOO's first seed."""
        seed, estimator = vm.scope_seed(self.scope), vm.scope_estimator(self.scope)
        runs = self.runs if estimator == "loo" else [
            r for r in self.estimates if r.estimator == estimator
        ]  # fmt: skip
        fallback = runs[0] if runs else (self.runs[0] if self.runs else None)
        return next((r for r in runs if r.seed == seed), fallback)

    @work(exclusive=True, group="influenced")
    async def load_influenced(self) -> None:
        title = self.query_one("#influenced-title", Static)
        grid = self.query_one("#influenced", TileGrid)
        run = self.topk_run()
        if run is None:
            title.update("most influenced test images")
            self.hint(
                "#influenced-hint",
                vm.no_influence_message(self.overview.name, self.overview.method),
            )
            await grid.show([], compact=self.compact, focus_key=None)
            return
        grid.loading = True
        compact = self.compact
        try:
            page = await self.read(
                views.top_influenced,
                run.id,
                self.index,
                self.paging.offset,
                self.paging.per_page,
            )
            tiles = await self.compute(
                lambda: [tile_builders.influenced_tile(i, compact) for i in page.items]
            )
        except Exception as e:
            self.hint("#influenced-hint", f"could not read the influence: {describe_error(e)}")
            return
        finally:
            grid.loading = False
        self.paging = self.paging.with_total(page.total)
        title.update(
            f"most influenced test images ({vm.run_label(run)}; value = loss increase without "
            f"this image{'' if run.estimator == 'loo' else ', estimated'}) "
            f"\u00b7 {self.paging.label()}"
        )
        self.hint(
            "#influenced-hint",
            "" if tiles else f"the run of seed {run.seed} stored no top-k rows for this image",
        )
        await grid.show(tiles, compact=compact, focus_key=None)

    @work(exclusive=True, group="scores")
    async def load_scores(self) -> None:
        table = self.query_one("#scores", RowTable)
        self.query_one("#scores-title", Static).update(
            vm.scores_title(self.scope, self.class_filter, self.classes_)
        )
        rows: list[views.ScoreView] = []
        if self.scope is not None:
            try:
                rows = await self.read(
                    views.attribute_scores, self.overview.id, self.index, self.scope,
                    self.class_filter,
                )  # fmt: skip
            except Exception as e:
                self.hint("#scores-hint", f"could not read the scores: {describe_error(e)}")
                return
        keep = table.highlighted_key()
        table.clear()
        self.scores = {str(score.attribute_id): score for score in rows}
        asked = self.asked if vm.asked_here(self.asked, self.scope, self.class_filter) else None
        ranked = asked is not None and vm.asked_key(asked) in self.scores
        if asked is not None and not ranked:
            table.add_row(*vm.asked_row(asked), key=ASKED)
        for rank, score in enumerate(rows):
            table.add_row(*vm.score_row(rank, score), key=str(score.attribute_id))
        self.hint("#scores-hint", "" if rows else self.no_scores_hint)
        if asked is not None and keep is None:  # first load: the question's row
            keep = vm.asked_key(asked) if ranked else ASKED
        table.move_to_key(keep)
        self.show_curve_for_row(table.highlighted_key())

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "scores":
            self.show_curve_for_row(event.row_key.value)

    def show_curve_for_row(self, key: str | None) -> None:
        score = self.scores.get(key) if key is not None else None
        if score is not None:
            self.load_curve((score.attribute_id,), score.attribute, vm.score_note(score))
        elif key == ASKED and vm.asked_here(self.asked, self.scope, self.class_filter):
            assert self.asked is not None
            self.load_curve(self.asked.attribute_ids, self.asked.label, vm.asked_note(self.asked))
        elif not self.scores:
            self.clear_curve(self.no_scores_hint)
        else:
            self.clear_curve("highlight an attribute to draw its precision-recall curve")

    @work(exclusive=True, group="curve")
    async def load_curve(self, attribute_ids: tuple[int, ...], label: str, note: str) -> None:
        """Draw the curve of ``attribute_ids``; ``note`` says whether that AP beats chance."""
        scope = self.scope
        if scope is None:
            self.clear_curve(vm.no_influence_message(self.overview.name, self.overview.method))
            return
        try:
            inputs = self.inputs.get(scope)
            if inputs is None:
                inputs = await self.read(
                    views.ranking_inputs, set_name=self.overview.name, **vm.scope_arguments(scope)
                )
                self.inputs[scope] = inputs
            curve = await self.compute(
                views.attribute_curve, inputs, self.index, attribute_ids, self.class_filter
            )
        except Exception as e:
            self.clear_curve(describe_error(e))
            return
        if curve is None:
            where = vm.filter_label(self.class_filter, self.classes_)
            self.clear_curve(f"no annotated test image has {label} ({where})")
            return
        self.draw_curve(curve, label, note)

    def clear_curve(self, message: str) -> None:
        plot = self.query_one("#curve")
        plot.plt.clear_data()
        plot.plt.title("")
        plot.refresh()
        self.query_one("#curve-title", Static).update("precision-recall\n\n")
        self.hint("#curve-hint", message)

    def draw_curve(self, curve: views.PrCurve, label: str, note: str) -> None:
        plot = self.query_one("#curve")
        plt = plot.plt
        plt.clear_data()
        xs, ys = curve.steps()
        plt.plot(xs, ys, marker="braille")
        plt.hline(curve.chance_ap, color="gray")  # the expected AP of a random ranking
        plt.xlim(0, 1)
        plt.ylim(0, 1.02)
        plt.xlabel("recall")
        plt.title("")
        plot.refresh()
        self.query_one("#curve-title", Static).update(vm.curve_title(curve, label, note))
        self.hint("#curve-hint", "")

    # -- actions --

    def action_cycle_scope(self) -> None:
        new = vm.cycle(self.scopes, self.scope)
        if new != self.scope:
            self.scope = new
            self.paging = vm.Paging(0, 0, INFLUENCED_PER_PAGE)
            self.load_influenced()
            self.load_scores()

    def action_cycle_filter(self) -> None:
        new = vm.cycle(self.filters, self.class_filter)
        if new != self.class_filter:
            self.class_filter = new
            self.load_scores()

    def action_page(self, step: int) -> None:
        turned = self.paging.turn(step)
        if turned != self.paging:
            self.paging = turned
            self.load_influenced()

    def action_zoom(self) -> None:
        self.compact = not self.compact
        self.load_influenced()


# -- questions -----------------------------------------------------------------------------------


class QueryScreen(DataScreen):
    """A question such as "yellow cars" answered with the set's distilled images ranked by AP
    (the parser and ranking of ``ddsem query``); Enter opens a ranked image."""

    BINDINGS = [Binding("escape", "back", "Back", tooltip="back to where the question was asked")]

    def __init__(self, set_id: int | None = None, text: str = "") -> None:
        super().__init__()
        self.set_id = set_id
        self.initial_text = text
        self.answer: Answer | None = None
        self.classes_: list[str] = []
        self.answer_set: views.SetOverview | None = None
        self.attribute_ids: tuple[int, ...] = ()
        self.answer_columns: tuple[tuple[str, int], ...] = ()

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="query-bar"):
            yield Input(value=self.initial_text, placeholder="ask, e.g. yellow cars", id="query")
            yield Select[int]([], prompt="set", allow_blank=True, id="query-set")
        yield Static(id="understood", classes="summary")
        yield Static(id="verdict", classes="verdict")
        yield Static(id="query-hint", classes="hint")
        with Horizontal(id="query-body"):
            yield OpenTable(id="answers")
            with Vertical(id="evidence-panel"):
                yield Static(id="evidence-title", classes="title")
                yield TileGrid(id="evidence")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "ask a question"
        self.set_columns(vm.ANSWER_COLUMNS)
        self.query_one("#verdict", Static).display = False
        self.hint(
            "#query-hint", "type a question and press Enter; Tab moves to the set and the answers"
        )
        self.query_one("#query", Input).focus()
        self.load_sets()

    def reload(self) -> None:
        self.load_sets()
        if self.answer is not None:
            self.ask(self.answer.parsed.text)

    @work(exclusive=True, group="sets")
    async def load_sets(self) -> None:
        try:
            overviews = await self.read(views.sets_overview)
        except Exception as e:
            self.hint("#query-hint", f"could not read the sets: {describe_error(e)}")
            return
        self.ddsem.sets = {o.id: o for o in overviews}
        select = self.query_one("#query-set", Select)
        select.set_options([(o.name, o.id) for o in overviews])
        wanted = self.set_id if self.set_id in self.ddsem.sets else None
        if wanted is None and overviews:
            wanted = overviews[0].id
        if wanted is not None:
            select.value = wanted
            self.set_id = wanted
            if self.initial_text and self.answer is None:  # `ddsem tui --ask "..."`
                self.ask(self.initial_text)
        elif not overviews:
            self.hint("#query-hint", vm.no_sets_message())

    def on_select_changed(self, event: Select.Changed) -> None:
        self.set_id = event.value if isinstance(event.value, int) else None

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.ask(event.value)

    @work(exclusive=True, group="ask")
    async def ask(self, text: str) -> None:
        overview = self.ddsem.sets.get(self.set_id) if self.set_id is not None else None
        table = self.query_one("#answers", OpenTable)
        if overview is None:
            self.hint(
                "#query-hint", vm.no_sets_message() if not self.ddsem.sets else "choose a set"
            )
            return
        table.loading = True
        try:
            answer = await self.read(
                views.ask, text, set_name=overview.name, top=overview.num_images,
                images=EVIDENCE_IMAGES,
            )  # fmt: skip
            ids = await self.read(views.attribute_ids, answer.parsed.attributes)
            self.classes_ = await self.read(views.class_names, overview.dataset)
        except Exception as e:
            self.answer = None
            table.clear()
            self.query_one("#understood", Static).update("")
            self.query_one("#verdict", Static).display = False
            self.hint("#query-hint", describe_error(e))
            await self.query_one("#evidence", TileGrid).show([], compact=True, focus_key=None)
            self.query_one("#evidence-title", Static).update("")
            return
        finally:
            table.loading = False
        self.answer, self.answer_set, self.attribute_ids = answer, overview, ids
        self.query_one("#understood", Static).update(vm.answer_summary(answer))
        verdict = self.query_one("#verdict", Static)
        verdict.update(vm.verdict(answer))
        verdict.set_class(answer.significant_count == 0, "none")  # a warning: nothing found
        verdict.display = True
        self.hint("#query-hint", "")
        table.clear()
        self.set_columns(vm.answer_columns(answer))
        for rank, result in enumerate(answer.results):
            table.add_row(*vm.answer_row(rank, result, answer), key=str(result.distilled_index))
        if answer.results:
            table.move_cursor(row=0)
            table.focus()  # Enter now opens the best image; "/" returns to the question
            self.show_evidence(answer.results[0].distilled_index)

    def set_columns(self, columns: tuple[tuple[str, int], ...]) -> None:
        """The answer table's columns (fixed widths: one seed, or several)."""
        if columns == self.answer_columns:
            return
        table = self.query_one("#answers", OpenTable)
        table.clear(columns=True)
        for label, width in columns:
            table.add_column(label, width=width)
        self.answer_columns = columns

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None and self.answer is not None:
            self.show_evidence(int(event.row_key.value))

    @work(exclusive=True, group="evidence")
    async def show_evidence(self, distilled_index: int) -> None:
        answer = self.answer
        if answer is None:
            return
        result = next(r for r in answer.results if r.distilled_index == distilled_index)
        try:
            images = await self.read(views.images_by_id, [h.image_id for h in result.top_images])
            tiles = await self.compute(tile_builders.evidence_tiles, result, images, self.classes_)
        except Exception as e:
            self.hint("#query-hint", f"could not read test images: {describe_error(e)}")
            return
        self.query_one("#evidence-title", Static).update(
            f"why #{distilled_index}: its most influenced test images with "
            f"{' & '.join(answer.parsed.attributes)}"
        )
        await self.query_one("#evidence", TileGrid).show(tiles, compact=True, focus_key=None)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if self.answer is None or self.answer_set is None or event.row_key.value is None:
            return
        index = int(event.row_key.value)
        answer = self.answer
        result = next(r for r in answer.results if r.distilled_index == index)
        self.app.push_screen(
            DetailScreen(
                self.answer_set,
                index,
                scope=answer.scope,
                class_filter=answer.parsed.class_index
                if answer.parsed.class_index is not None
                else -1,
                asked=vm.asked_from(answer, result, self.attribute_ids),
            )
        )

    def action_back(self) -> None:
        self.app.pop_screen()


# -- help ----------------------------------------------------------------------------------------


class HelpScreen(ModalScreen):
    """Every key of every screen, generated from their bindings (so it cannot drift)."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", key_display="?"),
    ]

    def compose(self) -> ComposeResult:
        from ddsem.tui.app import DdsemApp

        everywhere = ("everywhere", vm.binding_pairs(DdsemApp.BINDINGS))
        sets = ("sets", vm.SETS_KEYS)
        images = ("images", vm.binding_pairs(ImagesScreen.BINDINGS) + vm.GRID_KEYS)
        detail = ("one image", vm.binding_pairs(DetailScreen.BINDINGS) + vm.DETAIL_KEYS)
        question = ("question", vm.QUERY_KEYS + vm.binding_pairs(QueryScreen.BINDINGS))
        with VerticalScroll(id="help") as box:  # scrolls with up/down on short terminals
            box.border_title = "ddsem tui: keys"
            yield Static(vm.HELP_INTRO, id="help-intro")
            with Horizontal(id="help-columns"):
                yield Static(vm.help_table([everywhere, sets, question]), classes="help-column")
                yield Static(vm.help_table([images, detail]), classes="help-column")
        yield Footer()
