"""Jobs split between several processes (issue 19): ``ddsem ... --processes 2`` on the CPU (gloo)
stores what one process stores, a killed run re-launched finishes with no unit twice, and a
worker's error is one line."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
DDSEM = [sys.executable, "-m", "ddsem", "--device", "cpu"]
INFLUENCE = ["--width", "4", "--steps", "3", "--test-limit", "20", "--chunk", "1"]
CURVATURE = [
    "--real", "--width", "4", "--depth", "2", "--train-samples", "32", "--iterations", "4",
    "--every", "1", "--probes", "2", "--probe-block", "2", "--real-samples", "16",
    "--lanczos-steps", "3", "--density-at", "2",
]  # fmt: skip


def _ddsem(db: str, *args: str, processes: int = 1, timeout: int = 240):
    extra = ["--processes", str(processes)] if processes > 1 else []
    return subprocess.run(
        [*DDSEM, "--db", db, *args, *extra], env=ENV, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def _set(db_path: str, n: int = 5) -> None:
    from ddsem.db import open_db
    from ddsem.db.sets import add_distilled_set

    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, 3, 32, 32)).astype(np.float32)
    db = open_db(db_path)
    add_distilled_set(db, "s", "bptt", images, np.arange(n) % 10, dataset="cifar10", provenance={})
    db.close()


def _rows(path: str, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as con:
        return con.execute(sql).fetchall()


MODELS = "SELECT run_id, model_index, losses, accuracy FROM influencemodel ORDER BY 1, 2"


@contextmanager
def _one_thread():
    """This (pytest) process computing as a worker does (OMP_NUM_THREADS=1): bit-equal CPU sums."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _single(db: str, job, request) -> None:
    """One process's run, here in the test process (a subprocess costs seconds of imports)."""
    from ddsem.jobs import Workspace

    ws = Workspace.open(db, device="cpu")
    try:
        with _one_thread():
            job.run(ws, request)
    finally:
        ws.db.close()


@pytest.fixture(scope="module")
def single_influence(tmp_path_factory, synthetic_path) -> str:
    """One process's influence run (seeds 0 and 1), the request of INFLUENCE: what every
    sharded run must equal."""
    from ddsem.jobs import influence

    db = str(tmp_path_factory.mktemp("single") / "one.db")
    _set(db)
    request = influence.InfluenceRequest(
        set_name="s", seeds=(0, 1), width=4, steps=3, test_limit=20, chunk=1,
        data=str(synthetic_path),
    )  # fmt: skip
    _single(db, influence, request)
    return db


def _same_influence(path: str, reference: str) -> None:
    from ddsem.db import open_db
    from ddsem.db.influence import list_runs, load_influence

    mine, theirs = _rows(path, MODELS), _rows(reference, MODELS)
    assert len(mine) == len({(r[0], r[1]) for r in mine}) == 2 * 6  # no model twice
    assert mine == theirs  # the stored losses and accuracies, bit for bit
    matrices = []
    for p in (path, reference):
        db = open_db(p)
        runs = list_runs(db, 1)
        assert [(r.seed, r.status, r.models_done) for r in runs] == [
            (0, "complete", 6),
            (1, "complete", 6),
        ]
        matrices.append([load_influence(db, r.id)[0] for r in runs])
        db.close()
    for a, b in zip(*matrices, strict=True):
        np.testing.assert_array_equal(a, b)


def test_two_processes_store_the_influence_rows_of_one(tmp_path, synthetic_path, single_influence):
    db = str(tmp_path / "two.db")
    _set(db)
    done = _ddsem(db, "influence", "--set", "s", "--seeds", "0,1", *INFLUENCE, "--json",
                  "--data", str(synthetic_path), processes=2)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [s["status"] for s in json.loads(done.stdout)] == [
        "complete",
        "complete",
    ]  # printed once
    assert "Traceback" not in done.stderr
    _same_influence(db, single_influence)
    owners = {o for (o,) in _rows(db, "SELECT owner FROM jobclaim")}
    assert owners == set()  # every claim released


def test_a_killed_sharded_run_relaunched_finishes_with_no_model_twice(
    tmp_path, synthetic_path, single_influence
):
    db = str(tmp_path / "killed.db")
    _set(db)
    command = [*DDSEM, "--db", db, "influence", "--set", "s", "--seeds", "0,1", *INFLUENCE,
               "--data", str(synthetic_path), "--processes", "2"]  # fmt: skip
    launcher = subprocess.Popen(
        command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    stored = 0
    while time.monotonic() < deadline and launcher.poll() is None:
        try:
            stored = len(_rows(db, "SELECT model_index FROM influencemodel"))
        except sqlite3.OperationalError:
            stored = 0  # not created yet, or locked for a moment
        if stored >= 2:
            break
        time.sleep(0.05)
    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and both workers, mid-run
    launcher.wait()
    assert 2 <= stored < 12, "the run was not caught mid-way"
    again = _ddsem(db, "influence", "--set", "s", "--seeds", "0,1", *INFLUENCE,
                   "--data", str(synthetic_path), processes=2)  # fmt: skip
    assert again.returncode == 0, again.stderr
    _same_influence(db, single_influence)


def test_two_processes_give_the_colour_answers_of_one(tmp_path, synthetic_path):
    from ddsem.jobs import annotate

    answers = (
        "SELECT image_id, prompt_name, annotator, model, response FROM annotation ORDER BY 1, 2"
    )
    one, two = str(tmp_path / "one.db"), str(tmp_path / "two.db")
    request = annotate.AnnotateRequest(
        annotator="color", limit=40, batch_size=8, data=str(synthetic_path)
    )
    _single(one, annotate, request)
    done = _ddsem(two, "annotate", "--annotator", "color", "--limit", "40", "--batch-size", "8",
                  "--data", str(synthetic_path), processes=2)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("wrote ") == 1  # the main process alone prints
    stored = [_rows(db, answers) for db in (one, two)]
    assert len(stored[0]) == 80 and len({r[:2] for r in stored[1]}) == 80  # none twice
    assert stored[1] == stored[0]


def test_two_processes_measure_the_curvature_points_of_one(tmp_path, synthetic_path):
    points = (
        "SELECT source, iteration, trace, trace_stderr, probes, top_eigenvalue, density "
        "FROM curvaturepoint ORDER BY 1, 2"
    )
    from ddsem.jobs import curvature

    one, two = str(tmp_path / "one.db"), str(tmp_path / "two.db")
    request = curvature.CurvatureRequest(
        real=True, width=4, depth=2, train_samples=32, iterations=4, every=1, probes=2,
        probe_block=2, real_samples=16, lanczos_steps=3, density_at=(2,),
        out=str(tmp_path / "fig1"), data=str(synthetic_path),
    )  # the request of CURVATURE  # fmt: skip
    _single(one, curvature, request)
    done = _ddsem(two, "curvature", *CURVATURE, "--out", str(tmp_path / "fig2"),
                  "--data", str(synthetic_path), processes=2)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fig2" / "curvature-run1-trace.png").exists()  # drawn by the main one
    for db in (one, two):
        assert _rows(db, "SELECT status FROM curvaturerun") == [("complete",)]
        assert _rows(db, "SELECT count(*) FROM jobclaim") == [(0,)]
    stored = [_rows(db, points) for db in (one, two)]
    assert len(stored[0]) == 5  # "real" at iterations 0..4
    assert stored[1] == stored[0]


def test_a_worker_error_is_one_line_and_a_non_zero_exit(tmp_path, synthetic_path):
    done = _ddsem(str(tmp_path / "none.db"), "influence", "--set", "nope", *INFLUENCE,
                  "--data", str(synthetic_path), processes=2)  # fmt: skip
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0], lines


# -- the pieces, without processes ------------------------------------------------------------------


class _Partial:
    """accelerate's PartialState.split_between_processes for process ``index`` of ``count``."""

    def __init__(self, index: int, count: int):
        self.index, self.count = index, count

    def split_between_processes(self, items):
        from contextlib import contextmanager

        @contextmanager
        def split():
            per, extra = divmod(len(items), self.count)
            start = self.index * per + min(self.index, extra)
            yield items[start : start + per + (self.index < extra)]

        return split()


def test_each_process_takes_its_share_first_then_the_others_from_the_far_end():
    from ddsem.runtime import ProcessState

    first = ProcessState(0, 2, 0, _Partial(0, 2))
    second = ProcessState(1, 2, 1, _Partial(1, 2))
    units = [-1, 0, 1, 2, 3, 4, 5]
    assert first.split(units) == [-1, 0, 1, 2] and second.split(units) == [3, 4, 5]
    assert first.mine_first(units) == [-1, 0, 1, 2, 5, 4, 3]
    assert second.mine_first(units) == [3, 4, 5, 2, 1, 0, -1]
    assert ProcessState().mine_first(units) == units


def test_the_launcher_drops_processes_and_names_the_failed_worker(tmp_path):
    from ddsem.jobs.shard import _failure, without_processes

    argv = ["--db", "x", "influence", "--processes", "2", "--set", "s", "--processes=3"]
    assert without_processes(argv) == ["--db", "x", "influence", "--set", "s"]
    logs = [str(tmp_path / f"{r}.err") for r in range(2)]
    for log, text in zip(logs, ["", "progress\nerror: database is locked\n"], strict=True):
        (tmp_path / log).write_text(text)
    assert _failure([0, 0], logs) is None
    assert _failure([2, -15], logs) == (2, "")  # worker 0 printed its own line
    assert _failure([-15, 2], logs) == (2, "process 1 of 2: database is locked")
    assert _failure([-15, -9], logs) == (1, "process 1 of 2: killed by signal 9")
