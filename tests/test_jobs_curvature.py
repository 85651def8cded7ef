"""The curvature and landscape jobs driven directly (no argv) on the synthetic data: what a run
stores, that a re-run does nothing new, that an interrupted run resumes to the uninterrupted
result, that plan only reads, and that bad requests are refused where they are built."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest

from ddsem.errors import UserError
from ddsem.jobs import Recorder, Workspace
from ddsem.jobs import curvature as curv
from ddsem.jobs import landscape as land


def _add_set(ws, name="bptt-small", method="bptt", n=10):
    from ddsem.db.sets import add_distilled_set

    images = np.random.default_rng(0).normal(size=(n, 3, 32, 32)).astype(np.float32)
    return add_distilled_set(ws.db, name, method, images, np.arange(n) % 10)


def _request(synthetic, tmp_path, **kw):
    base = dict(
        methods=("bptt",), real=True, iterations=4, every=2, probes=4, probe_block=4,
        real_samples=16, density_at=(2,), lanczos_steps=3, train_samples=32, width=8, depth=2,
        data=synthetic, out=str(tmp_path / "fig"),
    )  # fmt: skip
    return curv.CurvatureRequest(**{**base, **kw})


def _dump(path) -> str:
    with sqlite3.connect(path) as con:
        return "\n".join(con.iterdump())


def _points(ws, run_id):
    from ddsem.db.curvature import read_points

    return [p.as_json() for p in read_points(ws.db, run_id)]


def test_a_curvature_run_stores_its_points_and_a_rerun_computes_none(
    workspace, synthetic, tmp_path
):
    _add_set(workspace)
    request = _request(synthetic, tmp_path)
    before = _dump(tmp_path / "jobs.db")
    planned = curv.plan(workspace, request)
    assert _dump(tmp_path / "jobs.db") == before  # plan only reads
    assert planned.run_id is None and planned.source_names == ["bptt-small", "real"]
    assert planned.checkpoints == [0, 2, 4] and len(planned.missing) == planned.wanted == 6
    assert planned.train_steps == 4
    assert {(m.source, m.iteration) for m in planned.missing if m.density} == {
        ("bptt-small", 2),
        ("real", 2),
    }

    result = curv.run(workspace, request)
    assert result.computed == 6 and result.wanted == 6 and len(result.points) == 6
    assert workspace.progress.phases == [("curvature", 4 + 6, 4 + 6)]
    assert _points(workspace, result.run_id) == [p.as_json() for p in result.points]
    assert all(np.isfinite(p.trace) and p.probes >= 2 for p in result.points)
    assert [(d.source, d.iteration) for d in result.densities()] == [
        ("bptt-small", 2),
        ("real", 2),
    ]
    assert all(0.0 <= d.negative_mass <= 1.0 and d.threshold <= 0 for d in result.densities())
    assert [it for it, _ in result.trace_rows()] == [0, 2, 4]
    assert all(f.is_file() for f in result.figures) and len(result.figures) == 2
    out = result.as_json()
    assert set(out) == {"run_id", "config", "sources", "real_note", "computed", "points",
                        "figures"}  # fmt: skip
    assert "unbiased estimate" in out["real_note"] and out["config"]["train_images"] == 32

    after = curv.plan(workspace, request)
    assert after.run_id == result.run_id and after.missing == []
    again = curv.run(workspace, request)
    assert again.computed == 0 and again.run_id == result.run_id
    assert [p.as_json() for p in again.points] == out["points"]
    assert len(workspace.progress.phases) == 1  # nothing to replay: no phase at all

    # another real sample size changes only the real source's row: only its points are redone
    fewer = replace(request, real_samples=8)
    assert {m.source for m in curv.plan(workspace, fewer).missing} == {"real"}
    assert len(curv.plan(workspace, fewer).missing) == 3


class _Interrupt(Recorder):
    """A Recorder that raises KeyboardInterrupt at the ``after``-th advance (a Ctrl-C)."""

    def __init__(self, after: int):
        super().__init__()
        self.after, self.seen = after, 0

    @contextmanager
    def phase(self, description, total):
        with super().phase(description, total) as advance:

            def interrupting(n=1):
                advance(n)
                self.seen += n
                if self.seen >= self.after:
                    raise KeyboardInterrupt

            yield interrupting


def test_an_interrupted_curvature_run_resumes_to_the_uninterrupted_points(synthetic, tmp_path):
    whole = Workspace.open(str(tmp_path / "whole.db"), device="cpu")
    _add_set(whole)
    request = _request(synthetic, tmp_path)
    reference = curv.run(whole, request)

    broken = Workspace.open(str(tmp_path / "broken.db"), device="cpu", progress=_Interrupt(5))
    _add_set(broken)
    with pytest.raises(KeyboardInterrupt):
        curv.run(broken, request)
    planned = curv.plan(broken, request)
    assert planned.run_id is not None and 0 < len(planned.missing) < 6  # some points were kept
    broken.progress = Recorder()
    resumed = curv.run(broken, request)
    assert resumed.computed == len(planned.missing)
    assert [p.as_json() for p in resumed.points] == [p.as_json() for p in reference.points]
    spectra = {(p.source, p.iteration): p.spectrum for p in reference.points}
    for p in resumed.points:
        if p.spectrum is not None:
            assert np.array_equal(p.spectrum, spectra[(p.source, p.iteration)])
    whole.db.close()
    broken.db.close()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"every": 0}, "--every must be at least 1, got 0"),
        ({"rel_err": 0.0}, "--rel-err must lie strictly between 0 and 1, got 0"),
        ({"rel_err": 1.5}, "--rel-err must lie strictly between 0 and 1, got 1.5"),
        ({"iterations": -1, "density_at": ()}, "--iterations must be at least 0, got -1"),
        ({"probes": 1}, "--probes must be at least 2, got 1"),
        ({"chunk_size": 0}, "--chunk-size must be at least 1, got 0"),
        ({"lanczos_runs": 0}, "--lanczos-runs must be at least 1, got 0"),
        ({"density_at": (0, 9)}, "--density-at 9 is beyond the run"),
        ({"density_at": (1, 1)}, "--density-at lists 1 more than once"),
        ({"methods": (), "real": False}, "name at least one source: --method, --set or --real"),
        ({"width": 0}, "--width and --depth must be at least 1"),
    ],
)
def test_bad_curvature_requests_are_refused_where_they_are_built(
    synthetic, tmp_path, changes, message
):
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(")):
        _request(synthetic, tmp_path, **changes)


def test_curvature_refusals_that_need_the_database(workspace, synthetic, tmp_path):
    _add_set(workspace)
    with pytest.raises(UserError, match="no distilled set made by method 'gm'"):
        curv.run(workspace, _request(synthetic, tmp_path, methods=("gm",)))
    with pytest.raises(UserError, match="--train-samples must be between 1 and 200, got 500"):
        curv.run(workspace, _request(synthetic, tmp_path, train_samples=500))
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="--out must be a folder"):
        curv.preflight(workspace, _request(synthetic, tmp_path, out=str(tmp_path / "file")))
    _add_set(workspace, name="real", method="dm")
    with pytest.raises(UserError, match="a distilled set is named 'real'"):
        curv.run(workspace, _request(synthetic, tmp_path, methods=("dm",)))
    with sqlite3.connect(tmp_path / "jobs.db") as con:
        assert con.execute("SELECT count(*) FROM curvaturerun").fetchone() == (0,)


def _landscape_request(synthetic, tmp_path, **kw):
    base = dict(
        grid=3, distilled_steps=5, test_samples=20, train_samples=32, width=8, depth=2,
        data=synthetic, out=str(tmp_path / "fig"),
    )  # fmt: skip
    return land.LandscapeRequest(**{**base, **kw})


def test_a_landscape_is_computed_once_and_reused(workspace, synthetic, tmp_path):
    _add_set(workspace)
    request = _landscape_request(synthetic, tmp_path)  # no set named: the only one
    planned = land.plan(workspace, request)
    assert planned.stored_id is None and planned.set.name == "bptt-small"
    first = land.run(workspace, request)
    assert first.reused is False and first.figure.is_file()
    assert first.record["sources"] == ["test", "distilled"] and first.record["test_images"] == 20
    assert [row[0] for row in first.point_rows()] == ["init", "real", "distilled"]
    assert first.params["train_images"] == 32 and first.set_name == "bptt-small"
    assert [d for d, _, _ in workspace.progress.phases] == ["landscape"]
    out = first.as_json()
    assert {"analysis_id", "reused", "params", "xs", "ys", "points", "figure"} <= set(out)

    assert land.plan(workspace, request).stored_id == first.analysis_id
    again = land.run(workspace, request)
    assert again.reused is True and again.analysis_id == first.analysis_id
    assert again.record == first.record and len(workspace.progress.phases) == 1


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"grid": 1}, "--grid must be at least 2, got 1"),
        ({"margin": -0.5}, "--margin must be at least 0, got -0.5"),
        ({"distilled_steps": 0}, "--distilled-steps must be at least 1, got 0"),
        ({"test_samples": 0}, "--test-samples must be at least 1, got 0"),
        ({"depth": 0}, "--width and --depth must be at least 1"),
    ],
)
def test_bad_landscape_requests_are_refused_where_they_are_built(
    synthetic, tmp_path, changes, message
):
    with pytest.raises(UserError, match="^" + message):
        _landscape_request(synthetic, tmp_path, **changes)


def test_landscape_without_a_set_named_needs_exactly_one(workspace, synthetic, tmp_path):
    request = _landscape_request(synthetic, tmp_path)
    with pytest.raises(UserError, match="no distilled set yet"):
        land.preflight(workspace, request)
    _add_set(workspace)
    _add_set(workspace, name="dm-small", method="dm")
    with pytest.raises(UserError, match="several distilled sets"):
        land.plan(workspace, request)
