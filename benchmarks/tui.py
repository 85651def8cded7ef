"""Terminal UI speed: the first screen in a real pseudo-terminal, and painting image tiles.

1. ``ddsem --db X tui`` started in a pseudo-terminal (120 x 40) as a user would: seconds from
   the process start to the sets table being drawn (the budget is 1.5 s), and whether torch
   was imported (it must not be).
2. Side by side in one app: a page of 30 half-block tiles painted from pre-built segment lines
   (what ``ddsem.tui.widgets.Picture`` does) against the same pictures as rich ``Text`` in
   ``Static`` widgets (Textual restyles every cell), and opening the first page of a set of
   ``--images`` distilled images against a set of one page (30 images): paging keeps it flat.
3. What a question costs the question view's worker at the scale of the whole test split (100
   distilled images x 10,000 test images): ranking alone against ranking with the answer judged
   against chance (AP, permutation p from the (T, P) null, BH q over the 100 images), for a
   question over one class (T 1,000) and over all classes (T 10,000), each with a planted answer
   so the null is drawn to its deepest.

    .venv/bin/python benchmarks/tui.py                 # about a minute on 2 CPU cores
    .venv/bin/python benchmarks/tui.py --images 200 --repeats 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pty
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def build_database(path: Path, images: int) -> None:
    import tui_fixture

    from ddsem.db import open_db
    from ddsem.db.sets import add_distilled_set

    tui_fixture.build(path)
    db = open_db(path)
    rng = np.random.default_rng(0)
    for name, count in (("page", 30), ("big", images)):  # one page's worth, and many pages
        pixels = rng.normal(0, 1, size=(count, 3, 32, 32)).astype(np.float32)
        add_distilled_set(db, name, "dm", pixels, np.arange(count) % 10)
    db.close()


def first_screen_seconds(db_path: Path, frame: str, data: str) -> tuple[float, float, float, bool]:
    """Start ``ddsem tui`` in a pseudo-terminal: (seconds until ``frame`` is drawn, until
    ``data`` is drawn, CPU seconds of the whole run, whether torch was imported). Quit is sent
    as soon as the data shows, so the CPU time is close to what the first screen costs: the
    wall time of an idle machine."""
    probe = (
        "import atexit, runpy, sys, time\n"
        "flag = sys.argv[1]\n"
        "atexit.register(lambda: open(flag, 'w').write(\n"
        "    f\"{'torch' in sys.modules} {time.process_time()}\"))\n"
        "sys.argv = ['ddsem', '--db', sys.argv[2], 'tui']\n"
        "runpy.run_module('ddsem', run_name='__main__')\n"
    )
    flag = db_path.with_suffix(".torch")
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    subprocess.run(["stty", "cols", "120", "rows", "40"], stdin=slave, check=True)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", probe, str(flag), str(db_path)],
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    frame_at = data_at = float("nan")
    while time.perf_counter() - start < 30:
        ready, _, _ = select.select([master], [], [], 0.01)
        if ready:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
            if frame_at != frame_at and frame.encode() in seen:
                frame_at = time.perf_counter() - start
            if data.encode() in seen:
                data_at = time.perf_counter() - start
                break
    os.write(master, b"q")
    deadline = time.perf_counter() + 10
    while proc.poll() is None and time.perf_counter() < deadline:
        select.select([master], [], [], 0.05)
        with contextlib.suppress(OSError):
            os.read(master, 65536)
    proc.kill()
    proc.wait()
    os.close(master)
    torch_text, cpu_text = flag.read_text().split() if flag.exists() else ("?", "nan")
    return frame_at, data_at, float(cpu_text), torch_text == "True"


async def paint_seconds(rows_per_tile: list, as_text: bool, repeats: int) -> float:
    """Median seconds to mount and paint 30 tiles (segment lines, or rich Text in Static)."""
    from rich.segment import Segment
    from rich.text import Text
    from textual.app import App, ComposeResult
    from textual.containers import Grid
    from textual.widgets import Static

    from ddsem.tui.widgets import Picture

    def as_rich_text(rows: list[list[Segment]]) -> Text:
        text = Text(no_wrap=True, end="")
        for k, line in enumerate(rows):
            if k:
                text.append("\n")
            for seg in line:
                text.append(seg.text, seg.style)
        return text

    class Bench(App):
        CSS = "Grid { grid-size: 3; grid-rows: 18; grid-columns: 34; } Grid > * { border: round white; }"

        def compose(self) -> ComposeResult:
            yield Grid(id="grid")

    times = []
    app = Bench()
    async with app.run_test(size=(120, 40)) as pilot:
        grid = app.query_one("#grid")
        for _ in range(repeats):
            await grid.remove_children()
            await pilot.pause()
            start = time.perf_counter()
            if as_text:
                await grid.mount_all(Static(as_rich_text(r)) for r in rows_per_tile)
            else:
                await grid.mount_all(Picture(r) for r in rows_per_tile)
            await pilot.pause()
            app.screen._compositor.render_update(full=True)  # paint every visible tile
            await pilot.pause()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


async def open_first_page_seconds(db_path: Path, row: int, repeats: int) -> float:
    """Median seconds from Enter on set ``row`` to its first page of tiles drawn."""
    from test_tui import settle

    from ddsem.db import open_db
    from ddsem.tui.app import DdsemApp

    db = open_db(db_path, create=False)
    times = []
    app = DdsemApp(db)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for _ in range(repeats):
            for _ in range(row):
                await pilot.press("down")
            start = time.perf_counter()
            await pilot.press("enter")
            await settle(pilot)
            times.append(time.perf_counter() - start)
            await pilot.press("escape")
            await settle(pilot)
            for _ in range(row):
                await pilot.press("up")
    db.close()
    return statistics.median(times)


def question_seconds(total: int, positives: int, repeats: int) -> tuple[float, float]:
    """Median seconds of (ranking alone, ranking and judging) one question's answer over 100
    distilled images, ``positives`` of the ``total`` test images answering it."""
    from ddsem.jobs.query import score_question
    from ddsem.jobs.semantic_inputs import RankingInputs
    from ddsem.semantics import rank_for_query

    rng = np.random.default_rng(2)
    influence = rng.normal(size=(100, total)).astype(np.float32)
    answers = np.zeros(total, bool)
    answers[rng.choice(total, positives, replace=False)] = True
    influence[0] += 1.5 * answers  # image #0 drives the answer: its p sits at the floor
    members = np.ones(total, bool)
    inputs = RankingInputs(
        set_id=1, set_name="bench", method="dm", context="distilled", scope="seed:0", seeds=[0],
        influence=influence, test_indices=np.arange(total), test_classes=np.zeros(total, int),
        image_ids=np.arange(total), attributes=[], labels=np.zeros((total, 0), bool),
        classes=["c"], distilled_labels=np.zeros(100, int), dataset_id=1, skipped_unannotated=0,
    )  # fmt: skip
    rank, judged = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        rank_for_query(influence, members, answers, top=100, images_per_result=6)
        rank.append(time.perf_counter() - start)
        start = time.perf_counter()
        rank_for_query(influence, members, answers, top=100, images_per_result=6)
        score_question(inputs, members, answers)
        judged.append(time.perf_counter() - start)
    return statistics.median(rank), statistics.median(judged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images of the large set")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "bench.db"
        build_database(db_path, args.images)
        load = os.getloadavg()[0]
        print(f"load average at start: {load:.1f} on {os.cpu_count()} CPUs")

        runs = [first_screen_seconds(db_path, "Refresh", "big") for _ in range(args.repeats)]
        frame, data, cpu = ([r[k] for r in runs] for k in range(3))

        def med(values: list[float]) -> str:
            return (
                f"{statistics.median(values):.2f} s (runs {', '.join(f'{v:.2f}' for v in values)})"
            )

        print(f"`ddsem tui` in a pseudo-terminal (budget 1.5 s): first screen drawn {med(frame)}")
        print(f"  sets listed (database layer loaded and read) {med(data)}")
        print(f"  CPU from start to quit {med(cpu)}; torch imported: {any(r[3] for r in runs)}")

        from ddsem.tui.render import halfblock_rows

        rng = np.random.default_rng(1)
        tiles = [
            halfblock_rows(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(30)
        ]
        lines = asyncio.run(paint_seconds(tiles, as_text=False, repeats=args.repeats))
        text = asyncio.run(paint_seconds(tiles, as_text=True, repeats=args.repeats))
        print(
            f"paint 30 tiles (32x32 noise images): segment lines {lines:.3f} s, rich Text in "
            f"Static {text:.3f} s: {text / lines:.1f}x faster"
        )

        small = asyncio.run(open_first_page_seconds(db_path, 2, args.repeats))
        large = asyncio.run(open_first_page_seconds(db_path, 3, args.repeats))
        print(
            f"open a set's first page of 30 tiles: 30-image set {small:.3f} s, {args.images}-image "
            f"set {large:.3f} s (ratio {large / small:.2f})"
        )

    for total, positives in ((1000, 50), (10_000, 500)):
        rank, judged = question_seconds(total, positives, args.repeats)
        print(
            f"a question over {total:,} test images ({positives} positive), 100 distilled images: "
            f"ranked {rank:.3f} s, ranked and judged against chance {judged:.3f} s (a worker "
            "thread: the interface stays responsive)"
        )


if __name__ == "__main__":
    main()
