"""The jobs behind `ddsem rank`, `query`, `report` and the TUI's read layer, driven directly (no
argv) on the database of test_rank_cli's `world`: a planted signal (distilled image 3's
influence is high exactly on the yellow automobiles), one complete influence run."""

from __future__ import annotations

import math
import subprocess
import sys
from contextlib import contextmanager
from itertools import combinations

import numpy as np
import pytest
from scipy import stats
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
from ddsem.significance import chance_ap, permutation_p_values

QUERY_KEYS = [
    "query", "attribute", "attributes", "class", "class_index", "understood", "set", "method",
    "scope", "estimator", "positives", "test_images", "total", "positive_rate",
    "distilled_images", "chance_ap", "alpha", "draws", "significant_count", "verdict", "seeds",
    "seed_spearman", "results",
]  # fmt: skip
RANK_KEYS = [
    "set", "method", "scope", "context", "estimator", "distilled_images", "test_images",
    "unannotated_test_images_skipped", "attributes", "class_filters", "stored",
    "undefined_no_positives", "seconds", "top", "alpha", "min_draws", "max_draws", "significant",
    "family", "significance_seconds", "tied_influence_share", "seed_stability",
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
    pairs = ws.progress.phases[1][1]
    assert ws.progress.phases == [
        ("ranking test images", 2 * N_DISTILLED, 2 * N_DISTILLED),
        ("significance", pairs, pairs),
    ]
    # one null per distinct (test images, positives): over all classes and within each class
    assert pairs == len({(r.positives, r.class_filter == -1) for r in rows})
    names = {a.id: a.name for a in stored_attribute_rows(world["db"])}
    classes, labels, influence = world["classes"], world["labels"], world["influence"]
    for row in rows[::97]:  # a few pairs against scikit-learn
        col = ATTRIBUTES.index(names[row.attribute_id])
        member = classes == row.class_filter if row.class_filter >= 0 else np.ones(T_TEST, bool)
        y = labels[member, col]
        assert row.ap == pytest.approx(sk_ap(y, influence[row.distilled_index, member]), abs=1e-9)
        assert row.chance_ap == pytest.approx(chance_ap(len(y), y.sum()))
        assert row.lift == pytest.approx(row.ap / row.chance_ap)
    best = result.top[0]
    assert (best.distilled_index, best.attribute, best.class_filter) == (3, "yellow", "automobile")
    assert out["top"][0]["ap"] == pytest.approx(1.0)
    assert len(result.top) == 10 and result.kinds == "over all classes and within each class"
    # sorted by q, then AP; p, q, chance and draws with every top score
    keys = [(t.q_value, -t.ap) for t in result.top]
    assert keys == sorted(keys)
    assert {"chance_ap", "p_value", "q_value", "draws", "significant"} <= set(out["top"][0])
    assert (out["alpha"], out["max_draws"], out["family"]) == (0.05, 10_000, result.stored)
    assert out["seed_stability"] is None


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
    assert first.chance_ap == pytest.approx(chance_ap(20, 5)) == out["chance_ap"]
    assert first.lift == pytest.approx(1.0 / chance_ap(20, 5)) and len(first.top_images) == 2
    assert list(out["results"][0]) == [
        "rank", "distilled_index", "label", "class", "ap", "lift", "chance_ap", "p_value",
        "q_value", "significant", "top_test_images"
    ]  # fmt: skip
    assert out["total"] == out["test_images"] == 20 and out["seeds"] == [0]
    assert first.significant and out["significant_count"] == 1
    assert out["verdict"].startswith(
        "1 distilled image predicts yellow among automobile better than chance (q < 0.05); "
        "best: #3, AP 1.000, chance 0.353"
    )
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
    lift = 1.0 / chance_ap(20, 5)  # 2.8: AP / chance AP
    assert f"| 3 | automobile | yellow ({1.0:.2f}, {lift:.1f}x)" in result.table_md.read_text()
    assert result.table_csv.read_text().startswith("distilled_index,class,rank,attribute")
    assert result.as_json()["influence_grids"] == N_DISTILLED
    assert ws.progress.phases == [("drawing influence grids", N_DISTILLED, N_DISTILLED)]
    default = report_job.run(ws, ReportRequest(str(tmp_path / "auto")))
    assert default.pr_curves.name == "pr_yellow_automobile.png"  # the lowest-q pair
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
        (lambda: RankRequest(alpha=0), "--alpha must be a number strictly between 0 and 1"),
        (lambda: RankRequest(alpha=1.0), "--alpha"),
        (lambda: RankRequest(alpha=float("nan")), "--alpha .* got nan"),
        (lambda: RankRequest(alpha=float("inf")), "--alpha"),
        (lambda: RankRequest(alpha=2), "--alpha"),
        (lambda: RankRequest(alpha=-0.1), "--alpha"),
        (lambda: RankRequest(draws=0), "--draws must be a positive integer, got 0"),
        (lambda: RankRequest(draws=-1), "--draws must be a positive integer, got -1"),
        (lambda: RankRequest(draws=2.5), "--draws"),
        (lambda: RankRequest(draws=True), "--draws"),
        (lambda: QueryRequest("yellow cars", alpha=1), "--alpha"),
        (lambda: QueryRequest("yellow cars", draws=0), "--draws"),
        (lambda: ReportRequest("out", alpha=float("nan")), "--alpha"),
        (lambda: ReportRequest("out", draws=-5), "--draws"),
    ],
)
def test_bad_requests_are_refused_at_construction(build, message):
    with pytest.raises(UserError, match=message):
        build()


def test_semantics_reads_no_database():
    code = "import sys, ddsem.semantics; print(any(m.startswith('ddsem.db') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- significance --------------------------------------------------------------------------------

FILTERS = [-1, *range(10)]  # over all test images, then each class


def members_of(world, class_filter):  # noqa: F811
    return world["classes"] == class_filter if class_filter >= 0 else np.ones(T_TEST, bool)


def reference_ap(world, influence):  # noqa: F811
    """(N, F, A) AP by scikit-learn, positives (F, A) and totals (F,), from the raw arrays."""
    labels = world["labels"]
    ap = np.full((N_DISTILLED, len(FILTERS), len(ATTRIBUTES)), np.nan)
    positives = np.zeros((len(FILTERS), len(ATTRIBUTES)), np.int64)
    totals = np.array([members_of(world, f).sum() for f in FILTERS])
    for fi, f in enumerate(FILTERS):
        m = members_of(world, f)
        positives[fi] = labels[m].sum(axis=0)
        for a in range(len(ATTRIBUTES)):
            if positives[fi, a]:
                for k in range(N_DISTILLED):
                    ap[k, fi, a] = sk_ap(labels[m, a], influence[k, m])
    return ap, positives, totals


def exact_p(total: int, positives: int, observed: float) -> float:
    """P(AP >= observed) over every placement of the positives among the ranks (enumerated)."""
    ranks = np.array(list(combinations(range(1, total + 1), positives)), dtype=np.float64)
    aps = (np.arange(1, positives + 1) / ranks).mean(axis=1)
    return float((aps >= observed - 1e-12).mean())


def stored_by_cell(db, scope="seed:0"):
    names = {a.id: a.name for a in stored_attribute_rows(db)}
    return {
        (
            r.distilled_index,
            FILTERS.index(r.class_filter),
            ATTRIBUTES.index(names[r.attribute_id]),
        ): r
        for r in stored_scores(db)
        if r.scope == scope
    }


def test_stored_p_and_q_equal_an_independent_recomputation(ws, world):  # noqa: F811
    result = rank_job.run(ws, RankRequest())
    ap, positives, totals = reference_ap(world, world["influence"])
    ref = permutation_p_values(ap, totals, positives, min_draws=1000, max_draws=10_000, seed=0)
    finite = np.isfinite(ref.p)
    q = np.full(ref.p.shape, np.nan)
    q[finite] = stats.false_discovery_control(ref.p[finite], method="bh")  # family: all stored
    cells = stored_by_cell(world["db"])
    assert len(cells) == finite.sum() == result.family == result.stored
    for (k, f, a), row in cells.items():
        assert row.ap == pytest.approx(ap[k, f, a], abs=1e-12)
        assert row.chance_ap == pytest.approx(chance_ap(totals[f], positives[f, a]), abs=1e-12)
        assert row.p_value == pytest.approx(ref.p[k, f, a], rel=1e-12)
        assert row.q_value == pytest.approx(q[k, f, a], rel=1e-12)
        assert row.draws == ref.draws[f, a]
    assert result.significant == int((q < 0.05).sum())
    # and the permutation p against the exact p, enumerated, for the within-class cells
    checked = 0
    for (k, f, a), row in sorted(cells.items()):
        if f > 0 and positives[f, a] <= 6 and (k + a) % 7 == 0:
            exact = exact_p(20, int(positives[f, a]), row.ap)
            tolerance = 4 * np.sqrt(exact * (1 - exact) / row.draws) + 2 / (row.draws + 1)
            assert abs(row.p_value - exact) <= tolerance, (row, exact)
            checked += 1
    assert checked >= 20


def test_a_planted_signal_is_significant_and_random_influence_mostly_is_not(ws, world):  # noqa: F811
    rng = np.random.default_rng(7)
    grass = world["labels"][:, ATTRIBUTES.index("grass")]
    planted = rng.normal(0, 0.01, (N_DISTILLED, T_TEST)).astype(np.float32)
    planted[5, grass] += 1.0  # distilled image 5 helps exactly the test images with grass
    add_run(world["db"], world["set_id"], planted, np.arange(T_TEST), seed=1)
    noise = rng.normal(size=(N_DISTILLED, T_TEST)).astype(np.float32)
    add_run(world["db"], world["set_id"], noise, np.arange(T_TEST), seed=2)

    found = rank_job.run(ws, RankRequest(seed=1, min_positives=0, top=20))
    cells = stored_by_cell(world["db"], "seed:1")
    significant = {cell for cell, row in cells.items() if row.q_value < 0.05}
    g = ATTRIBUTES.index("grass")
    planted_cells = {(5, f, g) for f in range(len(FILTERS))}  # grass in every filter: AP 1
    assert all(cells[c].ap == 1.0 for c in planted_cells)
    # A perfect ranking of P positives among T has p = 1 / C(T, P): with 3 grass images among
    # a class's 20, 1/1140, too weak for BH over ~650 answers. Every other filter is found.
    few = {c for c in planted_cells if cells[c].positives <= 3}
    assert 1 <= len(few) <= 3
    for c in few:
        assert cells[c].p_value == pytest.approx(1 / math.comb(20, 3), rel=0.35)
        assert c not in significant
    assert planted_cells - few <= significant
    assert len(significant - planted_cells) <= 2  # the other ~640 answers: hardly any
    assert found.significant == len(significant)
    # the significant answers lead the table (sorted by q), then the rest
    assert [t.significant for t in found.top] == [True] * len(significant) + [False] * (
        len(found.top) - len(significant)
    )
    assert sum(t.distilled_index == 5 and t.attribute == "grass" for t in found.top) >= 8

    independent = rank_job.run(ws, RankRequest(seed=2))
    assert independent.significant <= 1  # BH at 5%: under the global null, almost never any
    p = np.array([r.p_value for r in stored_by_cell(world["db"], "seed:2").values()])
    assert stats.kstest(p, "uniform").pvalue > 0.001  # and the p-values are about uniform


def test_query_p_is_ranks_p_and_q_is_bh_over_the_distilled_images(ws, world):  # noqa: F811
    rank_job.run(ws, RankRequest())
    answer = query_job.run(ws, QueryRequest("yellow cars", top=N_DISTILLED))
    stored = stored_by_cell(world["db"])
    first = answer.results[0]
    row = stored[(3, FILTERS.index(AUTOMOBILE), ATTRIBUTES.index("yellow"))]
    assert first.p_value == row.p_value and answer.draws == row.draws  # the same null
    p = np.array([r.p_value for r in answer.results])
    q = stats.false_discovery_control(p, method="bh")  # family: the N distilled images
    np.testing.assert_allclose([r.q_value for r in answer.results], q, rtol=1e-12)
    assert first.q_value < row.q_value  # a family of 12, not of the 648 stored scores
    assert [r.significant for r in answer.results] == list(q < 0.05)


def test_query_says_when_the_best_answer_is_not_better_than_chance(ws, world):  # noqa: F811
    answer = query_job.run(ws, QueryRequest("grass cars"))
    best = answer.results[0]
    assert answer.significant_count == 0 and not any(r.significant for r in answer.results)
    assert best.q_value >= 0.05
    assert answer.verdict == (
        "no distilled image predicts grass among automobile better than chance (q < 0.05); "
        f"best: #{best.distilled_index}, AP {best.ap:.3f}, chance {best.chance_ap:.3f}, "
        f"p {best.p_value:.2g}, q {best.q_value:.2g}"
    )
    cars = members_of(world, AUTOMOBILE)
    grass = world["labels"][cars, ATTRIBUTES.index("grass")]
    assert best.chance_ap == pytest.approx(chance_ap(20, grass.sum()))
    assert best.ap == pytest.approx(sk_ap(grass, world["influence"][best.distilled_index, cars]))
    assert answer.as_json()["verdict"] == answer.verdict
    strict = query_job.run(ws, QueryRequest("yellow cars", alpha=1e-4))
    assert strict.significant_count == 0
    assert strict.verdict.startswith(
        "no distilled image predicts yellow among automobile better "
        "than chance (q < 0.0001); best: #3, AP 1.000, chance 0.353"
    )


def test_a_mean_over_seeds_scores_each_seed_as_rank_seed_does(ws, world):  # noqa: F811
    influence2 = planted_influence(world["classes"], world["labels"], seed=1)
    add_run(world["db"], world["set_id"], influence2, np.arange(T_TEST), seed=1)
    mean = rank_job.run(ws, RankRequest())
    assert mean.scope == "mean" and mean.seeds == [0, 1]
    assert {r.scope for r in stored_scores(world["db"])} == {"mean", "seed:0", "seed:1"}
    pairs = ws.progress.phases[1][1] // 3
    assert ws.progress.phases == [
        ("ranking test images", 3 * 2 * N_DISTILLED, 3 * 2 * N_DISTILLED),
        ("significance", 3 * pairs, 3 * pairs),
    ]

    def table(scope):
        cells = stored_by_cell(world["db"], scope)
        return {c: (r.ap, r.chance_ap, r.p_value, r.q_value, r.draws) for c, r in cells.items()}

    by_seed = {s: table(f"seed:{s}") for s in (0, 1)}
    rank_job.run(ws, RankRequest(seed=1))
    assert table("seed:1") == by_seed[1]  # exactly as `rank --seed 1` stores it
    cells = sorted(by_seed[0])
    ap0, ap1 = ([by_seed[s][c][0] for c in cells] for s in (0, 1))
    agreement = mean.seed_agreement
    assert agreement.seeds == [0, 1] and agreement.stored_per_seed == len(cells)
    ((a, b, rho),) = agreement.spearman
    assert (a, b) == (0, 1) and rho == pytest.approx(stats.spearmanr(ap0, ap1).statistic)
    every = sum(by_seed[0][c][3] < 0.05 and by_seed[1][c][3] < 0.05 for c in cells)
    assert agreement.significant_in_every_seed == every
    assert agreement.significant_by_seed == [
        sum(by_seed[s][c][3] < 0.05 for c in cells) for s in (0, 1)
    ]
    top = mean.top[0]
    cell = (top.distilled_index, FILTERS.index(AUTOMOBILE), ATTRIBUTES.index(top.attribute))
    assert top.ap_by_seed == [by_seed[0][cell][0], by_seed[1][cell][0]]
    assert top.ap_sd == pytest.approx(np.std(top.ap_by_seed, ddof=1))
    assert mean.as_json()["seed_stability"]["spearman"][0]["rho"] == rho

    answer = query_job.run(ws, QueryRequest("yellow cars", top=3))
    first = answer.results[0]
    cars = members_of(world, AUTOMOBILE)
    yellow = world["labels"][cars, 0]
    expected = [sk_ap(yellow, m[3, cars]) for m in (world["influence"], influence2)]
    assert first.ap_by_seed == pytest.approx(expected)
    assert first.ap_sd == pytest.approx(np.std(expected, ddof=1))
    assert first.significant_in_every_seed is True
    out = answer.as_json()
    assert out["seeds"] == [0, 1] and len(out["seed_spearman"]) == 1
    assert {"ap_by_seed", "ap_sd", "significant_in_every_seed"} <= set(out["results"][0])
    assert "in every seed (0, 1)" in answer.verdict
