"""Approximate influence estimators as jobs (issue 20): stored beside exact LOO under their own
key, skipped when stored, refused on bad input without a write, read by show/rank/query, and
``influence compare`` against numbers computed here with numpy/scipy from the stored matrices.
Also the schema 2 -> 3 migration that gives runs their estimator key."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import torch
from scipy import stats

from ddsem.db import SCHEMA_VERSION, open_db
from ddsem.errors import UserError
from ddsem.jobs import Recorder, Workspace, influence_compare
from ddsem.jobs import influence as job

N = 6
STEPS = 5


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _add_set(ws: Workspace, name: str = "tiny") -> None:
    from ddsem.db.sets import add_distilled_set

    rng = np.random.default_rng(3)
    images = rng.normal(size=(N, 3, 32, 32)).astype(np.float32)
    add_distilled_set(ws.db, name, "bptt", images, np.arange(N) % 10)


def _request(synthetic, **kw) -> job.InfluenceRequest:
    base = dict(
        set_name="tiny", width=8, steps=STEPS, test_limit=30, top_k=5, chunk=4, data=synthetic
    )
    return job.InfluenceRequest(**{**base, **kw})


def _counts(path) -> dict:
    with sqlite3.connect(path) as con:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        counts = {t: con.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}
        counts["runs"] = con.execute(
            "select id, seed, estimator, status, config_hash from influencerun order by id"
        ).fetchall()
    return counts


@pytest.fixture
def world(tmp_path, synthetic):
    ws = Workspace.open(str(tmp_path / "est.db"), progress=Recorder())
    _add_set(ws)
    yield ws, synthetic, tmp_path / "est.db"
    ws.db.close()


def _run_of(ws, estimator: str, seed: int = 0):
    from ddsem.db.influence import find_run
    from ddsem.db.sets import find_set

    return find_run(ws.db, find_set(ws.db, "tiny").id, seed, "distilled", estimator)


@pytest.mark.parametrize("estimator", ["if", "tracin", "trak"])
def test_an_estimate_is_stored_under_its_own_key_and_a_repeat_does_nothing(world, estimator):
    from ddsem.db.influence import list_runs, load_influence

    ws, synthetic, path = world
    job.run(ws, _request(synthetic))  # exact LOO, seed 0
    exact = _run_of(ws, "loo")
    result = job.run(ws, _request(synthetic, estimator=estimator, seeds=(0, 1)))
    assert [s.estimator for s in result.seeds] == [estimator, estimator]
    assert not any(s.skipped for s in result.seeds)
    est = _run_of(ws, estimator)
    assert est is not None and est.status == "complete" and est.num_models == 1
    assert est.config["estimator"]["name"] == estimator
    assert est.config["provenance"]["trainings"] == 1
    # the estimate's one training is exact LOO's reference model: same init, same protocol
    assert est.full_accuracy == pytest.approx(exact.full_accuracy)
    matrix, tests = load_influence(ws.db, est.id)
    exact_matrix, exact_tests = load_influence(ws.db, exact.id)
    assert matrix.shape == exact_matrix.shape == (N, 30)
    assert np.array_equal(tests, exact_tests) and np.isfinite(matrix).all()
    # exact LOO's readers still see only exact LOO
    assert [r.estimator for r in list_runs(ws.db, exact.set_id)] == ["loo"]
    before = _counts(path)
    again = job.run(ws, _request(synthetic, estimator=estimator, seeds=(0, 1)))
    assert all(s.skipped for s in again.seeds) and _counts(path) == before


def test_an_interrupted_estimate_leaves_nothing_and_the_rerun_finishes(world, monkeypatch):
    from ddsem.influence import estimators

    ws, synthetic, path = world
    real = estimators.estimate_influence
    calls = []

    def failing_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(estimators, "estimate_influence", failing_second)
    with pytest.raises(KeyboardInterrupt):
        job.run(ws, _request(synthetic, estimator="tracin", seeds=(0, 1)))
    assert [r[1:3] for r in _counts(path)["runs"]] == [(0, "tracin")]  # seed 1: nothing
    monkeypatch.setattr(estimators, "estimate_influence", real)
    result = job.run(ws, _request(synthetic, estimator="tracin", seeds=(0, 1)))
    assert [s.skipped for s in result.seeds] == [True, False]
    assert _run_of(ws, "tracin", 1).status == "complete"


def test_bad_estimator_requests_are_one_line_and_write_nothing(world, monkeypatch):
    from ddsem.influence import estimators

    ws, synthetic, path = world
    job.run(ws, _request(synthetic, estimator="tracin"))
    before = _counts(path)
    with pytest.raises(UserError, match="unknown --estimator 'lissa'"):
        _request(synthetic, estimator="lissa")
    with pytest.raises(UserError, match="distilled context only"):
        _request(synthetic, estimator="if", context="real")
    with pytest.raises(UserError, match="--checkpoints"):
        _request(synthetic, estimator="tracin", estimation=job.EstimatorConfig(checkpoints=0))
    with pytest.raises(UserError, match="another configuration"):
        job.run(ws, _request(synthetic, estimator="tracin", steps=STEPS + 1))
    monkeypatch.setattr(estimators, "missing_package", lambda e: "kronfluence")
    with pytest.raises(UserError, match="pip install kronfluence"):
        job.run(ws, _request(synthetic, estimator="if"))
    assert _counts(path) == before


def test_compare_equals_numpy_and_scipy_on_the_stored_matrices(world, tmp_path):
    from ddsem.db.influence import load_influence

    ws, synthetic, _ = world
    job.run(ws, _request(synthetic, seeds=(0, 1)))
    job.run(ws, _request(synthetic, estimator="tracin"))
    report = influence_compare.run(
        ws, influence_compare.CompareRequest("tiny", top_k=3, out=str(tmp_path / "fig"))
    )
    (c,) = report.comparisons
    exact, _ = load_influence(ws.db, _run_of(ws, "loo").id)
    est, _ = load_influence(ws.db, _run_of(ws, "tracin").id)
    assert c.estimator == "tracin" and c.exact_seed == 0 and c.test_images == 30
    assert c.fidelity.pearson == pytest.approx(stats.pearsonr(exact.ravel(), est.ravel())[0])
    assert c.fidelity.spearman == pytest.approx(stats.spearmanr(exact.ravel(), est.ravel())[0])
    for i in range(N):
        assert c.fidelity.pearson_rows[i] == pytest.approx(stats.pearsonr(exact[i], est[i])[0])
        assert c.fidelity.spearman_rows[i] == pytest.approx(stats.spearmanr(exact[i], est[i])[0])
        top_a = set(np.argsort(-exact[i], kind="stable")[:3])
        top_b = set(np.argsort(-est[i], kind="stable")[:3])
        assert c.fidelity.overlap_rows[i] == pytest.approx(len(top_a & top_b) / 3)
    assert c.fidelity.chance_overlap == pytest.approx(3 / 30)
    assert c.cost.trainings == 1 and c.exact_cost.trainings == N + 1
    # no annotations here: the semantic comparison says why, and nothing else is missing
    assert c.answers is None and "annotated" in c.answers_note
    # the reference row: exact seed 1 against exact seed 0
    assert report.reference is not None and report.reference.seed == 1
    exact1, _ = load_influence(ws.db, _run_of(ws, "loo", 1).id)
    assert report.reference.fidelity.pearson == pytest.approx(
        stats.pearsonr(exact.ravel(), exact1.ravel())[0]
    )
    assert len(report.figures) == 2 and all((tmp_path / "fig").glob("*.png"))


def test_compare_refuses_without_an_exact_run_or_an_estimate(world):
    ws, synthetic, path = world
    with pytest.raises(UserError, match="no complete exact influence run"):
        influence_compare.run(ws, influence_compare.CompareRequest("tiny"))
    job.run(ws, _request(synthetic))
    with pytest.raises(UserError, match="no estimator runs"):
        influence_compare.run(ws, influence_compare.CompareRequest("tiny"))


def test_answer_agreement_counts_found_and_added():
    from ddsem.influence.compare import answer_agreement

    exact = np.array([[True, False, True], [False, False, True]])
    est = np.array([[True, True, False], [False, False, True]])
    a = answer_agreement(exact, est)
    assert (a.exact, a.estimate, a.found, a.added) == (3, 3, 2, 1)
    assert a.recall == pytest.approx(2 / 3)


V2_INFLUENCERUN = """
CREATE TABLE influencerun_v3 AS SELECT * FROM influencerun;
DROP TABLE influencerun;
CREATE TABLE influencerun (
    id INTEGER NOT NULL, set_id INTEGER NOT NULL, seed INTEGER NOT NULL,
    context VARCHAR NOT NULL, status VARCHAR NOT NULL, config_json VARCHAR NOT NULL,
    config_hash VARCHAR NOT NULL, test_split VARCHAR NOT NULL, test_indices BLOB NOT NULL,
    num_models INTEGER NOT NULL, init_state BLOB NOT NULL, full_accuracy FLOAT,
    device VARCHAR NOT NULL, wall_seconds FLOAT, created_at DATETIME NOT NULL,
    finished_at DATETIME,
    PRIMARY KEY (id), UNIQUE (set_id, seed, context),
    FOREIGN KEY(set_id) REFERENCES distilledset (id) ON DELETE CASCADE
);
CREATE INDEX ix_influencerun_set_id ON influencerun (set_id);
INSERT INTO influencerun SELECT id, set_id, seed, context, status, config_json, config_hash,
    test_split, test_indices, num_models, init_state, full_accuracy, device, wall_seconds,
    created_at, finished_at FROM influencerun_v3;
DROP TABLE influencerun_v3;
UPDATE meta SET value = '2' WHERE key = 'schema_version';
"""


def test_a_version_2_database_gets_the_estimator_key_keeping_its_runs(world):
    ws, synthetic, path = world
    job.run(ws, _request(synthetic))
    ws.db.close()
    before = _counts(path)
    con = sqlite3.connect(path)
    con.execute("PRAGMA foreign_keys=OFF")
    con.executescript(V2_INFLUENCERUN)
    con.close()
    with sqlite3.connect(path) as con:
        assert "estimator" not in [r[1] for r in con.execute("PRAGMA table_info(influencerun)")]
    db = open_db(str(path))  # upgrades
    db.close()
    after = _counts(path)
    assert after["runs"] == before["runs"]  # the runs, their estimator "loo"
    assert {k: v for k, v in after.items() if k != "meta"} == {
        k: v for k, v in before.items() if k != "meta"
    }  # and every model, row and top-k row under them
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)
        assert con.execute("PRAGMA foreign_keys").fetchone()[0] == 0  # (a plain connection)
        ddl = con.execute("SELECT sql FROM sqlite_master WHERE name='influencerun'").fetchone()
        assert "UNIQUE (set_id, seed, context, estimator)" in ddl[0]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    ws2 = Workspace.open(str(path), progress=Recorder())
    try:  # an estimate of the same seed now has a place beside the exact run
        job.run(ws2, _request(synthetic, estimator="tracin"))
        assert _run_of(ws2, "tracin").status == "complete"
        assert _run_of(ws2, "loo").status == "complete"
        # and foreign keys are on again for the connections the upgrade handed back
        with ws2.db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        ws2.db.close()


# -- the commands, end to end ------------------------------------------------------------------


def test_the_commands_read_an_estimate_like_an_exact_run(cli, world, synthetic_path):
    from ddsem.db.scores import score_scopes
    from ddsem.db.sets import find_set

    ws, _, path = world
    db = str(path)
    model = ["--set", "tiny", "--width", "8", "--steps", str(STEPS), "--test-limit", "30",
             "--data", str(synthetic_path)]  # fmt: skip
    assert cli("influence", *model, db=db).code == 0
    before = _counts(path)
    r = cli("influence", *model, "--estimator", "nope", db=db)
    assert r.code == 2 and r.err.count("\n") == 1 and "unknown --estimator 'nope'" in r.err
    r = cli("influence", "compare", "--set", "tiny", db=db)
    assert r.code == 2 and r.err.count("\n") == 1 and "no estimator runs" in r.err
    assert _counts(path) == before
    r = cli("influence", *model, "--estimator", "tracin", "--checkpoints", "3", db=db)
    assert r.code == 0, r.err
    r = cli("influence", "show", "--set", "tiny", db=db)
    assert r.code == 0 and "tracin" in r.out and "loo" in r.out
    r = cli("influence", "show", "--set", "tiny", "--image", "0", "--estimator", "tracin", db=db)
    assert r.code == 0 and "estimator tracin" in r.out
    limit = ["--limit", "30", "--data", str(synthetic_path)]
    assert cli("annotate", "--annotator", "color", *limit, db=db).code == 0
    assert cli("attributes", "extract", db=db).code == 0
    assert cli("rank", "--set", "tiny", "--draws", "1000", db=db).code == 0
    r = cli("rank", "--set", "tiny", "--draws", "1000", "--estimator", "tracin", db=db)
    assert r.code == 0 and "influence scope tracin/seed:0" in r.out, r.out
    # the exact scores stay: each estimator ranks into its own scope
    set_id = find_set(ws.db, "tiny").id
    assert set(score_scopes(ws.db, set_id)) == {"seed:0", "tracin/seed:0"}
    r = cli("query", "green", "--set", "tiny", "--estimator", "tracin", "--draws", "1000", db=db)
    assert r.code == 0 and "tracin/seed:0" in r.out, r.err
    out = path.parent / "report"
    r = cli("report", "--set", "tiny", "--estimator", "tracin", "--draws", "1000",
            "--min-positives", "1", "--out", str(out), db=db)  # fmt: skip
    assert r.code == 0, r.err
    assert "tracin/seed:0" in (out / "table1.md").read_text()
    r = cli("influence", "compare", "--set", "tiny", "--draws", "1000", "--json", db=db)
    assert r.code == 0, r.err
    (c,) = json.loads(r.out)["comparisons"]
    assert c["estimator"] == "tracin" and c["answers"] is not None
    assert c["answers"]["found"] <= c["answers"]["exact_significant"]
    r = cli("influence", "compare", "--set", "tiny", "--draws", "1000", db=db)
    assert r.code == 0 and "tracin" in r.out and "speed-up" in r.out
    out = path.parent / "topk.json"
    assert cli("db", "export", "--what", "influence-topk", "--out", str(out), db=db).code == 0
    rows = json.loads(out.read_text())
    assert {r["estimator"] for r in rows} == {"loo", "tracin"}


def test_abandoned_claims_are_cleared_and_live_ones_kept(world):
    """A process killed between storing its unit and releasing the claim leaves the claim;
    the next run that finds the work complete clears it (issue 15's kill test caught it)."""
    import os

    from sqlmodel import select

    from ddsem.db import claims
    from ddsem.db.tables import JobClaim

    ws, synthetic_data, path = world
    job.run(ws, _request(synthetic_data, estimator="tracin"))
    set_id = _run_of(ws, "tracin").set_id
    dead = f"{claims.HOST}:999999999:abcd"  # no such pid on this host
    live = claims.new_owner()
    assert os.getpid() == int(live.split(":")[1])
    with ws.db.session() as s:
        s.add(JobClaim(key=f"estimate:{set_id}:tracin:0", owner=dead))
        s.add(JobClaim(key=f"estimate:{set_id}:tracin:7", owner=live))
        s.add(JobClaim(key="influence:99:0", owner=dead))
    again = job.run(ws, _request(synthetic_data, estimator="tracin"))
    assert again.seeds[0].skipped
    with ws.db.session() as s:
        left = sorted(c.key for c in s.exec(select(JobClaim)).all())
    assert left == [f"estimate:{set_id}:tracin:7", "influence:99:0"]  # another run's: kept
