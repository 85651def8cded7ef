"""kill -9 in the middle of every resumable job, then the same command again: the result equals
an uninterrupted run's, with no duplicated or missing row."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _ddsem(db: str, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "ddsem", "--db", db, "--device", "cpu", *args]
    return subprocess.Popen(  # in the database's folder: figures land there, not in the repo
        command,
        env=ENV,
        cwd=os.path.dirname(db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _count(db: str, sql: str) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute(sql).fetchone()[0] or 0)
        finally:
            con.close()
    except sqlite3.Error:
        return 0  # not created yet


def _kill_when(db: str, args: list[str], sql: str, at_least: int, timeout: float = 120) -> bool:
    """Start ``ddsem ARGS``, SIGKILL it once ``sql`` counts ``at_least``; False if it finished
    first (then the test still checks the result, but says nothing about the kill)."""
    proc = _ddsem(db, *args)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if _count(db, sql) >= at_least:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    proc.wait()
    return False


def _run(db: str, *args: str) -> None:
    proc = _ddsem(db, *args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()


def _rows(db: str, sql: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _distilled(db_path: str) -> None:
    from ddsem.db import open_db
    from ddsem.db.sets import add_distilled_set

    rng = np.random.default_rng(0)
    db = open_db(db_path)
    images = rng.normal(size=(8, 3, 32, 32)).astype(np.float32)
    add_distilled_set(db, "s", "dm", images, np.arange(8) % 10, dataset="cifar10", provenance={})
    db.close()


@pytest.fixture
def dbs(tmp_path):
    return str(tmp_path / "killed.db"), str(tmp_path / "clean.db")


def test_influence_killed_mid_run_resumes_to_the_same_matrix(dbs, synthetic_path):
    killed, clean = dbs
    for db in dbs:
        _distilled(db)
    args = ["influence", "--set", "s", "--width", "8", "--steps", "80", "--chunk", "1"]
    args += ["--test-limit", "40", "--data", str(synthetic_path)]
    assert _kill_when(killed, args, "SELECT count(*) FROM influencemodel", 2)
    _run(killed, *args)
    _run(clean, *args)
    query = "SELECT model_index, losses FROM influencemodel ORDER BY model_index"
    assert _rows(killed, query) == _rows(clean, query)  # bit-equal, each model once
    rows = 'SELECT distilled_index, "values" FROM influencerow ORDER BY distilled_index'
    assert _rows(killed, rows) == _rows(clean, rows)
    assert _rows(killed, "SELECT status FROM influencerun") == [("complete",)]
    assert _rows(killed, "SELECT count(*) FROM jobclaim") == [(0,)]


def test_annotate_killed_mid_run_resumes_to_the_same_answers(dbs, synthetic_path):
    killed, clean = dbs
    args = ["annotate", "--annotator", "color", "--batch-size", "4", "--data", str(synthetic_path)]
    assert _kill_when(killed, args, "SELECT count(*) FROM annotation", 8)
    _run(killed, *args)
    _run(clean, *args)
    query = (
        'SELECT i.split, i."index", a.prompt_name, a.response FROM annotation a '
        "JOIN image i ON i.id = a.image_id ORDER BY 1, 2, 3"
    )
    assert _rows(killed, query) == _rows(clean, query)
    assert len(_rows(killed, query)) == 200


def test_distill_killed_mid_run_resumes_to_the_same_set(dbs, synthetic_path):
    killed, clean = dbs
    args = ["distill", "--method", "dm", "--ipc", "1", "--iterations", "60", "--width", "8"]
    args += ["--batch-real", "4", "--checkpoint-every", "5", "--name", "k"]
    args += ["--data", str(synthetic_path)]
    assert _kill_when(
        killed, args, "SELECT max(iteration) FROM distillrun WHERE checkpoint IS NOT NULL", 10
    )
    _run(killed, *args, "--resume")
    _run(clean, *args)
    query = 'SELECT d."index", d.tensor FROM distilledimage d ORDER BY 1'
    assert _rows(killed, query) == _rows(clean, query)  # bit-equal images
    assert [s for (s,) in _rows(killed, "SELECT status FROM distillrun")] == ["complete"]


def test_curvature_killed_mid_run_resumes_to_the_same_points(dbs, synthetic_path):
    killed, clean = dbs
    for db in dbs:
        _distilled(db)
    args = ["curvature", "--set", "s", "--real", "--real-samples", "60", "--iterations", "8"]
    args += ["--every", "1", "--probes", "6", "--width", "8", "--train-samples", "100"]
    args += ["--out", "figs", "--data", str(synthetic_path)]
    assert _kill_when(killed, args, "SELECT count(*) FROM curvaturepoint", 3)
    _run(killed, *args)
    _run(clean, *args)
    query = (
        "SELECT source, iteration, trace, trace_stderr, probes FROM curvaturepoint ORDER BY 1, 2"
    )
    assert _rows(killed, query) == _rows(clean, query)
    assert len(_rows(killed, query)) == 18


def test_evaluate_killed_mid_run_trains_only_what_is_missing_and_agrees(dbs, synthetic_path):
    killed, clean = dbs
    for db in dbs:
        _distilled(db)
    args = ["evaluate", "--set", "s", "--arch", "convnet", "--protocol", "paper,dc"]
    args += ["--runs", "2", "--width", "8", "--json", "--data", str(synthetic_path)]
    assert _kill_when(killed, args, "SELECT count(*) FROM analysisrun WHERE kind = 'evaluate'", 1)
    _run(killed, *args)
    _run(clean, *args)
    query = "SELECT params_json, result_json FROM analysisrun WHERE kind = 'evaluate' ORDER BY 1"
    assert _rows(killed, query) == _rows(clean, query)
    assert len(_rows(killed, query)) == 2


def test_landscape_killed_mid_computation_leaves_nothing_and_reruns_to_the_same_plane(
    dbs, synthetic_path
):
    """The landscape is stored in one transaction at its end: a kill leaves either no row or
    the complete grid (killed while drawing), and the next run gives what an uninterrupted one
    does."""
    killed, clean = dbs
    for db in dbs:
        _distilled(db)
    args = ["landscape", "--set", "s", "--grid", "7", "--width", "8", "--distilled-steps", "40"]
    args += ["--test-samples", "100", "--out", "figs", "--data", str(synthetic_path)]
    proc = _ddsem(killed, *args)
    time.sleep(4)  # past the start (~2 s of imports), inside the training and the grid
    finished_first = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not finished_first:
        assert _rows(killed, "SELECT count(*) FROM analysisrun WHERE status != 'complete'") == [
            (0,)
        ]
    _run(killed, *args)
    _run(clean, *args)
    query = "SELECT kind, status, params_json, result_json, data FROM analysisrun ORDER BY id"
    assert _rows(killed, query) == _rows(clean, query)
    assert len(_rows(killed, query)) == 1
