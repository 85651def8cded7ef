"""The same job twice at once on one database: no crash, no unit done twice, one result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np

from ddsem.jobs import Workspace
from ddsem.jobs import influence as influence_job

ARGS = ["--width", "8", "--steps", "4", "--test-limit", "40", "--chunk", "2"]


def _set(db_path: str, n: int = 6) -> None:
    from ddsem.db import open_db
    from ddsem.db.sets import add_distilled_set

    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, 3, 32, 32)).astype(np.float32)
    labels = np.arange(n) % 10
    db = open_db(db_path)
    add_distilled_set(db, "s", "dm", images, labels, dataset="cifar10", provenance={})
    db.close()


def test_two_threads_split_the_models_and_train_each_once(tmp_path, synthetic, monkeypatch):
    from ddsem.influence import loo

    db_path = str(tmp_path / "twice.db")
    _set(db_path)
    trained: list[int] = []
    lock = threading.Lock()
    real = loo.train_and_evaluate

    def counting(*args, **kwargs):
        with lock:
            trained.extend(args[3])  # the model indices of the chunk
        return real(*args, **kwargs)

    monkeypatch.setattr(loo, "train_and_evaluate", counting)
    request = influence_job.InfluenceRequest(
        set_name="s", width=8, steps=4, test_limit=40, chunk=1, data=synthetic
    )
    results, errors = [], []

    def one() -> None:
        ws = Workspace.open(db_path, device="cpu")
        try:
            results.append(influence_job.run(ws, request))
        except BaseException as e:  # noqa: BLE001 - the test reports it
            errors.append(e)
        finally:
            ws.db.close()

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(trained) == [-1, 0, 1, 2, 3, 4, 5]  # every model exactly once
    ws = Workspace.open(db_path)
    runs = influence_job.show_runs(ws, "s").as_json()["runs"]
    assert [(r["status"], r["models_done"]) for r in runs] == [("complete", 7)]


def test_two_processes_at_once_finish_one_run_equal_to_a_single_process(tmp_path, synthetic_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    both = str(tmp_path / "both.db")
    alone = str(tmp_path / "alone.db")
    for db in (both, alone):
        _set(db)
    command = [sys.executable, "-m", "ddsem", "--device", "cpu", "influence", "--set", "s"]
    command += [*ARGS, "--data", str(synthetic_path), "--json"]
    procs = [
        subprocess.Popen(
            [*command, "--db", both],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert "Traceback" not in err
        assert json.loads(out)[0]["status"] == "complete"
    single = subprocess.run([*command, "--db", alone], env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr

    from ddsem.db import open_db
    from ddsem.db.influence import list_runs, load_influence

    matrices = []
    for path in (both, alone):
        db = open_db(path)
        (run,) = list_runs(db, 1)
        assert run.models_done == run.num_models == 7
        matrices.append(load_influence(db, run.id)[0])
        db.close()
    np.testing.assert_array_equal(matrices[0], matrices[1])  # bit-equal on the CPU


def _twice(target) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            target()
        except BaseException as e:  # noqa: BLE001 - the test reports it
            errors.append(e)

    threads = [threading.Thread(target=guarded) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def test_two_annotators_at_once_give_each_answer_once(tmp_path, synthetic, monkeypatch):
    from ddsem.annotate.color import ColorAnnotator
    from ddsem.jobs import annotate

    db_path = str(tmp_path / "answers.db")  # a new database: both processes create it
    given: list[int] = []
    lock = threading.Lock()
    real = ColorAnnotator.answer

    def counting(self, pixels, prompts):
        with lock:
            given.append(len(prompts))
        return real(self, pixels, prompts)

    monkeypatch.setattr(ColorAnnotator, "answer", counting)
    request = annotate.AnnotateRequest(annotator="color", batch_size=10, data=synthetic)

    def one() -> None:
        ws = Workspace.open(db_path, device="cpu")
        try:
            annotate.run(ws, request)
        finally:
            ws.db.close()

    assert _twice(one) == []
    assert sum(given) == 200  # 100 test images x 2 prompts, each answered once
    ws = Workspace.open(db_path)
    assert annotate.plan(ws, request).todo == []


def test_the_same_distillation_twice_at_once_makes_one_set_and_leaves_no_running_row(
    tmp_path, synthetic
):
    from ddsem.db.tables import DistillRun
    from ddsem.errors import UserError
    from ddsem.jobs import distill

    db_path = str(tmp_path / "distil.db")
    Workspace.open(db_path).db.close()
    request = distill.DistillRequest(
        "dm", ipc=1, iterations=3, width=8, batch_real=4, name="s3", data=synthetic
    )

    def one() -> None:
        ws = Workspace.open(db_path, device="cpu")
        try:
            distill.run(ws, request)
        finally:
            ws.db.close()

    errors = _twice(one)
    assert all(isinstance(e, UserError) for e in errors), errors
    assert len(errors) <= 1
    if errors:
        assert "being distilled right now" in str(errors[0]) or "exists" in str(errors[0])
    ws = Workspace.open(db_path)
    from sqlmodel import select

    with ws.db.session() as s:
        rows = s.exec(select(DistillRun)).all()
    assert [r.status for r in rows if r.status != "complete"] == []
    again = _twice(one)  # now the set exists: both refuse cleanly
    assert len(again) == 2 and all("exists" in str(e) for e in again)


def test_four_processes_creating_the_same_new_database_all_open_it(tmp_path):
    path = str(tmp_path / "new.db")

    def one() -> None:
        Workspace.open(path).db.close()

    errors: list[BaseException] = []
    threads = []
    for _ in range(4):
        t = threading.Thread(target=lambda: errors.extend(_twice(one)))
        threads.append(t)
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
