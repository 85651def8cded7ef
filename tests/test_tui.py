"""The terminal UI: renderer and view-model units, database views, Pilot journeys, snapshots.

References: pixel colours read back from the rendered text; scikit-learn's
``precision_recall_curve`` and ``average_precision_score``; AP values the fixture stored from
scikit-learn; top-k order recomputed from the fixture's influence matrix.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tui_fixture
from rich.color import Color
from sklearn.metrics import average_precision_score, precision_recall_curve

from ddsem.db import open_db, views
from ddsem.jobs import views as job_views
from ddsem.tui import viewmodel as vm
from ddsem.tui.render import UPPER_HALF, downsample, render_halfblocks

SIZE = (120, 40)
ROOT = Path(__file__).resolve().parents[1]


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The fixture database, built once; tests that write get their own copy."""
    path = tmp_path_factory.mktemp("tui") / "tui.db"
    facts = tui_fixture.build(path)
    return path, facts


@pytest.fixture
def db_path(built, tmp_path):
    path = tmp_path / "tui.db"
    shutil.copy(built[0], path)
    return path


@pytest.fixture
def facts(built):
    return built[1]


@pytest.fixture
def db(db_path):
    database = open_db(db_path, create=False)
    yield database
    database.close()


def make_app(db):
    from ddsem.tui.app import DdsemApp

    return DdsemApp(db)


async def settle(pilot) -> None:
    """Wait until no worker is pending or running (a worker may start the next one; an
    exclusive worker may cancel an older one, so cancelled workers are simply done)."""
    import asyncio
    import time

    from textual.worker import WorkerState

    def busy() -> bool:
        return any(w.state in (WorkerState.PENDING, WorkerState.RUNNING) for w in pilot.app.workers)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        await pilot.pause()
        if not busy():
            await pilot.pause()  # let the messages a finished worker posted be handled
            if not busy():
                return
        await asyncio.sleep(0.01)
    raise AssertionError("workers never settled")


def cells(table) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(r)] for r in range(table.row_count)]


def screen_text(app) -> str:
    """Every character on the screen, as drawn."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


def row_styles(table) -> list[set[str]]:
    """The styles of each row's cells (e.g. {"dim"} for a row drawn weaker)."""
    return [
        {str(c.style) for c in table.get_row_at(r) if str(c.style)} for r in range(table.row_count)
    ]


def closed_form_chance(total: int, positives: int) -> float:
    """The expected AP of a random ranking, issue 14's closed form written out here:
    (1/T) [(P-1)/(T-1) (T - H_T) + H_T]."""
    harmonic = sum(1 / i for i in range(1, total + 1))
    return ((positives - 1) / (total - 1) * (total - harmonic) + harmonic) / total


def enumerated_chance(total: int, positives: int) -> float:
    """The same by averaging the AP of every placement of the positives among the ranks."""
    from itertools import combinations

    return float(
        np.mean([
            np.mean([(k + 1) / (rank + 1) for k, rank in enumerate(ranks)])
            for ranks in combinations(range(total), positives)
        ])
    )  # fmt: skip


# -- renderer ------------------------------------------------------------------------------------


def test_halfblocks_put_top_pixel_in_foreground_and_bottom_in_background():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(5, 3, 3), dtype=np.uint8)  # odd height: last row alone
    from rich.console import Console

    console = Console()
    text = render_halfblocks(img)
    assert text.plain == "\n".join([UPPER_HALF * 3] * 3)
    lines = text.split("\n")
    for line_no, line in enumerate(lines):
        for col in range(3):
            style = line.get_style_at_offset(console, col)
            top = img[2 * line_no, col]
            assert style.color == Color.from_rgb(*top.tolist())
            if 2 * line_no + 1 < 5:
                assert style.bgcolor == Color.from_rgb(*img[2 * line_no + 1, col].tolist())
            else:
                assert style.bgcolor is None


def test_halfblocks_draw_a_cifar_image_at_native_size():
    img = tui_fixture.real_pixels(3)
    text = render_halfblocks(img)
    assert len(text.plain.split("\n")) == 16
    assert all(len(line) == 32 for line in text.plain.split("\n"))


def test_halfblocks_refuse_a_float_image():
    with pytest.raises(ValueError, match="uint8"):
        render_halfblocks(np.zeros((4, 4, 3), dtype=np.float32))


def test_downsample_averages_blocks():
    img = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    small = downsample(img, 2)
    assert small.shape == (2, 2, 3)
    expected = img.astype(float).reshape(2, 2, 2, 2, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(small, np.floor(expected + 0.5).astype(np.uint8))


# -- view model ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_recall_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=200), 1)  # rounding makes ties, which share a threshold
    labels = rng.random(200) < 0.2
    curve = job_views.precision_recall(scores, labels)
    precision, recall, _ = precision_recall_curve(labels, scores)
    precision, recall = precision[::-1], recall[::-1]  # from (recall 0, precision 1) on
    rises = np.r_[True, np.diff(recall) > 0]  # the thresholds where a positive is found
    np.testing.assert_allclose(curve.recall, recall[rises])
    np.testing.assert_allclose(curve.precision, precision[rises])
    assert curve.average_precision == pytest.approx(average_precision_score(labels, scores))
    xs, ys = curve.steps()  # the drawn step function encloses exactly the AP
    area = sum((xs[k + 1] - xs[k]) * ys[k + 1] for k in range(len(xs) - 1))
    assert area == pytest.approx(curve.average_precision)


def test_precision_recall_without_positives_is_none():
    assert job_views.precision_recall(np.arange(5.0), np.zeros(5, bool)) is None


def test_paging_clamps_and_labels():
    paging = vm.Paging(0, 65, 30)
    assert paging.pages == 3 and paging.label() == "1-30 of 65 \u00b7 page 1/3"
    last = paging.turn(5)
    assert last.page == 2 and last.offset == 60 and last.label() == "61-65 of 65 \u00b7 page 3/3"
    assert paging.turn(-1) == paging
    assert last.with_total(20).page == 0  # the list shrank under us
    assert vm.Paging(0, 0, 30).label() == "none"


def test_grid_moves_stop_at_edges():
    # 7 tiles in rows of 3: 0 1 2 / 3 4 5 / 6
    assert vm.move_index(4, "up", 7, 3) == 1
    assert vm.move_index(4, "down", 7, 3) == 4  # nothing below 4
    assert vm.move_index(3, "down", 7, 3) == 6
    assert vm.move_index(2, "right", 7, 3) == 3  # reading order continues on the next row
    assert vm.move_index(0, "left", 7, 3) == 0
    assert vm.move_index(1, "up", 7, 3) == 1


def test_scopes_filters_and_cycling():
    assert vm.available_scopes(["seed:1"], [0, 1]) == ["mean", "seed:0", "seed:1"]
    assert vm.available_scopes([], [3]) == ["seed:3"]
    assert vm.available_filters([-1, 0, 1, 2], 1, asked=None) == [-1, 1, 0, 2]
    assert vm.available_filters([], 4, asked=7) == [-1, 4, 7]
    assert vm.cycle(["a", "b"], "b") == "a"
    assert vm.cycle(["a", "b"], "z") == "a"
    assert vm.scope_arguments("seed:2") == {"seed": 2, "mean_over_seeds": False, "estimator": "loo"}
    assert vm.scope_arguments("mean") == {"seed": None, "mean_over_seeds": True, "estimator": "loo"}
    # an approximate estimator's scopes (issue 20): after exact LOO's, each with its own mean
    assert vm.scope_arguments("tracin/seed:1") == {
        "seed": 1, "mean_over_seeds": False, "estimator": "tracin",
    }  # fmt: skip
    assert vm.scope_seed("tracin/seed:1") == 1 and vm.scope_estimator("tracin/mean") == "tracin"
    assert vm.available_scopes(["seed:0"], [0], [("if", 0), ("if", 1), ("tracin", 0)]) == [
        "seed:0", "if/mean", "if/seed:0", "if/seed:1", "tracin/seed:0",
    ]  # fmt: skip


def test_empty_state_messages_name_the_next_command():
    bare = views.SetOverview(1, "bptt", "bptt", "cifar10", 10, 100)
    assert vm.no_scores_message(bare, 5) == (
        "no influence run yet: run `ddsem influence --method bptt`"
    )
    named = views.SetOverview(2, "mine", "dm", "cifar10", 10, 100)
    assert "`ddsem influence --set mine`" in vm.no_scores_message(named, 5)
    run = views.SetOverview(1, "bptt", "bptt", "cifar10", 10, 100, seeds=(0,))
    assert "`ddsem annotate`" in vm.no_scores_message(run, 0)
    annotated = views.SetOverview(1, "bptt", "bptt", "cifar10", 10, 100, (0,), annotated_images=5)
    assert "`ddsem attributes extract`" in vm.no_scores_message(annotated, 0)
    assert vm.no_scores_message(annotated, 3) == (
        "no attribute scores yet: run `ddsem rank --method bptt`"
    )


def test_set_row_summarises_what_exists():
    o = views.SetOverview(
        1, "bptt", "bptt", "cifar10", 10, 100, seeds=(0, 1), real_context_seeds=(0,),
        running_runs=1, accuracy=0.4567, annotated_images=300, score_scopes=("mean",),
        score_count=1234,
    )  # fmt: skip
    assert vm.set_row(o) == (
        "bptt", "bptt", "10", "100", "45.7%", "seeds 0,1 \u00b7 real 0 \u00b7 1 running",
        "300 images", "mean (1,234)",
    )  # fmt: skip


def test_chance_ap_is_the_mean_ap_of_every_random_ranking():
    """The curve's baseline (and the answer's "chance AP") against enumerating every ranking,
    and the closed form: for 3 positives among 10 it is 0.450, not the positive rate 0.300."""
    assert enumerated_chance(10, 3) == pytest.approx(closed_form_chance(10, 3))
    assert enumerated_chance(7, 1) == pytest.approx(closed_form_chance(7, 1))
    for total, positives in [(10, 3), (7, 1), (12, 5)]:
        labels = np.zeros(total, bool)
        labels[:positives] = True
        curve = job_views.precision_recall(-np.arange(total, dtype=float), labels)
        assert curve.chance_ap == pytest.approx(enumerated_chance(total, positives))
    assert f"{enumerated_chance(10, 3):.3f}" == "0.450"


def test_p_and_q_are_written_in_five_characters():
    assert vm.format_number(0.70999) == "0.710"
    assert vm.format_number(2.4e-4) == "2e-4"
    assert vm.format_number(None) == vm.format_number(float("nan")) == "-"
    assert vm.format_p(0.0082, 10_000) == "0.008"
    # at the floor of its draws only a bound is known: no null draw reached the AP
    assert vm.format_p(1 / 20_001, 20_000) == "<5e-5"
    assert vm.format_p(1 / 1001, 1000) == "<1e-3"
    assert vm.format_p(2 / 1001, 1000) == "0.002"
    assert vm.format_p(None, None) == "-"


def _score(q_value, **kw):
    fields = dict(
        attribute_id=1, attribute="yellow", kind="color", scope="seed:0", context="distilled",
        class_filter=-1, ap=0.649, lift=1.76, positives=34, positive_rate=0.34,
        chance_ap=0.368, p_value=1e-4, q_value=q_value, draws=20_000,
    )  # fmt: skip
    fields.update(kw)
    return views.ScoreView(**fields)


def test_score_rows_mark_significant_answers_and_dim_the_rest():
    significant = vm.score_row(0, _score(0.044))
    assert [str(c) for c in significant] == [
        "1", "yellow", "0.649", "0.368", "1e-4", "0.044", "*", "34",
    ]  # fmt: skip
    assert {str(c.style) for c in significant} == {"bold", ""}
    assert str(significant[6].style) == "bold"  # the marker
    weak = vm.score_row(1, _score(0.05))  # q < alpha is strict
    assert str(weak[6]) == "" and {str(c.style) for c in weak} == {"dim"}
    old = vm.score_row(2, _score(None, chance_ap=None, p_value=None, draws=None))
    assert [str(c) for c in old][3:7] == ["-", "-", "-", ""]
    assert {str(c.style) for c in old} == {""}  # unknown: neither marked nor dimmed
    assert _score(None).significant is None and _score(0.01).significant is True
    long = vm.score_row(0, _score(0.5, attribute="long attribute name", positives=12345))
    widths = [w for _, w in vm.SCORE_COLUMNS]  # drawn without cell padding: one blank each
    assert all(len(str(c)) < w for c, w in zip(long[:-1], widths, strict=False))
    assert str(long[1]) == "long attrib\u2026"


def test_help_lists_every_binding_of_every_screen():
    from rich.console import Console

    from ddsem.tui.app import DdsemApp
    from ddsem.tui.screens import DetailScreen, ImagesScreen, QueryScreen

    classes = (DdsemApp, ImagesScreen, DetailScreen, QueryScreen)
    table = vm.help_table([(c.__name__, vm.binding_pairs(c.BINDINGS)) for c in classes])
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    for cls in classes:
        for binding in cls.BINDINGS:
            assert f"{binding.key_display or binding.key}" in text
            assert (binding.tooltip or binding.description) in text


# -- database views ------------------------------------------------------------------------------


def test_sets_overview_reports_what_exists(db):
    by_name = {o.name: o for o in views.sets_overview(db)}
    bptt, raw = by_name["bptt"], by_name["dm-raw"]
    assert (bptt.method, bptt.ipc, bptt.num_images, bptt.seeds) == ("bptt", 1, 10, (0,))
    assert bptt.accuracy == pytest.approx(0.3125)
    assert bptt.annotated_images == 100
    assert bptt.score_scopes == ("seed:0",)
    assert bptt.score_count == 440  # 10 images x 4 attributes x (all + 10 classes) with positives
    assert (raw.seeds, raw.accuracy, raw.score_count, raw.running_runs) == ((), None, 0, 0)


def test_distilled_images_are_paged_in_index_order(db):
    bptt = next(o for o in views.sets_overview(db) if o.name == "bptt")
    page = views.distilled_images(db, bptt.id, offset=3, limit=4)
    assert page.total == 10
    assert [i.index for i in page.items] == [3, 4, 5, 6]
    assert [i.class_name for i in page.items] == ["cat", "deer", "dog", "frog"]
    from ddsem.db.codec import png_to_array

    assert png_to_array(page.items[0].png).shape == (32, 32, 3)


def test_top_influenced_follow_the_matrix(db, facts):
    bptt = next(o for o in views.sets_overview(db) if o.name == "bptt")
    run = views.complete_runs(db, bptt.id)[0]
    page = views.top_influenced(db, run.id, 1, offset=2, limit=3)
    expected = np.argsort(-facts["matrix"][1], kind="stable")[2:5]
    assert page.total == tui_fixture.TOP_K
    assert [i.test_index for i in page.items] == expected.tolist()
    assert [i.value for i in page.items] == pytest.approx(facts["matrix"][1][expected].tolist())
    assert [i.label for i in page.items] == facts["test_labels"][expected].tolist()
    from ddsem.db.codec import png_to_array

    np.testing.assert_array_equal(
        png_to_array(page.items[0].png), tui_fixture.real_pixels(int(expected[0]))
    )


def test_attribute_scores_ranked_by_ap(db, facts):
    bptt = next(o for o in views.sets_overview(db) if o.name == "bptt")
    scores = views.attribute_scores(db, bptt.id, 1, "seed:0", class_filter=1)
    aps = [s.ap for s in scores]
    assert aps == sorted(aps, reverse=True)
    for s in scores:
        assert s.ap == pytest.approx(facts["expected_ap"][(1, s.attribute, 1)])
    options = views.score_options(db, bptt.id, 1)
    assert options.scopes == ["seed:0"] and options.class_filters == [-1, *range(10)]


def test_attribute_scores_carry_chance_p_and_q(db, facts):
    """The stored chance AP, p- and q-value of each score, and q < SignificanceConfig.alpha."""
    from ddsem.config import SignificanceConfig

    bptt = next(o for o in views.sets_overview(db) if o.name == "bptt")
    for class_filter in (-1, 1):
        for s in views.attribute_scores(db, bptt.id, 1, "seed:0", class_filter=class_filter):
            stored = facts["expected"][(1, s.attribute, class_filter)]
            assert (s.chance_ap, s.p_value, s.q_value, s.draws) == pytest.approx(stored[1:])
            assert s.chance_ap == pytest.approx(
                closed_form_chance(round(s.positives / s.positive_rate), s.positives)
            )
            assert s.significant == (stored.q_value < SignificanceConfig.alpha)
            assert s.lift == pytest.approx(s.ap / s.chance_ap)


def test_pr_curve_of_the_detail_view_matches_the_stored_ap(db, facts):
    """The curve drawn for (image, attribute, class filter) integrates to scikit-learn's AP."""
    inputs = job_views.ranking_inputs(db, set_name="bptt", seed=0)
    for index, name, class_filter in [(1, "yellow", 1), (1, "yellow", -1), (3, "blue sky", -1)]:
        curve = job_views.attribute_curve(
            inputs, index, [facts["attribute_ids"][name]], class_filter
        )
        assert curve.average_precision == pytest.approx(
            facts["expected_ap"][(index, name, class_filter)]
        )


def test_images_by_id(db):
    from sqlmodel import select

    from ddsem.db.tables import Image

    with db.session() as s:
        ids = s.exec(select(Image.id).order_by(Image.id).limit(2)).all()
    found = views.images_by_id(db, [*ids, 10**9])
    assert sorted(found) == sorted(ids)


# -- import hygiene ------------------------------------------------------------------------------


def _python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_tui_loads_no_torch_and_textual_only_when_the_app_starts(built):
    """A fresh interpreter: importing the package and the CLI loads neither Textual nor torch;
    the app module loads no SQLAlchemy (the database opens in a worker behind the first screen);
    running the app through every screen loads Textual but still no torch."""
    out = _python(f"""
        import asyncio, sys
        import ddsem.tui, ddsem.cli
        heavy = ("torch", "textual", "transformers", "faiss")
        print(sorted(m for m in heavy if m in sys.modules))
        import ddsem.tui.app  # the first screen is drawn before the database layer loads
        print("sqlmodel" in sys.modules, "sqlalchemy" in sys.modules)
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from test_tui import settle
        from ddsem.db import open_db
        from ddsem.tui.app import DdsemApp

        async def main():
            app = DdsemApp(open_db({str(built[0])!r}, create=False))
            async with app.run_test(size=(120, 40)) as pilot:
                await settle(pilot)
                await pilot.press("enter"); await settle(pilot)
                await pilot.press("right", "enter"); await settle(pilot)
                await pilot.press("slash", *"yellow cars", "enter"); await settle(pilot)
                print(type(app.screen).__name__, app.screen.query_one("#answers").row_count)
        asyncio.run(main())
        print(sorted(m for m in heavy if m in sys.modules))
    """)
    assert out.splitlines() == ["[]", "False False", "QueryScreen 10", "['textual']"]


# -- journeys ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_journey_open_a_set_and_an_image_then_go_back(db, facts):
    from ddsem.tui.screens import DetailScreen, ImagesScreen, SetsScreen

    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#sets")
        assert [row[:5] for row in cells(table)] == [
            ["bptt", "bptt", "1", "10", "31.2%"],
            ["dm-raw", "dm", "1", "3", "\u2014"],
        ]
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ImagesScreen)
        tiles = app.screen.query_one("#images").tiles
        assert [t.border_title for t in tiles][:3] == ["#0 airplane", "#1 automobile", "#2 bird"]
        assert len(tiles) == 10
        await pilot.press("right", "down")  # #0 -> #1 -> one row down
        columns = app.screen.query_one("#images").columns
        assert app.screen.query_one("#images").focused_key() == 1 + columns
        await pilot.press("up", "enter")
        await settle(pilot)
        assert isinstance(app.screen, DetailScreen) and app.screen.index == 1
        scores = cells(app.screen.query_one("#scores"))
        assert [r[1] for r in scores][0] == "yellow"
        assert float(scores[0][2]) == pytest.approx(
            facts["expected_ap"][(1, "yellow", -1)], abs=5e-4
        )
        assert float(scores[0][3]) == pytest.approx(closed_form_chance(100, 34), abs=5e-4)
        influenced = app.screen.query_one("#influenced").tiles
        top = np.argsort(-facts["matrix"][1], kind="stable")[: len(influenced)]
        assert [t.data.key for t in influenced] == top.tolist()
        assert "AP 0.649, chance 0.368" in text_of(app, "#curve-title")
        await pilot.press("f")  # all classes -> automobile only
        await settle(pilot)
        assert "automobile only" in text_of(app, "#scores-title")
        ap = facts["expected_ap"][(1, "yellow", 1)]
        assert f"AP {ap:.3f}" in text_of(app, "#curve-title")
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, ImagesScreen)
        assert app.screen.query_one("#images").focused_key() == 1  # back where we were
        await pilot.press("escape")
        assert isinstance(app.screen, SetsScreen)
        await pilot.press("escape")  # the first screen stays
        assert isinstance(app.screen, SetsScreen)


@pytest.mark.anyio
async def test_journey_ask_yellow_cars_open_the_answer_and_go_back(db, facts):
    from ddsem.tui.screens import DetailScreen, QueryScreen, SetsScreen

    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        await settle(pilot)
        assert isinstance(app.screen, QueryScreen)
        await pilot.press(*"yellow cars", "enter")
        await settle(pilot)
        reference = job_views.ask(db, "yellow cars", set_name="bptt", top=10)  # `ddsem query`
        rows = cells(app.screen.query_one("#answers"))
        assert [r[1] for r in rows] == [f"#{r.distilled_index}" for r in reference.results]
        assert rows[0][1] == "#1" and rows[0][2] == "automobile"
        assert 'attribute "yellow", class automobile' in text_of(app, "#understood")
        evidence = app.screen.query_one("#evidence").tiles
        assert [t.data.key for t in evidence] == [
            h.test_index for h in reference.results[0].top_images
        ]
        await pilot.press("enter")  # the answers have the focus: open the top image
        await settle(pilot)
        assert isinstance(app.screen, DetailScreen)
        assert (app.screen.index, app.screen.class_filter, app.screen.scope) == (1, 1, "seed:0")
        assert app.screen.query_one("#scores").highlighted_key() == str(
            facts["attribute_ids"]["yellow"]
        )
        ap = facts["expected_ap"][(1, "yellow", 1)]
        assert f"of yellow\nAP {ap:.3f}" in text_of(app, "#curve-title")
        await pilot.press("escape")
        assert isinstance(app.screen, QueryScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, SetsScreen)


@pytest.mark.anyio
async def test_a_significant_answer_is_marked_and_the_others_are_dim(db):
    """ "yellow" over all 100 test images: #1 beats chance (q < 0.05 over the 10 images), the
    others do not; the verdict, the columns and the styles say so, as `ddsem query` does."""
    from ddsem.tui.screens import DetailScreen

    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"yellow", "enter")
        await settle(pilot)
        reference = job_views.ask(db, "yellow", set_name="bptt", top=10)
        table = app.screen.query_one("#answers")
        rows, styles = cells(table), row_styles(table)
        header = [str(c.label) for c in table.columns.values()]
        assert header == ["#", "image", "class", "AP", "lift", "p", "q", "sig"]
        assert reference.significant_count == 1 and reference.results[0].distilled_index == 1
        assert rows[0][1] == "#1" and rows[0][7] == "*" and "bold" in styles[0]
        best = reference.results[0]
        assert rows[0][5:7] == [
            vm.format_p(best.p_value, reference.draws),
            vm.format_number(best.q_value),
        ]
        assert float(rows[0][4][:-1]) == pytest.approx(
            best.ap / closed_form_chance(100, 34), abs=0.01
        )
        assert all(r[7] == "" for r in rows[1:]) and all(st == {"dim"} for st in styles[1:])
        assert text_of(app, "#verdict") == reference.verdict.replace("; best: ", "\nbest: ")
        assert text_of(app, "#verdict").startswith("1 distilled image predicts yellow")
        summary = text_of(app, "#understood")
        assert f"chance AP {closed_form_chance(100, 34):.3f}" in summary
        assert "random ranking AP" not in summary
        assert not app.screen.query_one("#verdict").has_class("none")
        await pilot.press("enter")  # the question's attribute is stored: its own scores row
        await settle(pilot)
        assert isinstance(app.screen, DetailScreen)
        assert "q 0.044 *" in text_of(app, "#curve-title")


@pytest.mark.anyio
async def test_a_question_no_image_answers_better_than_chance_says_so(db):
    """ "yellow cars": 3 yellow automobiles of 10 cannot beat chance among 10 images."""
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"yellow cars", "enter")
        await settle(pilot)
        table = app.screen.query_one("#answers")
        assert all(r[7] == "" for r in cells(table))
        assert all(st == {"dim"} for st in row_styles(table))
        verdict = text_of(app, "#verdict")
        assert verdict.startswith(
            "no distilled image predicts yellow among automobile better than chance (q < 0.05)"
        )
        assert "\nbest: #1, AP 1.000, chance 0.450" in verdict
        assert app.screen.query_one("#verdict").has_class("none")  # drawn as a warning
        assert "chance AP 0.450" in text_of(app, "#understood")  # not the positive rate 0.300


@pytest.mark.anyio
async def test_the_detail_view_marks_significant_scores_with_the_stored_p_and_q(db, facts):
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter", "right", "enter")  # image #1
        await settle(pilot)
        table = app.screen.query_one("#scores")
        header = [str(c.label) for c in table.columns.values()]
        assert header == ["#", "attribute", "AP", "chance", "p", "q", "*", "pos."]
        assert "* q < 0.05" in text_of(app, "#scores-title")
        for row, style in zip(cells(table), row_styles(table), strict=True):
            stored = facts["expected"][(1, row[1], -1)]
            assert row[3:7] == [
                f"{stored.chance_ap:.3f}", vm.format_p(stored.p_value, stored.draws),
                vm.format_number(stored.q_value), "*" if stored.q_value < 0.05 else "",
            ]  # fmt: skip
            assert ("bold" in style) == (stored.q_value < 0.05)
            assert (style == {"dim"}) == (stored.q_value >= 0.05)
        assert cells(table)[0][1] == "yellow" and cells(table)[0][6] == "*"
        assert sum(r[6] == "*" for r in cells(table)) == 1
        assert text_of(app, "#curve-title").endswith("34 of 100 positive \u00b7 q 0.044 *")
        await pilot.press("f")  # automobile only: nothing beats chance among 10 test images
        await settle(pilot)
        assert all(r[6] == "" for r in cells(table))


@pytest.mark.anyio
async def test_scores_stored_before_significance_show_dashes(db, facts):
    """Rows of an older `ddsem rank` (no chance, p, q): dashes, no marker, no dimming, and
    the curve still draws its chance line from the curve's own counts."""
    from sqlmodel import update

    from ddsem.db.tables import AttributeScore

    with db.session() as s:
        s.exec(
            update(AttributeScore).values(chance_ap=None, p_value=None, q_value=None, draws=None)
        )
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter", "right", "enter")
        await settle(pilot)
        table = app.screen.query_one("#scores")
        rows = cells(table)
        assert len(rows) == 4 and all(r[3:7] == ["-", "-", "-", ""] for r in rows)
        assert all(st == set() for st in row_styles(table))
        assert float(rows[0][2]) == pytest.approx(facts["expected_ap"][(1, "yellow", -1)], abs=5e-4)
        title = text_of(app, "#curve-title")
        assert "chance 0.368" in title and title.endswith("34 of 100 positive")


@pytest.mark.anyio
async def test_a_mean_over_seeds_shows_the_sd_and_significance_in_every_seed(db, facts):
    """A second seed's run: the question is answered over the seeds' mean, with each image's
    AP sd over the seeds and whether it is significant in every seed (as `ddsem query`)."""
    from ddsem.db.codec import state_to_blob, to_blob
    from ddsem.db.tables import InfluenceRow, InfluenceRun

    rng = np.random.default_rng(1)
    with db.session() as s:
        first = s.get(InfluenceRun, facts["run_id"])
        run = InfluenceRun(
            set_id=first.set_id, seed=1, status="complete", config_json="{}",
            config_hash="fixture", test_indices=first.test_indices, num_models=11,
            init_state=state_to_blob({}), full_accuracy=0.3,
        )  # fmt: skip
        s.add(run)
        s.flush()
        noisy = facts["matrix"] + rng.normal(0, 0.005, facts["matrix"].shape).astype(np.float32)
        for i, values in enumerate(noisy):
            s.add(InfluenceRow(run_id=run.id, distilled_index=i, values=to_blob(values)))
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"yellow", "enter")
        await settle(pilot)
        reference = job_views.ask(db, "yellow", set_name="bptt", top=10)
        assert reference.scope == "mean"
        table = app.screen.query_one("#answers")
        header = [str(c.label) for c in table.columns.values()]
        assert header == ["#", "image", "class", "AP", "sd", "p", "q", "sig", "all"]
        rows = cells(table)
        for row, result in zip(rows, reference.results, strict=True):
            assert row[4] == f"{result.ap_sd:.3f}"
            assert row[8] == ("*" if result.significant_in_every_seed else "")
        assert rows[0][1] == "#1" and rows[0][7] == "*"
        assert "mean" in text_of(app, "#understood")


@pytest.mark.anyio
async def test_an_estimators_run_is_a_scope_of_its_own_in_the_detail_view(db, facts):
    """An approximate estimator's run (issue 20): the detail view's scope cycles through it
    after exact LOO's, and its top-k table and curve are the estimate's, named as such."""
    from ddsem.db.codec import from_blob, state_to_blob
    from ddsem.db.influence import store_estimated_run
    from ddsem.db.tables import InfluenceRun
    from ddsem.influence.loo import top_k

    with db.session() as s:
        first = s.get(InfluenceRun, facts["run_id"])
        set_id, tests = first.set_id, from_blob(first.test_indices)
    estimate = -facts["matrix"]  # reversed, so the top-k table differs from exact LOO's
    positions, values = top_k(estimate, 5)
    store_estimated_run(
        db, set_id=set_id, seed=0, context="distilled", estimator="tracin", config={},
        config_hash="fixture", test_indices=tests, test_labels=np.zeros(len(tests), np.int64),
        trainings=1, init_state=state_to_blob({}), influence=estimate, top_positions=positions,
        top_values=values, full_accuracy=0.2, device="cpu", wall_seconds=1.0,
    )  # fmt: skip
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("right", "enter")  # image #1
        await settle(pilot)
        assert app.screen.scopes == ["seed:0", "tracin/seed:0"]
        assert "(seed 0;" in text_of(app, "#influenced-title")
        await pilot.press("s")
        await settle(pilot)
        assert app.screen.scope == "tracin/seed:0"
        assert "tracin seed 0" in text_of(app, "#influenced-title")
        influenced = app.screen.query_one("#influenced").tiles
        top = np.argsort(-estimate[1], kind="stable")[: len(influenced)]
        assert [t.data.key for t in influenced] == tests[top].tolist()  # test indices


@pytest.mark.anyio
async def test_a_question_before_ranking_gets_its_own_row_and_curve(db, facts):
    """Without stored scores (no `ddsem rank` yet) a two-attribute question still opens into a
    detail view whose curve is the question's: its AP is scikit-learn's on the fixture."""
    from sqlmodel import delete

    from ddsem.db.tables import AttributeScore
    from ddsem.tui.screens import DetailScreen

    with db.session() as s:
        s.exec(delete(AttributeScore))
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"yellow and red", "enter")
        await settle(pilot)
        first = cells(app.screen.query_one("#answers"))[0]
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, DetailScreen)
        index = app.screen.index
        assert first[1] == f"#{index}"
        rows = cells(app.screen.query_one("#scores"))
        reference = job_views.ask(db, "yellow and red", set_name="bptt", top=10)
        result = next(r for r in reference.results if r.distilled_index == index)
        assert rows == [[
            "Q", "yellow & red", first[3], f"{closed_form_chance(100, 6):.3f}",
            vm.format_p(result.p_value, reference.draws), first[6], first[7], "6",
        ]]  # fmt: skip
        assert text_of(app, "#scores-hint") == (
            "no attribute scores yet: run `ddsem rank --method bptt`"
        )
        positives = facts["attrs"]["yellow"] & facts["attrs"]["red"]
        ap = average_precision_score(positives, facts["matrix"][index])
        assert f"of yellow & red\nAP {ap:.3f}" in text_of(app, "#curve-title")
        # in another class filter the question's AP, p and q do not hold: no row of its own
        await pilot.press("f")
        await settle(pilot)
        assert app.screen.class_filter != -1 and cells(app.screen.query_one("#scores")) == []
        await pilot.press("f")  # back to the question's own view
        await settle(pilot)
        assert app.screen.class_filter == -1
        assert cells(app.screen.query_one("#scores"))[0][:2] == ["Q", "yellow & red"]


@pytest.mark.anyio
async def test_a_question_the_vocabulary_cannot_answer_shows_the_parser_error(db):
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"purple elephants", "enter")
        await settle(pilot)
        hint = text_of(app, "#query-hint")
        assert "no known attribute" in hint or "no attribute" in hint
        assert app.screen.query_one("#answers").row_count == 0


@pytest.mark.anyio
async def test_empty_states_name_the_command_to_run(db):
    from ddsem.tui.screens import DetailScreen

    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("down", "enter")  # dm-raw: no influence run
        await settle(pilot)
        assert text_of(app, "#images-hint") == (
            "no influence run yet: run `ddsem influence --set dm-raw`"
        )
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, DetailScreen)
        message = "no influence run yet: run `ddsem influence --set dm-raw`"
        assert text_of(app, "#influenced-hint") == message
        assert text_of(app, "#scores-hint") == message
        assert text_of(app, "#curve-hint") == message


@pytest.mark.anyio
async def test_an_empty_database_says_how_to_add_a_set(tmp_path):
    database = open_db(tmp_path / "empty.db")
    app = make_app(database)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "`ddsem sets import FILE --method bptt`" in text_of(app, "#sets-hint")
        await pilot.press("slash")
        await settle(pilot)
        assert "no distilled sets yet" in text_of(app, "#query-hint")
    database.close()


@pytest.mark.anyio
async def test_long_sets_are_paged(tmp_path):
    from ddsem.db.sets import add_distilled_set

    database = open_db(tmp_path / "long.db")
    labels = np.arange(65) % 10
    add_distilled_set(database, "big", "dm", np.zeros((65, 3, 32, 32), np.float32), labels)
    app = make_app(database)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        grid = app.screen.query_one("#images")
        assert [t.data.key for t in grid.tiles] == list(range(30))
        await pilot.press("right_square_bracket", "right_square_bracket")
        await settle(pilot)
        assert [t.data.key for t in grid.tiles] == list(range(60, 65))
        assert "61-65 of 65" in text_of(app, "#images-pager")
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert grid.tiles[0].data.key == 30
        await pilot.press("z")  # compact tiles: same page, smaller pictures
        await settle(pilot)
        assert grid.compact and len(grid.tiles) == 30
        assert [len(line) for line in grid.tiles[0].text().split("\n")] == [16] * 8
    database.close()


@pytest.mark.anyio
async def test_ask_option_opens_with_the_question_answered(db):
    from ddsem.tui.app import DdsemApp
    from ddsem.tui.screens import QueryScreen

    app = DdsemApp(db, query="golden automobiles")  # synonyms of both words
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, QueryScreen)
        assert cells(app.screen.query_one("#answers"))[0][1] == "#1"


@pytest.mark.anyio
async def test_help_screen_opens_and_closes(db):
    from ddsem.tui.screens import HelpScreen, SetsScreen

    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "scores and test images of each" in screen_text(app)
        await pilot.press("escape")
        assert isinstance(app.screen, SetsScreen)


@pytest.mark.anyio
async def test_refresh_shows_rows_another_process_wrote_while_it_held_the_write_lock(db, db_path):
    """A writer holds SQLite's write lock (as `ddsem influence` does mid-transaction): reads
    still succeed (WAL), and after its commit the refresh key shows the new set."""
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sqlite3, sys
            con = sqlite3.connect({str(db_path)!r}, isolation_level=None)
            con.execute("BEGIN IMMEDIATE")
            con.execute(
                "INSERT INTO distilledset (name, method, dataset, ipc, num_images, "
                "image_shape_json, provenance_json, created_at) "
                "VALUES ('gm-new', 'gm', 'cifar10', 1, 0, '[3, 32, 32]', '{{}}', '2026-01-01')"
            )
            print("locked", flush=True)
            sys.stdin.readline()
            con.execute("COMMIT")
            print("committed", flush=True)
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert writer.stdout.readline().strip() == "locked"
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            table = app.screen.query_one("#sets")
            assert [r[0] for r in cells(table)] == ["bptt", "dm-raw"]
            assert not app.screen.query_one("#sets-hint").display  # no "database is locked"
            writer.stdin.write("\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "committed"
            await pilot.press("r")
            await settle(pilot)
            assert [r[0] for r in cells(table)] == ["bptt", "dm-raw", "gm-new"]
    finally:
        writer.kill()
        writer.wait()


# -- command line --------------------------------------------------------------------------------


def test_tui_refuses_a_missing_database_and_creates_none(cli, tmp_path):
    result = cli("tui", db=str(tmp_path / "nothing.db"))
    assert result.code == 2
    assert result.err.startswith("error: no database at")
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "nothing.db").exists()


def test_tui_refuses_a_file_that_is_not_a_database(cli, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    result = cli("tui", db=str(junk))
    assert result.code == 2 and "is not a SQLite database" in result.err
    assert junk.read_text() == "not a database"


def test_tui_refuses_a_sqlite_file_of_another_program_and_leaves_it_alone(cli, tmp_path):
    import sqlite3

    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE notes (body TEXT)")
    con.commit()
    con.close()
    before = other.read_bytes()
    result = cli("tui", db=str(other))
    assert result.code == 2 and "is not a ddsem database" in result.err
    assert other.read_bytes() == before


@pytest.mark.parametrize(
    "value", [None, "x.db", "~/y.db", "sqlite:////tmp/z.db", "postgresql://u@h/d"]
)
def test_tui_finds_the_database_as_the_database_layer_does(value, monkeypatch):
    from ddsem.cli.tui import database_target, sqlite_path
    from ddsem.db import resolve_url

    monkeypatch.delenv("DDSEM_DB", raising=False)
    url = resolve_url(value)
    path = sqlite_path(database_target(value))
    assert path == (Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None)


@pytest.mark.anyio
async def test_a_database_that_cannot_be_opened_ends_the_app_with_its_reason(tmp_path):
    import asyncio

    from ddsem.tui.app import DdsemApp

    app = DdsemApp(str(tmp_path / "missing" / "x.db"))
    async with app.run_test(size=SIZE):
        # no pilot.pause(): the app may already be exiting, and a pause would wait for screens
        # that never settle (a WaitForScreenTimeout under load)
        for _ in range(600):
            if app.open_error is not None:
                break
            await asyncio.sleep(0.05)
    assert app.return_code == 2
    assert "folder for the database does not exist" in app.open_error


def test_tui_accepts_its_own_db_option(cli, tmp_path):
    result = cli("tui", "--db", str(tmp_path / "other.db"))
    assert result.code == 2 and str(tmp_path / "other.db") in result.err


# -- snapshots (120 x 40) ------------------------------------------------------------------------


def _snapshot(snap_compare, db, keys: list[str]) -> bool:
    async def run_before(pilot) -> None:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        # DataTable sizes its header on an idle event after rows arrive: give idle time to
        # every widget, or the header can be drawn at its pre-data widths.
        for _ in range(3):
            await pilot.pause(0.1)

    return snap_compare(make_app(db), terminal_size=SIZE, run_before=run_before)


def test_snapshot_sets(snap_compare, db):
    assert _snapshot(snap_compare, db, [])


def test_snapshot_distilled_images(snap_compare, db):
    assert _snapshot(snap_compare, db, ["enter"])


def test_snapshot_detail(snap_compare, db):
    assert _snapshot(snap_compare, db, ["enter", "right", "enter"])


def test_snapshot_question(snap_compare, db):
    assert _snapshot(snap_compare, db, ["slash", *"yellow cars", "enter"])


def test_snapshot_question_with_a_significant_answer(snap_compare, db):
    assert _snapshot(snap_compare, db, ["slash", *"yellow", "enter"])


def test_snapshot_help(snap_compare, db):
    assert _snapshot(snap_compare, db, ["question_mark"])
