"""The storage and the jobs on PostgreSQL as on SQLite (issue 19): every test here runs on a
SQLite file and on a fresh PostgreSQL database (``db_url``; the PostgreSQL half is skipped unless
$DDSEM_TEST_POSTGRES names a server: ``scripts/postgres.sh start`` prints one, ``.ci/run`` starts
one), and two processes running one influence job on one PostgreSQL database finish one complete
run with every row once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from sqlalchemy import create_engine, text

from ddsem.db import open_db
from ddsem.db.admin import table_counts
from ddsem.errors import UserError

MODEL = ["--width", "8", "--steps", "4", "--test-limit", "40"]


def _paper_set(path, n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(n, 3, 32, 32, generator=g) * 3
    torch.save({"data": data, "label": torch.arange(n) % 10}, path)
    return data


def _sql(url: str, statement: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(statement))
    engine.dispose()


# -- open_db: create, version, refusals ------------------------------------------------------------


def test_open_db_creates_stamps_and_reopens(db_url):
    from ddsem.db.engine import SCHEMA_VERSION

    db = open_db(db_url)
    counts = table_counts(db)
    db.close()
    assert counts["meta"] == 1 and counts["distilledset"] == 0
    db = open_db(db_url, create=False, readonly=True)
    from ddsem.db.tables import Meta

    with db.session() as s:
        assert s.get(Meta, "schema_version").value == str(SCHEMA_VERSION)
    db.close()


def test_a_readonly_open_refuses_writes_in_one_line(db_url):
    from ddsem.db.sets import add_distilled_set

    open_db(db_url).close()
    db = open_db(db_url, readonly=True)
    images = np.zeros((2, 3, 32, 32), np.float32)
    with pytest.raises(UserError, match="read-only"):
        add_distilled_set(db, "s", "dm", images, np.arange(2), dataset="cifar10", provenance={})
    db.close()


def test_foreign_newer_and_unversioned_databases_are_refused(postgres_url):
    _sql(postgres_url, "CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    with pytest.raises(UserError, match="not a ddsem database"):
        open_db(postgres_url)
    _sql(postgres_url, "DROP TABLE customers")
    open_db(postgres_url).close()
    _sql(postgres_url, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(UserError, match="newer than this ddsem"):
        open_db(postgres_url)
    _sql(postgres_url, "UPDATE meta SET value = 'x' WHERE key = 'schema_version'")
    with pytest.raises(UserError, match="no schema version"):
        open_db(postgres_url)


def test_a_version_2_database_gets_the_estimator_key(postgres_url):
    """Schema 3 on a server: the estimator column added, the run key's unique constraint
    replaced, the rows kept (SQLite rebuilds the table instead: tests/test_jobs_estimators.py)."""
    from ddsem.db.engine import SCHEMA_VERSION
    from ddsem.db.sets import add_distilled_set
    from ddsem.db.tables import InfluenceRun

    db = open_db(postgres_url)
    images = np.zeros((2, 3, 32, 32), np.float32)
    set_id = add_distilled_set(db, "s", "dm", images, np.arange(2), dataset="cifar10").id
    with db.session() as s:
        s.add(InfluenceRun(set_id=set_id, seed=0, config_json="{}", config_hash="h",
                           test_indices=b"", num_models=3, init_state=b""))  # fmt: skip
    db.close()
    for statement in (
        "ALTER TABLE influencerun DROP CONSTRAINT influencerun_set_id_seed_context_estimator_key",
        "ALTER TABLE influencerun DROP COLUMN estimator",
        "ALTER TABLE influencerun ADD CONSTRAINT old_key UNIQUE (set_id, seed, context)",
        "UPDATE meta SET value = '2' WHERE key = 'schema_version'",
    ):
        _sql(postgres_url, statement)
    open_db(postgres_url).close()  # upgrades
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        keys = conn.execute(
            text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'influencerun'::regclass AND contype = 'u'"
            )
        ).all()
        rows = conn.execute(text("SELECT seed, estimator FROM influencerun")).all()
        version = conn.execute(text("SELECT value FROM meta")).scalar_one()
    engine.dispose()
    assert [k[1] for k in keys] == ["UNIQUE (set_id, seed, context, estimator)"]
    assert rows == [(0, "loo")] and version == str(SCHEMA_VERSION)


def test_a_missing_database_is_not_created_by_readers(cli, postgres_url):
    r = cli("sets", "list", db=postgres_url)
    assert r.code == 2 and "no ddsem database" in r.err
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        tables = conn.execute(
            text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        ).scalar_one()
    engine.dispose()
    assert tables == 0


def test_an_unreachable_server_is_one_line_and_exit_2(cli, tmp_path):
    url = f"postgresql+psycopg://nobody@/ddsem?host={tmp_path}"  # no server has a socket there
    r = cli("sets", "list", db=url)
    assert r.code == 2
    assert r.err.count("\n") == 1 and "cannot connect to the database server" in r.err


# -- sets -----------------------------------------------------------------------------------------


def test_sets_import_list_show_export_delete(cli, db_url, tmp_path):
    data = _paper_set(tmp_path / "set.pt")
    r = cli("sets", "import", str(tmp_path / "set.pt"), "--method", "bptt", db=db_url)
    assert r.code == 0, r.err
    again = cli("sets", "import", str(tmp_path / "set.pt"), "--method", "bptt", db=db_url)
    assert again.code == 2 and "exists" in again.err  # a name is unique
    listing = json.loads(cli("sets", "list", "--json", db=db_url).out)
    assert [(s["name"], s["num_images"], s["ipc"]) for s in listing] == [("bptt", 20, 2)]
    shown = json.loads(cli("sets", "show", "bptt", "--json", db=db_url).out)
    assert shown["per_class"] == [2] * 10 and shown["pixel_max"] > 1.0
    r = cli("sets", "export", "bptt", "--out", str(tmp_path / "out.pt"), db=db_url)
    assert r.code == 0, r.err
    back = torch.load(tmp_path / "out.pt", weights_only=True)
    assert torch.equal(back["data"], data)  # bit-exact through the database
    r = cli("sets", "delete", "bptt", db=db_url)
    assert r.code == 0, r.err
    assert json.loads(cli("sets", "list", "--json", db=db_url).out) == []
    db = open_db(db_url)
    assert table_counts(db)["distilledimage"] == 0  # the images went with it (cascade)
    db.close()


# -- the jobs -------------------------------------------------------------------------------------


def _influenced(cli, db_url, tmp_path, synthetic_path):
    _paper_set(tmp_path / "set.pt")
    assert cli("sets", "import", str(tmp_path / "set.pt"), "--method", "bptt", db=db_url).code == 0
    r = cli("influence", "--set", "bptt", *MODEL, "--data", str(synthetic_path), "--json",
            db=db_url)  # fmt: skip
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_influence_and_influence_show(cli, db_url, tmp_path, synthetic_path):
    (run,) = _influenced(cli, db_url, tmp_path, synthetic_path)
    assert run["status"] == "complete"
    again = cli("influence", "--set", "bptt", *MODEL, "--data", str(synthetic_path), "--json",
                db=db_url)  # fmt: skip
    (same,) = json.loads(again.out)
    assert again.code == 0 and same["run_id"] == run["run_id"] and same["skipped"]
    shown = cli("influence", "show", "--set", "bptt", "--json", db=db_url)
    assert shown.code == 0, shown.err
    (stored,) = json.loads(shown.out)["runs"]
    assert (stored["status"], stored["models_done"]) == ("complete", 21)
    db = open_db(db_url)
    counts = table_counts(db)
    db.close()
    assert counts["influencemodel"] == 21 and counts["influencerow"] == 20
    assert counts["jobclaim"] == 0


def test_an_estimate_beside_exact_loo_and_compare(cli, db_url, tmp_path, synthetic_path):
    """Issue 20 on both back ends: an estimator's run stored under its own key, shown beside
    the exact run, compared with it, and its repeat a no-op."""
    _influenced(cli, db_url, tmp_path, synthetic_path)
    est = ["influence", "--set", "bptt", *MODEL, "--data", str(synthetic_path),
           "--estimator", "tracin", "--checkpoints", "2", "--json"]  # fmt: skip
    r = cli(*est, db=db_url)
    assert r.code == 0, r.err
    (run,) = json.loads(r.out)
    assert run["estimator"] == "tracin" and run["num_models"] == 1 and not run["skipped"]
    (again,) = json.loads(cli(*est, db=db_url).out)
    assert again["skipped"] and again["run_id"] == run["run_id"]
    shown = json.loads(cli("influence", "show", "--set", "bptt", "--json", db=db_url).out)
    assert sorted(r["estimator"] for r in shown["runs"]) == ["loo", "tracin"]
    r = cli("influence", "compare", "--set", "bptt", "--no-semantic", "--json", db=db_url)
    assert r.code == 0, r.err
    (c,) = json.loads(r.out)["comparisons"]
    assert c["estimator"] == "tracin" and c["cost"]["trainings"] == 1
    assert -1 <= c["fidelity"]["pearson"] <= 1


def test_annotate_attributes_rank_query_class_influence_db(cli, db_url, tmp_path, synthetic_path):
    _influenced(cli, db_url, tmp_path, synthetic_path)
    r = cli("annotate", "--annotator", "color", "--data", str(synthetic_path), db=db_url)
    assert r.code == 0, r.err
    r = cli("attributes", "extract", "--min-df", "2", db=db_url)
    assert r.code == 0, r.err
    names = [a["name"] for a in json.loads(cli("attributes", "list", "--json", db=db_url).out)]
    assert names
    r = cli("rank", "--method", "bptt", "--draws", "50", "--json", db=db_url)
    assert r.code == 0, r.err
    again = cli("rank", "--method", "bptt", "--draws", "50", "--json", db=db_url)
    timing = {"seconds", "significance_seconds"}

    def scores(out):
        return {k: v for k, v in json.loads(out).items() if k not in timing}

    assert again.code == 0 and scores(again.out) == scores(r.out)
    q = cli("query", names[0], "--method", "bptt", "--top", "3", "--json", db=db_url)
    assert q.code == 0, q.err
    assert json.loads(q.out)
    c = cli("analyze", "class-influence", "--set", "bptt", "--json", "--out",
            str(tmp_path / "figs"), db=db_url)  # fmt: skip
    assert c.code == 0, c.err
    info = cli("db", "info", db=db_url)
    assert info.code == 0 and "attributescore" in info.out
    out = tmp_path / "scores.csv"
    r = cli("db", "export", "--what", "scores", "--out", str(out), db=db_url)
    assert r.code == 0, r.err
    assert out.read_text().count("\n") > 1
    r = cli("db", "export", "--what", "annotations", "--out", str(tmp_path / "a.json"), db=db_url)
    assert r.code == 0, r.err
    assert len(json.loads((tmp_path / "a.json").read_text())) == 200  # 100 images x 2 prompts


def test_claims_are_atomic_and_taken_over_from_a_dead_owner(db_url):
    from datetime import UTC, datetime

    from ddsem.db import claims
    from ddsem.db.tables import JobClaim

    if "://" in db_url:  # a server far from UTC: heartbeats must still be stored in UTC
        name = db_url.split("/")[-1].split("?")[0]
        _sql(db_url, f"ALTER DATABASE \"{name}\" SET timezone TO 'Pacific/Kiritimati'")
    db = open_db(db_url)
    a, b = claims.new_owner(), claims.new_owner()
    assert claims.claim(db, "k", a)
    assert claims.claim(db, "k", a)  # ours already
    assert not claims.claim(db, "k", b)  # a live owner holds it
    assert claims.held_by_others(db, "k", b) == [a]
    claims.heartbeat(db, "k", a)
    with db.session() as s:
        beat = s.get(JobClaim, "k").heartbeat
    assert abs((beat.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()) < 60
    claims.release(db, "k", a)
    assert claims.claim(db, "k", b)
    dead = f"{claims.HOST}:999999999:dead"
    assert claims.claim(db, "d", dead)
    assert claims.claim(db, "d", a)  # a dead owner's claim is taken over
    db.close()


# -- several processes on one PostgreSQL database ------------------------------------------------


def test_two_processes_finish_one_influence_run_on_postgresql(postgres_url, synthetic_path):
    from ddsem.db.influence import list_runs, load_influence
    from ddsem.db.sets import add_distilled_set

    rng = np.random.default_rng(0)
    db = open_db(postgres_url)
    add_distilled_set(db, "s", "dm", rng.normal(size=(6, 3, 32, 32)).astype(np.float32),
                      np.arange(6) % 10, dataset="cifar10", provenance={})  # fmt: skip
    db.close()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ddsem", "--db", postgres_url, "--device", "cpu"]
    command += ["influence", "--set", "s", "--width", "8", "--steps", "4", "--test-limit", "40"]
    command += ["--chunk", "1", "--data", str(synthetic_path), "--json"]
    procs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert "Traceback" not in err
        assert json.loads(out)[0]["status"] == "complete"
    db = open_db(postgres_url)
    (run,) = list_runs(db, 1)
    assert run.models_done == run.num_models == 7
    counts = table_counts(db)
    assert counts["influencerun"] == 1 and counts["influencemodel"] == 7
    assert counts["influencerow"] == 6 and counts["jobclaim"] == 0
    matrix, _ = load_influence(db, run.id)
    db.close()
    assert matrix.shape == (6, 40) and np.isfinite(matrix).all()
