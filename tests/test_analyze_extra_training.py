"""``ddsem analyze extra-training`` on synthetic data: the accuracy after the further training
against a plain torch.optim.SGD loop continuing from the stored real model, the real models
stored once and reused for every set, a re-run that trains nothing, a killed run that resumes,
and bad input refused in one line with the database unchanged."""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager

import numpy as np
import pytest

from ddsem.errors import UserError
from ddsem.jobs import Recorder, Workspace
from ddsem.jobs.analyze import extra_training as job

SMALL = dict(width=8, depth=2, runs=2, steps=6, real_iterations=4, test_limit=40)


def _images(n=10, scale=1.5, seed=0):
    return (np.random.default_rng(seed).normal(size=(n, 3, 32, 32)) * scale).astype(np.float32)


def _add(ws, name, method, images):
    from ddsem.db.sets import add_distilled_set

    return add_distilled_set(ws.db, name, method, images, np.arange(len(images)) % 10)


def _dump(path) -> str:
    with sqlite3.connect(path) as con:
        return "\n".join(con.iterdump())


def _plain_sgd_from(state, images, labels, model_cfg, steps, test_x, test_y) -> float:
    """An independent reference: a fresh torch.optim.SGD (momentum restarts), full batch,
    continuing from the real model's state."""
    import torch
    import torch.nn.functional as F

    from ddsem.models import build_model

    model = build_model(model_cfg)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        opt.step()
    with torch.no_grad():
        return float((model(test_x).argmax(1) == test_y).float().mean())


def test_a_run_matches_plain_sgd_reuses_the_real_models_and_a_rerun_trains_nothing(
    workspace, synthetic, tmp_path, monkeypatch
):
    import torch

    from ddsem.data import normalize, stratified_indices
    from ddsem.db.analyses import find_real_model, list_analyses

    bptt = _images(10, scale=2.0)
    _add(workspace, "bptt-a", "bptt", bptt)
    request = job.ExtraTrainingRequest(
        methods=("bptt",), data=synthetic, out=str(tmp_path / "fig"), **SMALL
    )
    assert len(job.plan(workspace, request).missing) == 1
    result = job.run(workspace, request)
    assert (result.trained, result.trained_real) == (1, 2) and result.seeds == [0, 1]
    assert [p[0] for p in workspace.progress.phases] == [
        "extra-training: real model (seed 0)",
        "extra-training: real model (seed 1)",
        "extra-training: train on the sets",
    ]
    assert result.figure.is_file() and result.train_images == 200 and result.test_images == 40
    out = result.as_json()
    assert {"analysis_ids", "figure", "sets", "chance", "runs", "real_iterations"} <= set(out)
    s = out["sets"][0]
    assert len(s["before"]["accuracies"]) == len(s["after"]["accuracies"]) == 2
    assert np.isclose(s["change"]["mean"], s["after"]["mean"] - s["before"]["mean"])
    json.dumps(out)

    # the engine's after-accuracy equals a plain SGD loop continuing from the stored real model
    reals = list_analyses(workspace.db, ("real-model",))
    assert sorted(r.params["seed"] for r in reals) == [0, 1]
    real = next(r for r in reals if r.params["seed"] == 1)
    assert real.params["train"]["batch_size"] == 256 and real.params["train"]["steps"] == 4
    state, real_result = find_real_model(workspace.db, real.params)
    assert np.isclose(real_result["test_accuracy"], s["before"]["accuracies"][1])
    idx = stratified_indices(synthetic.test_y, 40, 0)
    test_x = normalize(synthetic.test_x[idx])
    test_y = torch.from_numpy(synthetic.test_y[idx].astype("int64"))
    model_cfg = job.plan(workspace, request).model
    labels = torch.from_numpy(np.arange(10) % 10)
    ref = _plain_sgd_from(state, torch.from_numpy(bptt), labels, model_cfg, 6, test_x, test_y)
    assert abs(s["after"]["accuracies"][1] - ref) <= 1 / 40 + 1e-6, (s["after"], ref)

    # a new set reuses the stored real models: only the set is trained
    _add(workspace, "dm-a", "dm", _images(10, scale=0.5, seed=1))
    both = job.ExtraTrainingRequest(
        methods=("bptt", "dm"), data=synthetic, out=str(tmp_path / "fig"), **SMALL
    )
    workspace.progress.phases.clear()
    second = job.run(workspace, both)
    assert (second.trained, second.trained_real) == (1, 0)
    assert [p[0] for p in workspace.progress.phases] == ["extra-training: train on the sets"]
    assert second.sets[0].as_json() == s  # the stored unit, read back
    assert second.sets[1].before == second.sets[0].before  # the same real models

    # an identical re-run trains nothing (the engine would fail) and redraws the figure
    import ddsem.train

    def refuse(*a, **k):
        raise AssertionError("a re-run must not train")

    monkeypatch.setattr(ddsem.train, "train_population", refuse)
    second.figure.unlink()
    workspace.progress.phases.clear()
    again = job.run(workspace, both)
    assert (again.trained, again.trained_real) == (0, 0) and workspace.progress.phases == []
    assert again.figure.is_file() and again.as_json()["sets"] == second.as_json()["sets"]


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


def test_a_killed_run_keeps_the_real_models_and_resumes(synthetic, tmp_path):
    # killed in the second real model: the first is kept, the resumed run trains only the rest
    ws = Workspace.open(str(tmp_path / "k.db"), device="cpu", progress=_Interrupt(4 + 2))
    _add(ws, "bptt-a", "bptt", _images(10, scale=2.0))
    request = job.ExtraTrainingRequest(data=synthetic, out=str(tmp_path / "fig"), **SMALL)
    with pytest.raises(KeyboardInterrupt):
        job.run(ws, request)
    ws.progress = Recorder()
    resumed = job.run(ws, request)
    assert (resumed.trained, resumed.trained_real) == (1, 1)


def test_the_command_prints_its_table_and_json(cli, synthetic_path, tmp_path):
    ws = Workspace.open(str(tmp_path / "test.db"))
    _add(ws, "bptt-a", "bptt", _images(10, scale=2.0))
    ws.db.close()
    args = [
        "analyze", "extra-training", "--width", "8", "--depth", "2", "--runs", "1",
        "--steps", "3", "--real-iterations", "2", "--train-samples", "50", "--test-limit", "20",
        "--data", str(synthetic_path), "--out", str(tmp_path / "figs"),
    ]  # fmt: skip
    r = cli(*args)
    assert r.code == 0, r.out + r.err
    text = " ".join(r.out.split())  # the table's title wraps
    assert "before" in text and "chance 10%" in text and "n = 1 seeds" in text
    assert "2 real iterations (50 images)" in text and "wrote" in text
    r = cli(*args, "--json")
    assert r.code == 0
    out = json.loads(r.out)
    assert (out["trained"], out["trained_real_models"]) == (0, 0)
    assert out["train_images"] == 50 and len(out["analysis_ids"]) == 1
    assert out["sets"][0]["change"]["p"] is None and out["figure"].endswith(".png")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--method", "gm"], "no distilled set made by method 'gm'"),
        (["--set", "small"], "has images of shape (3, 16, 16)"),
        (["--out", "afile"], "--out must be a folder"),
        (["--width", "0"], "--width must be positive"),
        (["--runs", "0"], "--runs must be at least 1"),
        (["--real-iterations", "0"], "--real-iterations must be at least 1"),
        (["--train-samples", "0"], "--train-samples must be at least 1"),
        (["--set", "bptt-a", "--train-samples", "999999"], "--train-samples must be between"),
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
    r = cli("analyze", "extra-training", "--data", str(synthetic_path), *extra)
    assert r.code == 2, r.out + r.err
    assert words in r.err + r.out
    assert len((r.err + r.out).strip().splitlines()) == 1
    assert _dump(db) == before


def test_requests_are_validated_where_they_are_built():
    for bad in (dict(real_iterations=0), dict(steps=0), dict(depth=6), dict(train_samples=-3)):
        with pytest.raises(UserError):
            job.ExtraTrainingRequest(**bad)
