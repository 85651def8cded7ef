"""The influence jobs driven directly (no argv) on synthetic images: what a run stores, that a
repeat does nothing, that an interrupted run resumes to the same bits, that a conflicting
config is refused without a write, the request checks, and the reads of ``show`` and ``check``."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
import torch

from ddsem.errors import UserError
from ddsem.jobs import Recorder, Workspace, influence_check
from ddsem.jobs import influence as job

N = 6  # distilled images: N + 1 models per seed
STEPS = 5


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _add_set(ws: Workspace, name: str = "tiny", n: int = N) -> None:
    from ddsem.db.sets import add_distilled_set

    rng = np.random.default_rng(3)
    images = rng.normal(size=(n, 3, 32, 32)).astype(np.float32)
    add_distilled_set(ws.db, name, "bptt", images, np.arange(n) % 10)


def _request(synthetic, **kw) -> job.InfluenceRequest:
    base = dict(
        set_name="tiny", width=8, steps=STEPS, test_limit=30, top_k=5, chunk=2, data=synthetic
    )
    return job.InfluenceRequest(**{**base, **kw})


def _db_file(tmp_path, name: str = "jobs.db"):
    return tmp_path / name


def _snapshot(path) -> dict:
    with sqlite3.connect(path) as con:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        counts = {t: con.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}
        counts["runs"] = con.execute(
            "select id, seed, status, config_hash from influencerun order by id"
        ).fetchall()
    return counts


def _matrix(ws: Workspace, seed: int = 0, context: str = "distilled") -> np.ndarray:
    from ddsem.db.influence import find_run, load_influence
    from ddsem.db.sets import find_set

    run = find_run(ws.db, find_set(ws.db, "tiny").id, seed, context)
    assert run is not None and run.status == "complete"
    return load_influence(ws.db, run.id)[0]


class Interrupting(Recorder):
    """A Recorder whose advance raises KeyboardInterrupt after ``after`` steps (a Ctrl-C)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.steps = 0

    @contextmanager
    def phase(self, description: str, total: int):
        with super().phase(description, total) as advance:

            def interrupting(n: int = 1) -> None:
                self.steps += n
                if self.steps > self.after:
                    raise KeyboardInterrupt
                advance(n)

            yield interrupting


def test_constants_agree_with_the_engine():
    from ddsem.influence import loo

    assert job.CONTEXTS == loo.CONTEXTS
    assert job.REFERENCE == loo.REFERENCE


def test_run_stores_n_plus_one_models_per_seed_and_complete_runs(workspace, synthetic, tmp_path):
    _add_set(workspace)
    result = job.run(workspace, _request(synthetic, seeds=(0, 1)))

    assert [s["seed"] for s in result.as_json()] == [0, 1]
    first = result.as_json()[0]
    assert set(first) == {
        "set", "run_id", "seed", "context", "status", "skipped", "num_models", "num_test",
        "full_accuracy", "device", "wall_seconds", "estimator",
    }  # fmt: skip
    assert first["status"] == "complete" and not first["skipped"]
    assert first["num_models"] == N + 1 and first["num_test"] == 30
    counts = _snapshot(_db_file(tmp_path))
    assert counts["influencemodel"] == 2 * (N + 1)
    assert counts["influencerow"] == 2 * N
    assert counts["influencetopk"] == 2 * N * 5
    assert [(seed, status) for _, seed, status, _ in counts["runs"]] == [
        (0, "complete"),
        (1, "complete"),
    ]
    assert _matrix(workspace).shape == (N, 30)
    notes = workspace.progress.notes
    assert len(notes) == 2 and "seed 0: 7 models on 30 test images" in notes[0]
    assert "full-set model test accuracy" in notes[0]
    phases = workspace.progress.phases
    assert phases == [
        ("seed 0: model-steps", (N + 1) * STEPS, (N + 1) * STEPS),
        ("seed 1: model-steps", (N + 1) * STEPS, (N + 1) * STEPS),
    ]


def test_a_second_identical_run_does_nothing(workspace, synthetic, tmp_path):
    _add_set(workspace)
    req = _request(synthetic, seeds=(0, 1))
    job.run(workspace, req)
    before = _snapshot(_db_file(tmp_path))
    workspace.progress = Recorder()
    again = job.run(workspace, req)
    assert _snapshot(_db_file(tmp_path)) == before
    assert all(s["skipped"] for s in again.as_json())
    assert len(workspace.progress.notes) == 2
    assert all("already complete" in n and "nothing to do" in n for n in workspace.progress.notes)
    assert workspace.progress.phases == []  # nothing trained
    assert [s.status for s in job.plan(workspace, req).seeds] == ["complete", "complete"]


def test_an_interrupted_run_resumes_to_the_same_bits(workspace, synthetic, tmp_path):
    _add_set(workspace)
    req = _request(synthetic)
    # Chunks of 2 models x 5 steps: interrupted in the third chunk, after two were stored.
    workspace.progress = Interrupting(after=2 * 2 * STEPS + 3)
    with pytest.raises(KeyboardInterrupt):
        job.run(workspace, req)
    counts = _snapshot(_db_file(tmp_path))
    assert [status for _, _, status, _ in counts["runs"]] == ["running"]
    assert counts["influencemodel"] == 4 and counts["influencerow"] == 0

    (seed_plan,) = job.plan(workspace, req).seeds
    assert seed_plan.status == "resume" and seed_plan.models_done == 4
    assert seed_plan.missing == (3, 4, 5)  # the reference and images 0..2 are stored

    workspace.progress = Recorder()
    job.run(workspace, req)
    assert workspace.progress.phases == [("seed 0: model-steps", 3 * STEPS, 3 * STEPS)]
    resumed = _matrix(workspace)

    other = Workspace.open(str(_db_file(tmp_path, "other.db")), device="cpu")
    try:
        _add_set(other)
        job.run(other, req)
        np.testing.assert_array_equal(resumed, _matrix(other))
    finally:
        other.db.close()


def test_a_conflicting_config_is_refused_and_overwrite_replaces_it(workspace, synthetic, tmp_path):
    _add_set(workspace)
    job.run(workspace, _request(synthetic))
    before = _snapshot(_db_file(tmp_path))
    changed = _request(synthetic, steps=STEPS + 1)
    with pytest.raises(UserError, match=rf"train.steps {STEPS} -> {STEPS + 1}.*--overwrite"):
        job.run(workspace, changed)
    with pytest.raises(UserError, match="another configuration"):
        job.plan(workspace, changed)
    assert _snapshot(_db_file(tmp_path)) == before

    (seed_plan,) = job.plan(workspace, replace(changed, overwrite=True)).seeds
    assert seed_plan.status == "replace" and len(seed_plan.missing) == N + 1
    job.run(workspace, replace(changed, overwrite=True))
    after = _snapshot(_db_file(tmp_path))
    assert len(after["runs"]) == 1 and after["runs"][0][2] == "complete"
    assert after["runs"][0][3] != before["runs"][0][3]
    assert after["influencemodel"] == N + 1
    from ddsem.db.influence import list_runs

    (run,) = list_runs(workspace.db, 1)
    assert run.config["train"]["steps"] == STEPS + 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"seeds": ()}, "--seeds is empty"),
        ({"seeds": (0, 1, 0)}, "lists 0 more than once"),
        ({"seeds": (-1,)}, "--seeds must be non-negative"),
        ({"width": 0}, "--width must be positive, got 0"),
        ({"steps": -2}, "--steps must be positive, got -2"),
        ({"context": "mixed"}, "unknown --context 'mixed': use distilled or real"),
        ({"test_limit": 0}, "--test-limit must be a positive number of test images, got 0"),
        ({"lr": 0.0}, "--lr must be positive"),
        ({"chunk": -1}, "--chunk must be 0"),
        ({"selection_seed": -1}, "--seed must be a non-negative"),
    ],
)
def test_bad_request_values_are_refused_at_construction(values, message):
    with pytest.raises(UserError, match=message):
        job.InfluenceRequest(set_name="tiny", **values)


def test_bad_show_and_check_values():
    with pytest.raises(UserError, match="--top must be positive"):
        job.ShowRequest(top=0)
    with pytest.raises(UserError, match="unknown --context"):
        job.ShowRequest(context="both")


def test_plan_writes_nothing_and_says_what_is_missing(workspace, synthetic, tmp_path):
    _add_set(workspace)
    before = _snapshot(_db_file(tmp_path))
    p = job.plan(workspace, _request(synthetic, seeds=(0, 2), context="real", real_images=20))
    assert _snapshot(_db_file(tmp_path)) == before  # not even the test images are registered
    assert [(s.seed, s.status, s.models_done) for s in p.seeds] == [(0, "new", 0), (2, "new", 0)]
    assert p.seeds[0].missing == (-1, *range(N))
    assert p.num_models == N + 1 and p.missing_models == 2 * (N + 1)
    assert len(p.test_indices) == 30 and p.real_indices is not None and len(p.real_indices) == 20
    assert p.config["real_indices"] == p.real_indices.tolist()
    assert p.training.model.width == 8 and p.training.influence.context == "real"
    assert job.Training.from_config(p.config).model == p.training.model


def test_refuses_sets_leave_one_out_cannot_use(workspace, synthetic, tmp_path):
    _add_set(workspace, "single", n=1)
    before = _snapshot(_db_file(tmp_path))
    with pytest.raises(UserError, match="at least 2"):
        job.run(workspace, _request(synthetic, set_name="single"))
    with pytest.raises(UserError, match="no distilled set named 'nope'"):
        job.plan(workspace, _request(synthetic, set_name="nope"))
    assert _snapshot(_db_file(tmp_path)) == before


def test_show_reads_the_stored_runs(workspace, synthetic):
    _add_set(workspace)
    job.run(workspace, _request(synthetic, seeds=(0, 1)))
    runs = job.show_runs(workspace, "tiny")
    assert [(r.seed, r.status, r.models_done, r.width, r.steps) for r in runs.runs] == [
        (0, "complete", N + 1, 8, STEPS),
        (1, "complete", N + 1, 8, STEPS),
    ]
    assert set(runs.as_json()) == {"set", "runs"}

    matrix = _matrix(workspace, 0)
    from ddsem.db.influence import list_runs, load_influence

    test_indices = load_influence(workspace.db, list_runs(workspace.db, 1)[0].id)[1]
    one = job.show_image(workspace, "tiny", image=2, seed=0, top=3)
    order = np.argsort(-matrix[2], kind="stable")[:3]
    assert [t.test_index for t in one.top] == test_indices[order].tolist()
    assert one.scope == "seed:0" and one.seeds == (0,) and one.stored_top_k is None
    assert set(one.as_json()) == {"set", "image", "label", "class", "context", "scope", "seeds", "top", "estimator"}  # fmt: skip
    assert job.show_image(workspace, "tiny", image=2, seed=0, top=8).stored_top_k == 5

    mean = job.show_image(workspace, "tiny", image=2, top=4)
    expected = (matrix[2].astype(np.float32) + _matrix(workspace, 1)[2]) / 2
    assert mean.scope == "mean" and mean.seeds == (0, 1)
    assert [t.value for t in mean.top] == pytest.approx(np.sort(expected)[::-1][:4], abs=1e-6)
    with pytest.raises(UserError, match="no complete distilled-context run for seed 5"):
        job.show_image(workspace, "tiny", image=2, seed=5)
    with pytest.raises(UserError, match="--image must be in 0..5"):
        job.show_image(workspace, "tiny", image=N)
    with pytest.raises(UserError, match="no complete real-context influence run"):
        job.show_image(workspace, "tiny", image=0, context="real")


def test_check_reports_and_writes_figures(workspace, synthetic, tmp_path):
    _add_set(workspace)
    job.run(workspace, _request(synthetic, seeds=(0, 1)))
    job.run(workspace, _request(synthetic, context="real", real_images=20))
    out = tmp_path / "figs"
    report = influence_check.run(
        workspace, influence_check.CheckRequest("tiny", out=str(out), data=synthetic)
    )
    keys = {"set", "runs", "figures", "seed_consistency", "context", "pixel_distance"}
    assert set(report.as_json()) == keys | {"noise_floor", "tf32"}
    assert report.runs == {"distilled": [0, 1], "real": [0]}
    assert report.seed_consistency[0]["seeds"] == [0, 1]
    (floor,) = report.noise_floor or []
    assert "loop, cpu" in floor["compared"] and "batched, cpu" in floor["compared"]
    assert {p.rsplit("/", 1)[-1] for p in report.figures} == {
        "seeds.png",
        "context.png",
        "pixel_distance.png",
    }
    assert all((out / f).read_bytes()[:4] == b"\x89PNG" for f in ("seeds.png", "context.png"))
    lines = report.describe()
    assert lines[0] == f"set 'tiny': {N} distilled images"
    assert any(line.startswith("seed 0 vs seed 1: Pearson overall") for line in lines)
    assert lines[-1].startswith("wrote ") and report.tf32 in lines
    assert workspace.progress.phases[-1][0] == "noise floor: reference model alone (batched)"

    quiet = influence_check.run(workspace, influence_check.CheckRequest("tiny", data=synthetic, noise=False))  # fmt: skip
    assert quiet.noise_floor is None and quiet.figures == []
    with pytest.raises(UserError, match="--out is a file"):
        influence_check.run(
            workspace,
            influence_check.CheckRequest("tiny", out=str(out / "seeds.png"), data=synthetic),
        )
