"""``ddsem analyze mixing`` on synthetic data: the real images drawn (class-stratified, nested,
the baseline's apart, from the recorded seed), one model of the population against a plain
torch.optim.SGD full-batch loop on the same mixed images and initial state, what a run stores,
that a re-run trains nothing, that a killed run resumes, and that bad input is refused in one
line with the database unchanged."""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager

import numpy as np
import pytest

from ddsem.errors import UserError
from ddsem.jobs import Recorder, Workspace
from ddsem.jobs.analyze import mixing as job

SMALL = dict(width=8, depth=2, runs=2, steps=4, test_limit=40, counts=(0, 3))


def _images(n=10, scale=1.0, seed=0):
    return (np.random.default_rng(seed).normal(size=(n, 3, 32, 32)) * scale).astype(np.float32)


def _add(ws, name, method, images, labels=None):
    from ddsem.db.sets import add_distilled_set

    labels = np.arange(len(images)) % 10 if labels is None else labels
    return add_distilled_set(ws.db, name, method, images, labels)


def _dump(path) -> str:
    with sqlite3.connect(path) as con:
        return "\n".join(con.iterdump())


# -- the real images drawn -----------------------------------------------------------------------


def test_real_images_are_stratified_nested_reproducible_and_apart_from_the_baselines():
    from ddsem.analyses.mixing import check_counts, class_permutations, draw_base, draw_extra

    labels = np.repeat(np.arange(4), 12)
    np.random.default_rng(5).shuffle(labels)
    perms = class_permutations(labels, seed=3)
    small, large = draw_extra(perms, 2), draw_extra(perms, 7)
    assert np.bincount(labels[large], minlength=4).tolist() == [7] * 4
    assert set(small) <= set(large) and len(set(large)) == len(large)  # nested, no repeats
    base = draw_base(perms, [2, 1, 3, 0])
    assert np.bincount(labels[base], minlength=4).tolist() == [2, 1, 3, 0]
    assert not set(base) & set(draw_extra(perms, 12 - 3))  # apart while the counts fit
    again = class_permutations(labels, seed=3)
    assert np.array_equal(draw_extra(again, 7), large)  # the seed fixes the draw
    assert not np.array_equal(draw_extra(class_permutations(labels, seed=4), 7), large)
    assert len(draw_extra(perms, 0)) == 0
    classes = ("a", "b", "c", "d")
    check_counts(labels, [0, 9], [[3, 3, 3, 3]], classes)
    with pytest.raises(UserError, match="at most 9 can be added"):
        check_counts(labels, [0, 10], [[3, 3, 3, 3]], classes)
    with pytest.raises(UserError, match="the random-real baseline needs 13"):
        check_counts(labels, [0], [[13, 1, 1, 1]], classes)


def test_paired_differences_are_scipys_paired_t_test():
    from scipy.stats import ttest_rel

    from ddsem.analyses.mixing import paired, summary

    a, b = [0.5, 0.6, 0.55], [0.4, 0.45, 0.5]
    d, ref = paired(a, b), ttest_rel(b, a)
    assert d["n"] == 3 and np.isclose(d["mean"], np.mean(np.subtract(b, a)))
    assert np.isclose(d["t"], ref.statistic) and np.isclose(d["p"], ref.pvalue)
    assert paired([0.5], [0.4])["p"] is None and summary([0.5])["sd"] is None
    assert np.isclose(summary(a)["sd"], np.std(a, ddof=1))


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

    from ddsem.analyses.mixing import class_permutations, draw_extra
    from ddsem.data import normalize, stratified_indices
    from ddsem.db.analyses import list_analyses

    dm = _images(10, scale=0.5)
    _add(workspace, "dm-a", "dm", dm)
    request = job.MixingRequest(
        methods=("dm",), data=synthetic, out=str(tmp_path / "fig"), seed=7, **SMALL
    )
    planned = job.plan(workspace, request)
    assert [(u.line.role, u.count) for u in planned.units] == [
        ("set", 0), ("set", 3), ("random-real", 0), ("random-real", 3),
    ]  # fmt: skip
    result = job.run(workspace, request)
    assert result.trained == 4 and result.seeds == [7000, 7001] and result.draw_seed == 7
    assert workspace.progress.phases == [("mixing: train", 4 * 2 * 4, 4 * 2 * 4)]
    assert result.figure.is_file()
    stored = list_analyses(workspace.db, ("mixing",))
    assert [a.id for a in stored] == result.analysis_ids and len(stored) == 4
    assert all(a.figure_path == str(result.figure) for a in stored)
    out = result.as_json()
    assert {"analysis_ids", "figure", "lines", "chance", "runs", "protocol", "counts"} <= set(out)
    protocol = "distilled-data protocol: 4 full-batch steps, SGD lr 0.01, momentum 0.9"
    assert out["protocol"] == protocol
    json.dumps(out)  # JSON-ready
    mixed, rand = out["lines"]
    assert mixed["name"] == "dm-a" and rand["role"] == "random-real" and rand["ipc"] == 1
    assert [p["images"] for p in mixed["points"]] == [10, 40]
    assert [p["images"] for p in rand["points"]] == [10, 40]
    assert mixed["points"][0]["vs_zero"] is None and mixed["points"][1]["vs_zero"]["n"] == 2
    assert mixed["points"][1]["vs_random"]["n"] == 2 and rand["points"][1]["vs_random"] is None

    # the real images: drawn from the recorded seed, the same extras for the set and baseline
    units = {(a.params["role"], a.params["count"]): a.result for a in stored}
    extra = units[("set", 3)]["extra_indices"]
    perms = class_permutations(synthetic.train_y, 7)
    assert extra == draw_extra(perms, 3).tolist() == units[("random-real", 3)]["extra_indices"]
    assert np.bincount(synthetic.train_y[extra]).tolist() == [3] * 10
    base = units[("random-real", 3)]["base_indices"]
    assert len(base) == 10 and not set(base) & set(extra)

    # one model of the population equals a plain SGD loop on the same mixed images and init
    d = synthetic
    idx = stratified_indices(d.test_y, 40, 0)
    test_x, test_y = normalize(d.test_x[idx]), torch.from_numpy(d.test_y[idx].astype("int64"))
    x = torch.cat([torch.from_numpy(dm), normalize(d.train_x[extra])])
    y = torch.cat([torch.from_numpy(np.arange(10) % 10), torch.from_numpy(d.train_y[extra])])
    ref = _plain_sgd_accuracy(x, y, planned.model, 7001, 4, test_x, test_y)
    got = mixed["points"][1]["accuracies"][1]
    assert abs(got - ref) <= 1 / 40 + 1e-6, (got, ref)

    # an identical re-run trains nothing (the engine would fail) and redraws the figure
    import ddsem.train

    def refuse(*a, **k):
        raise AssertionError("a re-run must not train")

    monkeypatch.setattr(ddsem.train, "train_population", refuse)
    result.figure.unlink()
    workspace.progress.phases.clear()
    again = job.run(workspace, request)
    assert again.trained == 0 and workspace.progress.phases == [] and again.figure.is_file()
    assert [p["accuracies"] for ln in again.as_json()["lines"] for p in ln["points"]] == [
        p["accuracies"] for ln in out["lines"] for p in ln["points"]
    ]


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
    small = {**SMALL, "runs": 1, "steps": 2, "width": 4}
    ws = Workspace.open(str(tmp_path / "k.db"), device="cpu", progress=_Interrupt(2 + 1))
    _add(ws, "dm-a", "dm", _images(10))
    request = job.MixingRequest(data=synthetic, out=str(tmp_path / "fig"), **small)
    with pytest.raises(KeyboardInterrupt):
        job.run(ws, request)
    missing = [(u.line.role, u.count) for u in job.plan(ws, request).missing]
    assert missing == [("set", 3), ("random-real", 0), ("random-real", 3)]
    ws.progress = Recorder()
    resumed = job.run(ws, request)
    assert resumed.trained == 3 and len(resumed.analysis_ids) == 4


# -- the command ---------------------------------------------------------------------------------


def test_the_command_prints_its_tables_and_json(cli, synthetic_path, tmp_path):
    db = tmp_path / "test.db"
    ws = Workspace.open(str(db))
    _add(ws, "dm-a", "dm", _images(10))
    ws.db.close()
    args = [
        "analyze", "mixing", "--set", "dm-a", "--counts", "0,1", "--width", "4", "--depth", "2",
        "--runs", "1", "--steps", "2", "--test-limit", "20", "--data", str(synthetic_path),
        "--out", str(tmp_path / "figs"),
    ]  # fmt: skip
    r = cli(*args)
    assert r.code == 0, r.out + r.err
    text = " ".join(r.out.split())  # the table's title wraps
    assert "distilled-data protocol" in text and "chance 10%" in text and "n = 1" in text
    assert "random real (1/class)" in text and "change vs +0" in text and "wrote" in text
    assert "seed 0" in text
    r = cli(*args, "--json")
    assert r.code == 0
    out = json.loads(r.out)
    assert out["trained"] == 0 and len(out["analysis_ids"]) == 4 and out["counts"] == [0, 1]
    assert out["lines"][0]["points"][1]["vs_zero"]["p"] is None  # one seed: no test
    assert (tmp_path / "figs").is_dir() and out["figure"].endswith(".png")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--counts", "0,25"], "--counts 25 exceeds the real images available per class"),
        (["--counts", "0,-2"], "--counts must be at least 0"),
        (["--counts", "2,2"], "--counts lists 2 more than once"),
        (["--counts", "a"], "--counts must be comma-separated integers"),
        (["--set", "big"], "the random-real baseline needs 21 real images of class 0"),
        (["--method", "gm"], "no distilled set made by method 'gm'"),
        (["--set", "small"], "has images of shape (3, 16, 16)"),
        (["--out", "afile"], "--out must be a folder"),
        (["--runs", "0"], "--runs must be at least 1"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--depth", "9"], "too deep"),
        (["--test-limit", "0"], "--test-limit must be at least 1"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_the_database_unchanged(
    cli, synthetic_path, tmp_path, extra, words
):
    db = tmp_path / "test.db"
    ws = Workspace.open(str(db))
    _add(ws, "dm-a", "dm", _images(10))
    _add(ws, "big", "bptt", _images(210, seed=2))  # 21 per class: synthetic has 20
    _add(ws, "small", "gm2", np.zeros((2, 3, 16, 16), np.float32))
    ws.db.close()
    (tmp_path / "afile").write_text("x")
    before = _dump(db)
    args = ["analyze", "mixing", "--data", str(synthetic_path), *extra]
    if extra[0] == "--counts":
        args += ["--set", "dm-a"]
    r = cli(*args)
    assert r.code == 2, r.out + r.err
    assert words in r.err + r.out
    assert len((r.err + r.out).strip().splitlines()) == 1
    assert _dump(db) == before


def test_requests_are_validated_where_they_are_built():
    for bad in (
        dict(counts=()), dict(counts=(0, -1)), dict(counts=(2, 2)), dict(counts=(1.5,)),
        dict(runs=0), dict(steps=-1), dict(width=0), dict(seed=-1), dict(runs=1.5e400),
    ):  # fmt: skip
        with pytest.raises(UserError):
            job.MixingRequest(**bad)
    assert job.MixingRequest(counts=(10, 0, 2)).counts == (0, 2, 10)
