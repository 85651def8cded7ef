"""``ddsem analyze recognition`` (paper Fig. 5) on the synthetic data: the engine's curves equal
a plain torch.optim.SGD loop, a run stores one unit per seed and draws the figure, a re-run
trains nothing, a killed run keeps its finished seeds, and bad input is refused (exit 2,
database unchanged)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager

import numpy as np
import pytest

from ddsem.config import ModelConfig, RecognitionConfig, TrainConfig
from ddsem.errors import UserError
from ddsem.jobs import Recorder, Workspace
from ddsem.jobs.analyze import recognition as job

TINY = dict(width=4, depth=2, epochs=3, runs=2, test_limit=30)  # 200 images: full batch


def _add_sets(ws, shape=(3, 32, 32)):
    from ddsem.db.sets import add_distilled_set

    rng = np.random.default_rng(0)
    for name, method, n in (("bptt-small", "bptt", 10), ("dm-small", "dm", 20)):
        images = rng.normal(size=(n, *shape)).astype(np.float32)
        add_distilled_set(ws.db, name, method, images, np.arange(n) % 10)


def _dump(path) -> str:
    with sqlite3.connect(path) as con:
        return "\n".join(con.iterdump())


def _rows(path) -> int:
    with sqlite3.connect(path) as con:
        return con.execute(
            "SELECT count(*) FROM analysisrun WHERE kind = 'recognition'"
        ).fetchone()[0]


# -- the reference: a plain torch.optim.SGD loop ---------------------------------------------------


def test_engine_curves_equal_a_plain_sgd_loop(synthetic):
    import torch
    import torch.nn.functional as F

    from ddsem.analyses.recognition import checkpoints, recognition_curves, train_config
    from ddsem.data import normalize
    from ddsem.models import build_model, init_state
    from ddsem.train import batch_schedule

    x, y = normalize(synthetic.train_x), torch.from_numpy(synthetic.train_y.astype("int64"))
    tx, ty = normalize(synthetic.test_x), torch.from_numpy(synthetic.test_y.astype("int64"))
    sx, sy = x[::20], y[::20]  # a "distilled set": 10 real images with their labels
    model_cfg = ModelConfig(width=6, depth=2)
    cfg = RecognitionConfig(batch_size=64, epochs=2)  # minibatches: the schedule matters
    train = train_config(cfg, len(y))
    assert train == TrainConfig(steps=8, lr=0.01, momentum=0.9, batch_size=64)
    seed, batch_seed = 7, 3
    (curves,) = recognition_curves(
        model_cfg, train, (x, y), (tx, ty), [(sx, sy)], [seed], every=1, batch_seed=batch_seed
    )

    model = build_model(model_cfg)
    model.load_state_dict(init_state(model_cfg, seed))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)

    def accuracy(images, labels):
        model.eval()
        with torch.no_grad():
            acc = (model(images).argmax(1) == labels).float().mean().item()
        model.train()
        return acc

    test_ref, set_ref = [accuracy(tx, ty)], [accuracy(sx, sy)]
    for idx in batch_schedule(len(y), train, batch_seed):
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        test_ref.append(accuracy(tx, ty))
        set_ref.append(accuracy(sx, sy))
    assert curves.iterations == checkpoints(8, 1) == list(range(9))
    np.testing.assert_allclose(curves.test, test_ref, atol=1e-6)
    np.testing.assert_allclose(curves.sets[0], set_ref, atol=1e-6)
    assert len(set(curves.test)) > 1  # the model learned something: the curve is not flat


def test_settling_iteration_and_checkpoints():
    from ddsem.analyses.recognition import checkpoints, settle_iteration, summarize

    assert checkpoints(10, 4) == [0, 4, 8, 10]
    its = [0, 1, 2, 3, 4]
    assert settle_iteration(its, [0.1, 0.9, 0.5, 0.97, 1.0], 0.05) == 3
    assert settle_iteration(its, [1.0, 1.0, 1.0, 1.0, 1.0], 0.0) == 0
    assert settle_iteration(its, [0.1, 0.2, 0.3, 0.4, 0.5], 0.0) == 4
    s = summarize(its, [[0.1, 0.9, 0.5, 0.97, 1.0], [0.0, 0.2, 0.8, 0.8, 0.8]], 0.05)
    assert s.settled == [3, 2] and s.final == [1.0, 0.8] and s.settled_of_mean == 3
    assert s.final_sd == pytest.approx(np.std([1.0, 0.8], ddof=1))


# -- the job and the command -----------------------------------------------------------------------


def test_cli_stores_seeds_draws_the_figure_and_a_rerun_trains_nothing(
    cli, synthetic_path, tmp_path, monkeypatch
):
    db = tmp_path / "test.db"
    ws = Workspace.open(str(db))
    _add_sets(ws)
    ws.db.close()
    args = ["analyze", "recognition", "--method", "bptt,dm", "--data", str(synthetic_path),
            "--width", "4", "--depth", "2", "--epochs", "3", "--runs", "2", "--test-limit", "30",
            "--out", str(tmp_path / "fig")]  # fmt: skip
    first = cli(*args)
    assert first.code == 0, first.out + first.err
    assert "2 trained now, 0 stored before" in first.out and "chance 10%" in first.out
    assert "real test" in first.out and "bptt-small" in first.out and "mean ± sd" in first.out
    assert _rows(db) == 2  # one unit per seed
    figure = tmp_path / "fig" / "recognition-1-n2.png"
    assert figure.is_file()

    import ddsem.train

    def refuse(*a, **k):
        raise AssertionError("a re-run must not train")

    monkeypatch.setattr(ddsem.train, "train_population", refuse)
    figure.unlink()
    again = cli(*args, "--json")
    assert again.code == 0, again.out + again.err
    out = json.loads(again.out)
    assert {"analysis_ids", "figure", "seeds", "trained", "sources", "iterations", "chance",
            "tolerance", "params", "steps", "runs"} <= set(out)  # fmt: skip
    assert out["trained"] == [] and out["analysis_ids"] == [1, 2] and out["seeds"] == [0, 1]
    assert out["iterations"] == [0, 1, 2, 3] and out["steps"] == 3 and out["chance"] == 0.1
    assert [s["source"] for s in out["sources"]] == ["test", "bptt-small", "dm-small"]
    src = out["sources"][1]
    assert src["n"] == 2 and len(src["final_accuracy"]) == 2 and len(src["mean_curve"]) == 4
    assert src["images"] == 10 and src["method"] == "bptt"
    assert figure.is_file() and out["figure"] == str(figure)  # redrawn
    assert _rows(db) == 2

    # a looser tolerance changes only the summary: still nothing trained
    loose = cli(*args, "--tolerance", "1", "--json")
    assert loose.code == 0 and all(
        s["settled_iteration"] == [0, 0] for s in json.loads(loose.out)["sources"]
    )


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


def test_a_killed_run_keeps_its_finished_seeds_and_resumes_to_the_same_curves(synthetic, tmp_path):
    request = job.RecognitionRequest(**{**TINY, "runs": 3}, data=synthetic, out=str(tmp_path / "f"))
    whole = Workspace.open(str(tmp_path / "whole.db"), device="cpu")
    _add_sets(whole)
    reference = job.run(whole, request)

    # seed 0 trains 3 steps; the first step of seed 1 is interrupted (CPU: one model at a time)
    broken = Workspace.open(str(tmp_path / "broken.db"), device="cpu", progress=_Interrupt(4))
    _add_sets(broken)
    with pytest.raises(KeyboardInterrupt):
        job.run(broken, request)
    assert [u.seed for u in job.plan(broken, request).missing] == [1, 2]
    broken.progress = Recorder()
    resumed = job.run(broken, request)
    assert resumed.trained == [1, 2]
    assert broken.progress.phases == [("recognition: 2 seed(s)", 6, 6)]
    assert [r.curves for r in resumed.rows] == [r.curves for r in reference.rows]
    whole.db.close()
    broken.db.close()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"width": 0}, "--width must be positive, got 0"),
        ({"depth": 9}, "--depth 9 is too deep"),
        ({"epochs": 0}, "--epochs must be at least 1, got 0"),
        ({"every": 0}, "--every must be at least 1, got 0"),
        ({"runs": 0}, "--runs must be at least 1, got 0"),
        ({"test_limit": 0}, "--test-limit must be at least 1, got 0"),
        ({"train_samples": 0}, "--train-samples must be at least 1, got 0"),
        ({"tolerance": 1.5}, r"--tolerance must lie in \[0, 1\], got 1.5"),
        ({"tolerance": float("nan")}, "--tolerance must be a finite number"),
        ({"seed": -1}, "--seed must be a non-negative integer"),
    ],
)
def test_bad_requests_are_refused_where_they_are_built(changes, message):
    with pytest.raises(UserError, match="^" + message):
        job.RecognitionRequest(**{**TINY, **changes})


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "bptt,tm"], "no distilled set made by method 'tm'"),
        (["--set", "nope"], "nope"),
        (["--out", "FILE"], "--out must be a folder"),
        (["--width", "0"], "--width must be positive"),
        (["--tolerance", "-0.1"], "--tolerance must lie in"),
        (["--set", "small16"], "has images of shape (3, 16, 16)"),
        (["--method", "bptt", "--test-limit", "100000"], "--test-limit must be between 1 and 100,"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_the_database_unchanged(
    cli, synthetic_path, tmp_path, extra, message
):
    from ddsem.db.sets import add_distilled_set

    db = tmp_path / "test.db"
    ws = Workspace.open(str(db))
    _add_sets(ws)
    add_distilled_set(ws.db, "small16", "gm", np.zeros((10, 3, 16, 16), np.float32),
                      np.arange(10))  # fmt: skip
    ws.db.close()
    (tmp_path / "FILE").write_text("")
    extra = [str(tmp_path / "FILE") if e == "FILE" else e for e in extra]
    before = _dump(db)
    res = cli("analyze", "recognition", "--data", str(synthetic_path), *TINY_ARGS, *extra)
    assert res.code == 2, res.out + res.err
    assert message in res.err + res.out
    assert len((res.err + res.out).strip().splitlines()) == 1
    assert _dump(db) == before


TINY_ARGS = ["--width", "4", "--depth", "2", "--epochs", "1", "--runs", "1", "--test-limit", "20"]
