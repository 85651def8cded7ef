"""The jobs behind `ddsem rank`, `query`, `report` and the TUI's read layer, driven directly (no
argv) on the database of test_rank_cli's `world`: a planted signal (distilled image 3's
influence is high exactly on the yellow automobiles), one complete influence run."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
from test_rank_cli import (
    ATTRIBUTES,
    AUTOMOBILE,
    N_DISTILLED,
    T_TEST,
    add_run,
    planted_influence,
    sk_ap,
    stored_attribute_rows,
    stored_scores,
    world,  # noqa: F401  (the fixture)
)

from ddsem.db.admin import table_counts
from ddsem.errors import UserError
from ddsem.jobs import Recorder, Workspace
from ddsem.jobs import query as query_job
from ddsem.jobs import rank as rank_job
from ddsem.jobs import report as report_job
from ddsem.jobs import views as job_views
from ddsem.jobs.query import QueryRequest
from ddsem.jobs.rank import RankRequest
from ddsem.jobs.report import ReportRequest

QUERY_KEYS = [
    "query", "attribute", "attributes", "class", "class_index", "understood", "set", "method",
    "scope", "estimator", "positives", "test_images", "positive_rate", "distilled_images",
    "results",
]  # fmt: skip
RANK_KEYS = [
    "set", "method", "scope", "context", "estimator", "distilled_images", "test_images",
    "unannotated_test_images_skipped", "attributes", "class_filters", "stored",
    "undefined_no_positives", "seconds", "top",
]  # fmt: skip


@pytest.fixture
def ws(world):  # noqa: F811
    return Workspace(world["db"], device="cpu", progress=Recorder())


class InterruptAfter(Recorder):
    """Progress that raises KeyboardInterrupt (as Ctrl-C would) after ``steps`` advances."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.left = steps

    @contextmanager
    def phase(self, description, total):
        with super().phase(description, total) as advance:

            def interrupting(n=1):
                advance(n)
                self.left -= n
                if self.left <= 0:
                    raise KeyboardInterrupt

            yield interrupting


def score_table(db) -> list[tuple]:
    return sorted(
        (r.scope, r.distilled_index, r.attribute_id, r.class_filter, r.ap, r.lift)
        for r in stored_scores(db)
    )


# -- rank ----------------------------------------------------------------------------------------


def test_rank_stores_sklearn_average_precision(ws, world):  # noqa: F811
    result = rank_job.run(ws, RankRequest(method="bptt"))
    out = result.as_json()
    assert list(out) == RANK_KEYS
    assert (out["scope"], out["estimator"], out["distilled_images"]) == (
        "seed:0", "average_precision", N_DISTILLED
    )  # fmt: skip
    assert out["class_filters"][:2] == ["all", "airplane"] and len(out["class_filters"]) == 11
    rows = stored_scores(world["db"])
    assert len(rows) == result.stored == N_DISTILLED * (5 + 10 * 5 - 1)
    assert result.undefined == 1  # no red frog
    assert ws.progress.phases == [("ranking test images", 2 * N_DISTILLED, 2 * N_DISTILLED)]
    names = {a.id: a.name for a in stored_attribute_rows(world["db"])}
    classes, labels, influence = world["classes"], world["labels"], world["influence"]
    for row in rows[::97]:  # a few pairs against scikit-learn
        col = ATTRIBUTES.index(names[row.attribute_id])
        member = classes == row.class_filter if row.class_filter >= 0 else np.ones(T_TEST, bool)
        y = labels[member, col]
        assert row.ap == pytest.approx(sk_ap(y, influence[row.distilled_index, member]), abs=1e-9)
        assert row.lift == pytest.approx(row.ap / y.mean())
    best = result.top[0]
    assert (best.distilled_index, best.attribute, best.class_filter) == (3, "yellow", "automobile")
    assert out["top"][0]["ap"] == pytest.approx(1.0)
    assert len(result.top) == 10 and result.kinds == "over all classes and within each class"


def test_rank_again_replaces_and_does_not_duplicate(ws, world):  # noqa: F811
    rank_job.run(ws, RankRequest(method="bptt", within_class=True))
    assert {r.class_filter for r in stored_scores(world["db"])} == set(range(10))
    first = rank_job.run(ws, RankRequest(method="bptt"))
    table = score_table(world["db"])
    assert len(table) == first.stored
    assert rank_job.plan(ws, RankRequest(method="bptt")).replaces
    again = rank_job.run(ws, RankRequest())  # the only set
    assert again.stored == first.stored and score_table(world["db"]) == table


def test_an_interrupted_rank_leaves_the_stored_scores_and_reruns_to_the_same(world):  # noqa: F811
    db = world["db"]
    rank_job.run(Workspace(db), RankRequest(all_classes=True))
    before = score_table(db)
    with pytest.raises(KeyboardInterrupt):
        rank_job.run(Workspace(db, progress=InterruptAfter(5)), RankRequest())
    assert score_table(db) == before  # one transaction: nothing half-written
    done = rank_job.run(Workspace(db), RankRequest())
    assert len(score_table(db)) == done.stored == N_DISTILLED * (5 + 10 * 5 - 1)  # replaced


def test_rank_scopes_seed_and_mean(ws, world):  # noqa: F811
    influence2 = planted_influence(world["classes"], world["labels"], seed=1)
    add_run(world["db"], world["set_id"], influence2, np.arange(T_TEST), seed=1)
    mean = rank_job.run(ws, RankRequest(all_classes=True))
    assert mean.scope == "mean" and mean.seeds == [0, 1]
    seed1 = rank_job.run(ws, RankRequest(seed=1, all_classes=True))
    assert seed1.scope == "seed:1"
    avg = (world["influence"].astype(np.float64) + influence2) / 2
    yellow = next(a.id for a in stored_attribute_rows(world["db"]) if a.name == "yellow")
    row = next(
        r
        for r in stored_scores(world["db"])
        if r.scope == "mean" and r.distilled_index == 5 and r.attribute_id == yellow
    )
    assert row.ap == pytest.approx(sk_ap(world["labels"][:, 0], avg[5]), abs=1e-9)
    with pytest.raises(UserError, match="complete seeds: 0, 1"):
        rank_job.plan(ws, RankRequest(seed=7))


def test_plan_reads_only_and_refusals_leave_the_database(ws, world):  # noqa: F811
    db = world["db"]
    before = table_counts(db)
    p = rank_job.plan(ws, RankRequest())
    assert (p.steps, p.replaces, p.inputs.scope) == (2 * N_DISTILLED, False, "seed:0")
    with pytest.raises(UserError, match="no distilled set"):
        rank_job.run(ws, RankRequest(set_name="nope"))
    with pytest.raises(UserError, match="no known attribute"):
        query_job.run(ws, QueryRequest("purple skies"))
    assert table_counts(db) == before


# -- query ---------------------------------------------------------------------------------------


def test_query_answer_and_its_json_keys(ws, world):  # noqa: F811
    answer = query_job.run(ws, QueryRequest("yellow cars", method="bptt", top=3, images=2))
    out = answer.as_json()
    assert list(out) == QUERY_KEYS
    assert (out["attribute"], out["class"], out["positives"], out["test_images"]) == (
        "yellow", "automobile", 5, 20
    )  # fmt: skip
    first = answer.results[0]
    assert first.distilled_index == 3 and first.ap == pytest.approx(1.0)
    assert first.lift == pytest.approx(4.0) and len(first.top_images) == 2
    assert list(out["results"][0]) == [
        "rank", "distilled_index", "label", "class", "ap", "lift", "top_test_images"
    ]  # fmt: skip
    yellow_cars = (world["classes"] == AUTOMOBILE) & world["labels"][:, 0]
    assert {h.test_index for h in first.top_images} <= set(np.flatnonzero(yellow_cars).tolist())
    # the TUI's path is the same job
    assert job_views.ask(world["db"], "yellow cars", top=3, images=2).as_json() == out


def test_query_refuses_a_class_without_positives(ws):
    with pytest.raises(UserError, match="no frog test image has 'red'"):
        query_job.run(ws, QueryRequest("red frogs"))


# -- report --------------------------------------------------------------------------------------


def test_report_writes_its_files(ws, tmp_path):
    out_dir = tmp_path / "report"
    with pytest.raises(UserError, match="`ddsem rank --set bptt --seed 0` first"):
        report_job.run(ws, ReportRequest(str(out_dir)))
    assert not out_dir.exists()
    rank_job.run(ws, RankRequest())
    ws.progress = Recorder()
    result = report_job.run(ws, ReportRequest(str(out_dir), question="yellow cars", top=2))
    assert result.pr_curves == out_dir / "pr_yellow_automobile.png"
    assert (result.attributes, result.among) == ("yellow", "automobile")
    assert len(result.curves) == 2 and result.curves[0].startswith("distilled #3 (automobile)")
    assert len(result.grids) == N_DISTILLED
    assert all(p.exists() and p.read_bytes()[:4] == b"\x89PNG" for p in result.written[:-2])
    assert result.table_md.read_text().count("\n| ") == N_DISTILLED + 1
    assert "| 3 | automobile | yellow (1.00, 4.0x)" in result.table_md.read_text()
    assert result.table_csv.read_text().startswith("distilled_index,class,rank,attribute")
    assert result.as_json()["influence_grids"] == N_DISTILLED
    assert ws.progress.phases == [("drawing influence grids", N_DISTILLED, N_DISTILLED)]
    default = report_job.run(ws, ReportRequest(str(tmp_path / "auto")))
    assert default.pr_curves.name == "pr_yellow_automobile.png"  # the highest-lift pair
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="--out must be a folder"):
        report_job.plan(ws, ReportRequest(str(tmp_path / "file")))


# -- requests refused where they are built -------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: QueryRequest("yellow cars", top=0), "--top must be at least 1"),
        (lambda: QueryRequest("yellow cars", images=-1), "--images at least 0"),
        (lambda: ReportRequest("out", top=0), "--top and --attributes-per-image"),
        (lambda: ReportRequest("out", attributes_per_image=0), "--attributes-per-image"),
        (lambda: RankRequest(top=-1), "--top must be at least 0"),
        (lambda: RankRequest(within_class=True, all_classes=True), "--within-class and --all"),
        (lambda: RankRequest(seed=0, mean_over_seeds=True), "--seed S and --mean-over-seeds"),
        (lambda: QueryRequest("x", seed=0, mean_over_seeds=True), "--mean-over-seeds"),
        (lambda: ReportRequest("o", seed=0, mean_over_seeds=True), "--mean-over-seeds"),
    ],
)
def test_bad_requests_are_refused_at_construction(build, message):
    with pytest.raises(UserError, match=message):
        build()


def test_semantics_reads_no_database():
    code = "import sys, ddsem.semantics; print(any(m.startswith('ddsem.db') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
