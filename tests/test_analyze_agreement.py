"""``ddsem analyze agreement`` (paper Fig. 4, appendices B and C) on the synthetic data: the
pool's models (one population with 0/1 weights) equal models trained one by one on their
subsets, a run stores its chunks and draws the figure, a re-run trains nothing, a killed pool
resumes with only the rest, and bad input is refused (exit 2, database unchanged)."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from ddsem.config import ModelConfig, TrainConfig
from ddsem.errors import UserError
from ddsem.jobs import Recorder, Workspace
from ddsem.jobs.analyze import agreement as job

TINY = dict(pool=6, chunk=4, fraction_low=0.2, fraction_high=0.6, epochs=3, early_runs=2,
            early_epochs=6, runs=2, width=4, depth=1, test_limit=30, window=100.0)  # fmt: skip
TINY_ARGS = ["--pool", "6", "--chunk", "4", "--fractions", "0.2,0.6", "--epochs", "3",
             "--early-runs", "2", "--early-epochs", "6", "--runs", "2", "--width", "4",
             "--depth", "1", "--test-limit", "30"]  # fmt: skip


@pytest.fixture(autouse=True)
def _short_distilled_protocol(monkeypatch):
    """The distilled-data protocol's 300 steps, shortened to keep the file fast."""
    monkeypatch.setattr(job, "DISTILLED", TrainConfig(steps=20))


def _add_sets(ws, synthetic):
    from ddsem.data import normalize
    from ddsem.db.sets import add_distilled_set

    x = normalize(synthetic.train_x).numpy()
    add_distilled_set(ws.db, "dm-small", "dm", x[::10].copy(), synthetic.train_y[::10] % 10)


def _dump(path) -> str:
    with sqlite3.connect(path) as con:
        return "\n".join(con.iterdump())


def _rows(path, kind="agreement") -> int:
    with sqlite3.connect(path) as con:
        return con.execute("SELECT count(*) FROM analysisrun WHERE kind = ?", (kind,)).fetchone()[0]


# -- the reference: each model trained alone on its subset with a plain SGD loop -------------------


def test_pool_models_equal_models_trained_one_by_one_on_their_subsets(synthetic):
    """generate_models.py's protocol: each model alone on its subset, minibatches of its own
    images, a plain torch.optim.SGD loop as the reference."""
    import torch
    import torch.nn.functional as F

    from ddsem.analyses.agreement import (
        AgreementConfig,
        epoch_config,
        model_seed,
        subset_pool,
        subset_steps,
        subset_weights,
    )
    from ddsem.data import normalize
    from ddsem.models import build_model, init_state
    from ddsem.train import batch_schedule, evaluate_population

    x, y = normalize(synthetic.train_x), torch.from_numpy(synthetic.train_y.astype("int64"))
    tx, ty = normalize(synthetic.test_x), torch.from_numpy(synthetic.test_y.astype("int64"))
    cfg = ModelConfig(width=4, depth=2)
    pool = AgreementConfig(batch_size=16)  # minibatches of the subsets (20 to 100 images)
    indices = [3, 4, 5]
    weights, fractions = subset_weights(synthetic.train_y, indices, 0.1, 0.5, seed=2)
    assert np.all((fractions >= 0.1) & (fractions <= 0.5)) and np.all(weights.sum(1) >= 10)
    # the same model's subset whatever the pool it is drawn in
    again, _ = subset_weights(synthetic.train_y, [5], 0.1, 0.5, seed=2)
    np.testing.assert_array_equal(again[0], weights[2])
    seeds = [model_seed(2, "subset", j) for j in indices]
    steps = []
    preds, acc = subset_pool(cfg, (x, y), weights, seeds, 2, pool, (tx, ty), progress=steps.append)
    assert preds.dtype == np.uint8 and preds.shape == (3, len(ty))
    assert sum(steps) == sum(subset_steps(weights, 2, 16))

    for r, seed in enumerate(seeds):
        keep = torch.from_numpy(np.flatnonzero(weights[r]))
        xs, ys = x[keep], y[keep]
        train = epoch_config(len(keep), 2, 16, pool.lr, pool.momentum)
        assert train.steps == 2 * -(-len(keep) // 16)  # ceil(n / 16) iterations an epoch
        model = build_model(cfg)
        model.load_state_dict(init_state(cfg, seed))
        opt = torch.optim.SGD(model.parameters(), lr=pool.lr, momentum=pool.momentum)
        for idx in batch_schedule(len(ys), train, seed):
            opt.zero_grad()
            F.cross_entropy(model(xs[idx]), ys[idx]).backward()
            opt.step()
        ev = evaluate_population(cfg, [model.state_dict()], tx, ty)
        assert float(ev.accuracy[0]) == pytest.approx(float(acc[r]), abs=1e-6)
        np.testing.assert_array_equal(ev.predictions[0].numpy(), preds[r])


def test_agreement_counts_and_appendix_c_on_a_constructed_pool():
    from ddsem.analyses.agreement import agreements, compare_pool, variability_test

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 10, 400)
    pool = np.stack([np.where(rng.random(400) < 0.6, truth, rng.integers(0, 10, 400))
                     for _ in range(12)]).astype(np.uint8)  # fmt: skip
    ref = pool[0].copy()
    assert agreements(ref, pool)[0] == 400
    assert agreements(ref, pool)[1] == int((pool[1] == ref).sum())
    out = variability_test(ref, pool[1:])
    assert out["tested"] == 11 and all(0 <= p <= 1 for p in out["probabilities"])
    # a reference far outside the pool's agreements is improbable under every model
    far = variability_test(truth.astype(np.uint8), pool[1:])
    assert far["improbable_share"] == 1.0
    acc = (pool == truth).mean(1)
    c = compare_pool("subset", (pool[:1], acc[:1]), pool[1:], acc[1:], 10, window=100)
    s = c.summary()
    assert s["compared"] == 11 and s["agreement_mean"] == pytest.approx(
        np.mean(agreements(ref, pool[1:])) / 400
    )
    none = compare_pool("subset", (pool[:1], np.array([0.0])), pool[1:], acc[1:], 10, window=1)
    assert none.per_seed[0]["models"] == []


# -- the job and the command -----------------------------------------------------------------------


def test_cli_stores_pools_draws_the_figure_and_a_rerun_trains_nothing(
    cli, synthetic, synthetic_path, tmp_path, monkeypatch
):
    db = tmp_path / "test.db"
    ws = Workspace.open(str(db))
    _add_sets(ws, synthetic)
    ws.db.close()
    args = ["analyze", "agreement", "--method", "dm", "--data", str(synthetic_path),
            *TINY_ARGS, "--window", "100", "--out", str(tmp_path / "fig")]  # fmt: skip
    first = cli(*args)
    assert first.code == 0, first.out + first.err
    assert "subset-trained" in first.out and "early-stopped" in first.out
    assert "chance accuracy 10%" in first.out and "Mann-Whitney" in first.out
    # 1 distilled unit + 2 subset chunks + 2 early runs, then one comparison
    assert _rows(db, "agreement-pool") == 5 and _rows(db) == 1
    figure = tmp_path / "fig" / "agreement-6.png"
    assert figure.is_file()

    import ddsem.train

    def refuse(*a, **k):
        raise AssertionError("a re-run must not train")

    monkeypatch.setattr(ddsem.train, "train_population", refuse)
    figure.unlink()
    again = cli(*args, "--json")
    assert again.code == 0, again.out + again.err
    out = json.loads(again.out)
    assert {"analysis_ids", "figure", "sets", "trained", "stored", "pool_sizes", "window",
            "chance", "test_images", "train"} <= set(out)  # fmt: skip
    assert sum(out["trained"].values()) == 0 and out["analysis_ids"] == [6]
    assert out["stored"] == {"distilled": 1, "subset": 2, "early": 2, "weight-decay": 0}
    s = out["sets"][0]
    assert s["reused"] and s["set"] == "dm-small" and len(s["distilled_accuracy"]) == 2
    assert set(s["pools"]) == {"subset", "early"}
    assert s["pools"]["subset"]["compared"] == 12  # 2 seeds x 6 models, all within 100 points
    assert s["pools"]["early"]["compared"] == 4 and len(s["pools"]["early"]["iterations"]) == 2
    assert figure.is_file() and out["figure"] == str(figure)

    # another window compares the stored predictions: still nothing trained
    narrow = cli(*args, "--window", "50", "--json")
    assert narrow.code == 0, narrow.out + narrow.err
    assert json.loads(narrow.out)["analysis_ids"] == [7] and _rows(db) == 2


def test_a_killed_pool_resumes_with_only_the_rest(synthetic, tmp_path, monkeypatch):
    from ddsem.analyses import agreement as compute

    request = job.AgreementRequest(**TINY, data=synthetic, out=str(tmp_path / "f"))
    whole = Workspace.open(str(tmp_path / "whole.db"), device="cpu")
    _add_sets(whole, synthetic)
    reference = job.run(whole, request)

    real = compute.subset_pool
    calls = []

    def dies_on_the_second_chunk(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(compute, "subset_pool", dies_on_the_second_chunk)
    broken = Workspace.open(str(tmp_path / "broken.db"), device="cpu", progress=Recorder())
    _add_sets(broken, synthetic)
    with pytest.raises(KeyboardInterrupt):
        job.run(broken, request)
    missing = job.plan(broken, request).missing
    assert [(u.role, u.indices) for u in missing] == [
        ("subset", [4, 5]), ("early", [0]), ("early", [1])
    ]  # fmt: skip
    monkeypatch.setattr(compute, "subset_pool", real)
    broken.progress = Recorder()
    resumed = job.run(broken, request)
    assert resumed.trained == {"distilled": 0, "subset": 1, "early": 2, "weight-decay": 0}
    assert [d for d, _, _ in broken.progress.phases] == [
        "subset pool: models 5-6/6", "early-stopped run 1/2", "early-stopped run 2/2"
    ]  # fmt: skip
    for key in ("agreements", "probabilities"):
        for pool in ("subset", "early"):
            assert resumed.sets[0]["pools"][pool][key] == reference.sets[0]["pools"][pool][key]
    whole.db.close()
    broken.db.close()


def test_no_pool_model_within_the_window_is_refused_and_leaves_no_comparison(synthetic, tmp_path):
    # pools barely trained (1 step): chance-level accuracy, far below the distilled models
    request = job.AgreementRequest(
        **{**TINY, "epochs": 1, "early_epochs": 1, "window": 1.0}, data=synthetic,
        out=str(tmp_path / "f"),
    )  # fmt: skip
    db = tmp_path / "w.db"
    ws = Workspace.open(str(db), device="cpu")
    _add_sets(ws, synthetic)
    with pytest.raises(UserError, match=r"within ±1 point\(s\).*try a wider window, e.g. --window"):
        job.run(ws, request)
    assert _rows(db) == 0 and _rows(db, "agreement-pool") == 5  # the pools are kept
    before = _dump(db)
    with pytest.raises(UserError, match="try a wider window"):
        job.run(ws, request)
    assert _dump(db) == before
    ws.db.close()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"pool": 0}, "--pool must be at least 1, got 0"),
        ({"fraction_low": 0.0}, r"--fractions' low end must lie in \(0, 1\], got 0.0"),
        ({"fraction_high": 1.5}, r"--fractions' high end must lie in \(0, 1\], got 1.5"),
        ({"fraction_low": 0.5, "fraction_high": 0.1}, "--fractions must be LOW,HIGH with LOW <="),
        ({"epochs": 0}, "--epochs must be at least 1, got 0"),
        ({"early_runs": 0}, "--early-runs must be at least 1, got 0"),
        ({"chunk": 0}, "--chunk must be at least 1, got 0"),
        ({"window": -1}, r"--window must lie in \(0, 100\], got -1"),
        ({"window": 0}, r"--window must lie in \(0, 100\], got 0"),
        ({"window": float("nan")}, "--window must be a finite number"),
        ({"runs": 0}, "--runs must be at least 1, got 0"),
        ({"width": 0}, "--width must be positive, got 0"),
        ({"seed": -1}, "--seed must be a non-negative integer"),
    ],
)
def test_bad_requests_are_refused_where_they_are_built(changes, message):
    with pytest.raises(UserError, match="^" + message):
        job.AgreementRequest(**{**TINY, **changes})


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fractions", "0,0.05"], "--fractions' low end must lie in (0, 1]"),
        (["--fractions", "0.01,2"], "--fractions' high end must lie in (0, 1]"),
        (["--fractions", "a,b"], "--fractions takes LOW,HIGH"),
        (["--pool", "0"], "--pool must be at least 1, got 0"),
        (["--method", "tm"], "no distilled set made by method 'tm'"),
        (["--out", "FILE"], "--out must be a folder"),
        (["--test-limit", "100000"], "--test-limit must be between 1 and 100,"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_the_database_unchanged(
    cli, synthetic, synthetic_path, tmp_path, extra, message
):
    db = tmp_path / "test.db"
    ws = Workspace.open(str(db))
    _add_sets(ws, synthetic)
    ws.db.close()
    (tmp_path / "FILE").write_text("")
    extra = [str(tmp_path / "FILE") if e == "FILE" else e for e in extra]
    before = _dump(db)
    res = cli("analyze", "agreement", "--data", str(synthetic_path), *TINY_ARGS, *extra)
    assert res.code == 2, res.out + res.err
    assert message in res.err + res.out
    assert len((res.err + res.out).strip().splitlines()) == 1
    assert _dump(db) == before
