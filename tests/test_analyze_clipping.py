"""``ddsem analyze clipping`` on synthetic data: the clipped set and the outside fraction against
numpy, the retrained accuracy against a plain torch.optim.SGD loop, what a run stores, that a
re-run trains nothing, that a killed run resumes, and that bad input is refused in one line
with the database unchanged."""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager

import numpy as np
import pytest

from ddsem.errors import UserError
from ddsem.jobs import Recorder, Workspace
from ddsem.jobs.analyze import clipping as job

SMALL = dict(width=8, depth=2, runs=2, steps=6, test_limit=40)


def _images(n=10, scale=1.5, seed=0):
    return (np.random.default_rng(seed).normal(size=(n, 3, 32, 32)) * scale).astype(np.float32)


def _add(ws, name, method, images, labels=None):
    from ddsem.db.sets import add_distilled_set

    labels = np.arange(len(images)) % 10 if labels is None else labels
    return add_distilled_set(ws.db, name, method, images, labels)


def _dump(path) -> str:
    with sqlite3.connect(path) as con:
        return "\n".join(con.iterdump())


# -- compute against numpy -------------------------------------------------------------------


def test_clipped_pixels_lie_in_0_1_exactly_and_equal_np_clip():
    from ddsem.analyses.clipping import clip_images, pixel_stats
    from ddsem.data import denormalize

    x = _images(20, scale=3.0)
    clipped = clip_images(x)
    px = denormalize(clipped)
    assert clipped.dtype.is_floating_point and tuple(clipped.shape) == x.shape
    assert px.min() >= 0.0 and px.max() <= 1.0  # exactly, not within a rounding
    np.testing.assert_allclose(px, np.clip(denormalize(x), 0.0, 1.0), rtol=0, atol=1e-6)
    assert (px == 0).any() and (px == 1).any()  # the bounds are reached, not avoided
    assert pixel_stats(clipped).outside == 0.0
    inside = clip_images(clipped)  # clipping a clipped set changes nothing beyond rounding
    np.testing.assert_allclose(denormalize(inside), px, rtol=0, atol=1e-6)


def test_outside_fraction_equals_a_numpy_count():
    from ddsem.analyses.clipping import pixel_stats
    from ddsem.data import MEAN, STD

    x = _images(7, scale=2.0, seed=3)
    v = x.transpose(0, 2, 3, 1) * np.asarray(STD, np.float32) + np.asarray(MEAN, np.float32)
    stats = pixel_stats(x)
    assert stats.values == v.size
    assert stats.outside == np.count_nonzero((v < 0) | (v > 1)) / v.size
    assert stats.below == np.count_nonzero(v < 0) / v.size
    assert stats.above == np.count_nonzero(v > 1) / v.size
    assert (stats.minimum, stats.maximum) == (float(v.min()), float(v.max()))


def test_histograms_are_densities_and_real_pixels_are_never_outside():
    from ddsem.analyses.clipping import histogram_edges, real_histogram, set_histogram

    pixels = np.random.default_rng(0).integers(0, 256, size=(50, 32, 32, 3), dtype=np.uint8)
    edges = histogram_edges(100, (-1.0, 2.0))
    density, stats = real_histogram(pixels, 100, (-1.0, 2.0))
    assert np.isclose((density * np.diff(edges)).sum(), 1.0)
    assert stats.outside == 0.0 and stats.values == pixels.size
    assert density[edges[1:] <= 0].sum() == 0 and density[edges[:-1] >= 1].sum() == 0
    # bins of 64 whole levels each: the same as a plain count of uint8 / 255
    span = (-0.5 / 255, 1.0 + 0.5 / 255)
    coarse, _ = real_histogram(pixels, 4, span)
    plain, e = np.histogram(pixels.ravel() / 255.0, bins=histogram_edges(4, span))
    np.testing.assert_allclose(coarse * np.diff(e), plain / pixels.size, rtol=1e-9)
    x = _images(5, scale=4.0)
    d = set_histogram(x, 60, (-1.0, 2.0))
    assert (d * np.diff(histogram_edges(60, (-1.0, 2.0)))).sum() <= 1.0 + 1e-9


def test_paired_comparison_is_scipys_paired_t_test():
    from scipy.stats import ttest_rel

    from ddsem.analyses.clipping import paired_comparison

    a, b = [0.5, 0.6, 0.55], [0.4, 0.45, 0.5]
    d = paired_comparison(a, b).difference()
    ref = ttest_rel(b, a)
    assert d["n"] == 3 and np.isclose(d["mean"], np.mean(np.subtract(b, a)))
    assert np.isclose(d["t"], ref.statistic) and np.isclose(d["p"], ref.pvalue)
    assert np.isclose(d["sd"], np.std(np.subtract(b, a), ddof=1))
    one = paired_comparison([0.5], [0.4]).difference()
    assert one["p"] is None and one["sd"] is None and np.isclose(one["mean"], -0.1)
    assert paired_comparison([0.5, 0.6], [0.5, 0.6]).difference()["p"] is None


# -- the job -------------------------------------------------------------------------------------


def _plain_sgd_accuracy(images, labels, model_cfg, seed, steps, test_x, test_y) -> float:
    """An independent reference: torch.optim.SGD, full batch, from the engine's initial state."""
    import torch
    import torch.nn.functional as F

    from ddsem.models import build_model, init_state

    model = build_model(model_cfg)
    model.load_state_dict(init_state(model_cfg, seed))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        opt.step()
    with torch.no_grad():
        return float((model(test_x).argmax(1) == test_y).float().mean())


def test_a_run_stores_its_units_matches_plain_sgd_and_a_rerun_trains_nothing(
    workspace, synthetic, tmp_path, monkeypatch
):
    import torch

    from ddsem.analyses.clipping import clip_images
    from ddsem.data import normalize, stratified_indices
    from ddsem.db.analyses import list_analyses

    bptt = _images(10, scale=2.0)
    _add(workspace, "bptt-a", "bptt", bptt)
    _add(workspace, "dm-a", "dm", _images(10, scale=0.4, seed=1))
    request = job.ClippingRequest(
        methods=("bptt", "dm"), data=synthetic, out=str(tmp_path / "fig"), **SMALL
    )
    planned = job.plan(workspace, request)
    assert len(planned.missing) == 4 and [u.variant for u in planned.units[:2]] == [
        "stored",
        "clipped",
    ]
    result = job.run(workspace, request)
    assert result.trained == 4 and result.seeds == [0, 1] and result.test_images == 40
    assert workspace.progress.phases == [("clipping: retrain", 4 * 2 * 6, 4 * 2 * 6)]
    assert result.figure.is_file()
    stored = list_analyses(workspace.db, ("clipping",))
    assert [a.id for a in stored] == result.analysis_ids and len(stored) == 4
    assert all(a.figure_path == str(result.figure) for a in stored)
    out = result.as_json()
    assert {"analysis_ids", "figure", "sets", "real", "chance", "runs"} <= set(out)
    assert out["real"]["outside_fraction"] == 0.0 and "by construction" in out["real"]["note"]
    first = out["sets"][0]
    assert first["set"] == "bptt-a" and first["outside_fraction"] > 0.05
    assert len(first["stored"]["accuracies"]) == 2 and first["difference"]["n"] == 2
    json.dumps(out)  # JSON-ready

    # the engine's accuracy for one seed equals a plain SGD loop on the same init and data
    d = synthetic
    idx = stratified_indices(d.test_y, 40, 0)
    test_x, test_y = normalize(d.test_x[idx]), torch.from_numpy(d.test_y[idx].astype("int64"))
    labels = torch.from_numpy(np.arange(10) % 10)
    for variant, images in (("stored", torch.from_numpy(bptt)), ("clipped", clip_images(bptt))):
        ref = _plain_sgd_accuracy(images, labels, planned.model, 1, 6, test_x, test_y)
        got = out["sets"][0][variant]["accuracies"][1]
        assert abs(got - ref) <= 1 / 40 + 1e-6, (variant, got, ref)

    # an identical re-run trains nothing (the engine would fail) and redraws the figure
    import ddsem.train

    def refuse(*a, **k):
        raise AssertionError("a re-run must not train")

    monkeypatch.setattr(ddsem.train, "train_population", refuse)
    result.figure.unlink()
    workspace.progress.phases.clear()
    again = job.run(workspace, request)
    assert again.trained == 0 and workspace.progress.phases == [] and again.figure.is_file()
    assert again.as_json()["sets"] == out["sets"]


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


def test_a_killed_run_keeps_its_finished_units_and_resumes(synthetic, tmp_path):
    ws = Workspace.open(str(tmp_path / "k.db"), device="cpu", progress=_Interrupt(2 * 6 + 1))
    _add(ws, "bptt-a", "bptt", _images(10, scale=2.0))
    request = job.ClippingRequest(data=synthetic, out=str(tmp_path / "fig"), **SMALL)
    with pytest.raises(KeyboardInterrupt):
        job.run(ws, request)
    assert [u.variant for u in job.plan(ws, request).missing] == ["clipped"]
    ws.progress = Recorder()
    resumed = job.run(ws, request)
    assert resumed.trained == 1 and len(resumed.analysis_ids) == 2


# -- the command ---------------------------------------------------------------------------------


def test_the_command_prints_its_table_and_json(cli, synthetic_path, tmp_path):
    db = tmp_path / "test.db"
    ws = Workspace.open(str(db))
    _add(ws, "bptt-a", "bptt", _images(10, scale=2.0))
    ws.db.close()
    args = [
        "analyze", "clipping", "--set", "bptt-a", "--width", "8", "--depth", "2", "--runs", "1",
        "--steps", "3", "--test-limit", "20", "--data", str(synthetic_path),
        "--out", str(tmp_path / "figs"),
    ]  # fmt: skip
    r = cli(*args)
    assert r.code == 0, r.out + r.err
    text = " ".join(r.out.split())  # the table's title wraps
    assert "outside [0,1] %" in text and "chance 10%" in text and "real (train" in text
    assert "wrote" in text and "n = 1" in text
    r = cli(*args, "--json")
    assert r.code == 0
    out = json.loads(r.out)
    assert out["trained"] == 0 and len(out["analysis_ids"]) == 2
    assert out["sets"][0]["difference"]["p"] is None  # one seed: no test
    assert (tmp_path / "figs").is_dir() and out["figure"].endswith(".png")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--method", "gm"], "no distilled set made by method 'gm'"),
        (["--set", "nope"], "no distilled set named 'nope'"),
        (["--set", "small"], "has images of shape (3, 16, 16)"),
        (["--out", "afile"], "--out must be a folder"),
        (["--width", "0"], "--width must be positive"),
        (["--depth", "9"], "too deep"),
        (["--runs", "0"], "--runs must be at least 1"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--test-limit", "0"], "--test-limit must be at least 1"),
        (["--set", "bptt-a", "--test-limit", "100000"], "--test-limit must be between"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_the_database_unchanged(
    cli, synthetic_path, tmp_path, extra, words
):
    db = tmp_path / "test.db"
    ws = Workspace.open(str(db))
    _add(ws, "bptt-a", "bptt", _images(4))
    _add(ws, "small", "dm", np.zeros((2, 3, 16, 16), np.float32))
    ws.db.close()
    (tmp_path / "afile").write_text("x")
    before = _dump(db)
    r = cli("analyze", "clipping", "--data", str(synthetic_path), *extra)
    assert r.code == 2, r.out + r.err
    assert words in r.err + r.out
    assert len((r.err + r.out).strip().splitlines()) == 1
    assert _dump(db) == before


def test_requests_are_validated_where_they_are_built():
    for bad in (dict(runs=0), dict(steps=-1), dict(width=0), dict(seed=-1), dict(runs=1.5e400)):
        with pytest.raises(UserError):
            job.ClippingRequest(**bad)
