"""Exact leave-one-out influence: engine vs plain retraining, storage, resumption, checks, CLI.

The exactness references are written here, independently of the engine: a fresh module per
subset trained with ``torch.optim.SGD`` on exactly the images it keeps.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddsem.config import ModelConfig, TrainConfig
from ddsem.influence import checks
from ddsem.influence.loo import (
    build_population,
    influence_from_losses,
    leave_one_out,
    top_k,
)
from ddsem.models import build_model, init_state

TINY = ModelConfig(width=8)
SMALL = ModelConfig(width=8, depth=2, image_size=16)  # float64 convolutions are slow on a CPU
STEPS = 20


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: deterministic reductions and no oversubscription on 2 shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def float64():
    """Run engine and reference in float64, so the comparison tests the algorithm, not float32
    rounding (in float32, ReLU kinks let 1e-7 rounding flip activations and move losses by up
    to ~1e-3 between two equally valid trainings; the noise-floor check measures exactly that)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _data(n: int, t: int, seed: int = 0, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.arange(n) % 10
    tx = torch.randn(t, 3, size, size, generator=g)
    ty = torch.randint(0, 10, (t,), generator=g)
    return x, y, tx, ty


def _plain_retrain(cfg, train_cfg, init, x, y, test_x, test_y) -> np.ndarray:
    """The reference: a fresh module trained with torch.optim.SGD on exactly these images."""
    model = build_model(cfg)
    model.load_state_dict(init)
    opt = torch.optim.SGD(model.parameters(), lr=train_cfg.lr, momentum=train_cfg.momentum)
    for _ in range(train_cfg.steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        return F.cross_entropy(model(test_x), test_y, reduction="none").double().numpy()


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# -- exactness -----------------------------------------------------------------------------------


def test_distilled_context_equals_plain_retraining_on_each_subset(float64):
    x, y, tx, ty = _data(10, 60, size=16)
    cfg, train_cfg = SMALL, TrainConfig(steps=STEPS)
    init = init_state(cfg, 3)
    result = leave_one_out(cfg, train_cfg, x, y, tx, ty, init)

    full = _plain_retrain(cfg, train_cfg, init, x, y, tx, ty)
    expected = []
    for i in range(len(x)):
        keep = torch.tensor([j for j in range(len(x)) if j != i])
        expected.append(_plain_retrain(cfg, train_cfg, init, x[keep], y[keep], tx, ty) - full)
    expected = np.stack(expected)

    assert result.influence.shape == (10, 60)
    assert result.influence.dtype == np.float32
    assert np.abs(expected).mean() > 1e-2  # a real signal, not zeros compared with zeros
    assert _relative_error(result.influence, expected) < 1e-5
    for i in range(len(x)):  # every leave-one-out model, not only on average
        assert _relative_error(result.influence[i], expected[i]) < 1e-5
    np.testing.assert_allclose(result.reference_losses, full, rtol=1e-6)


def test_float32_engine_agrees_with_float32_retraining_to_the_noise_floor():
    """The default float32 path: the same computation up to float32 arithmetic, whose error a
    ReLU kink can amplify beyond 1e-5 (see the float64 fixture); it must stay far below the
    influence signal."""
    x, y, tx, ty = _data(8, 60, seed=3)
    cfg, train_cfg = TINY, TrainConfig(steps=STEPS)
    init = init_state(cfg, 1)
    result = leave_one_out(cfg, train_cfg, x, y, tx, ty, init)
    full = _plain_retrain(cfg, train_cfg, init, x, y, tx, ty)
    expected = np.stack(
        [
            _plain_retrain(cfg, train_cfg, init, x[keep], y[keep], tx, ty) - full
            for keep in (torch.tensor([j for j in range(8) if j != i]) for i in range(8))
        ]
    )
    per_model = [_relative_error(result.influence[i], expected[i]) for i in range(8)]
    assert np.median(per_model) < 1e-5  # measured here: about 3e-7
    assert _relative_error(result.influence, expected) < 5e-3  # even if a kink flips somewhere


def test_real_context_equals_plain_retraining_with_each_image_added(float64):
    x, y, tx, ty = _data(5, 60, seed=1, size=16)
    real_x, real_y, _, _ = _data(10, 1, seed=2, size=16)
    cfg, train_cfg = SMALL, TrainConfig(steps=STEPS)
    init = init_state(cfg, 4)
    result = leave_one_out(
        cfg, train_cfg, x, y, tx, ty, init, context="real", real_x=real_x, real_y=real_y
    )
    base = _plain_retrain(cfg, train_cfg, init, real_x, real_y, tx, ty)
    expected = np.stack(
        [
            base
            - _plain_retrain(
                cfg, train_cfg, init, torch.cat([real_x, x[i : i + 1]]), torch.cat([real_y, y[i : i + 1]]), tx, ty
            )
            for i in range(len(x))
        ]
    )  # fmt: skip
    assert _relative_error(result.influence, expected) < 1e-5


def test_batched_path_equals_loop_path_on_cpu():
    x, y, tx, ty = _data(10, 80, seed=5)
    cfg, train_cfg = TINY, TrainConfig(steps=STEPS)
    init = init_state(cfg, 0)
    loop = leave_one_out(cfg, train_cfg, x, y, tx, ty, init, path="loop")
    batched = leave_one_out(cfg, train_cfg, x, y, tx, ty, init, path="batched")
    np.testing.assert_allclose(batched.reference_losses, loop.reference_losses, atol=1e-5)
    assert _relative_error(batched.influence, loop.influence) < 1e-3
    np.testing.assert_allclose(batched.model_accuracy, loop.model_accuracy, atol=1 / 80 + 1e-9)


def test_population_rows_describe_each_training_set():
    x, y = torch.zeros(3, 3, 4, 4), torch.tensor([0, 1, 2])
    pop = build_population(x, y)
    assert pop.model_indices == [-1, 0, 1, 2]
    np.testing.assert_array_equal(pop.weights.numpy(), [[1, 1, 1], [0, 1, 1], [1, 0, 1], [1, 1, 0]])
    real = build_population(x, y, "real", torch.ones(2, 3, 4, 4), torch.tensor([5, 6]))
    assert real.labels.tolist() == [5, 6, 0, 1, 2]
    np.testing.assert_array_equal(
        real.weights.numpy(),
        [[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 1, 0], [1, 1, 0, 0, 1]],
    )
    from ddsem.errors import UserError

    with pytest.raises(UserError, match="at least 2"):
        build_population(x[:1], y[:1])


def test_influence_sign_and_top_k():
    ref = np.array([1.0, 2.0, 3.0], np.float32)
    models = np.array([[1.5, 2.0, 2.0], [0.0, 2.5, 3.0]], np.float32)
    distilled = influence_from_losses(ref, models, "distilled")
    np.testing.assert_array_equal(distilled, [[0.5, 0.0, -1.0], [-1.0, 0.5, 0.0]])
    np.testing.assert_array_equal(influence_from_losses(ref, models, "real"), -distilled)
    positions, values = top_k(np.array([[0.1, 0.3, 0.3, -1.0]]), 3)
    assert positions.tolist() == [[1, 2, 0]]  # ties keep the lower position first
    np.testing.assert_array_equal(values, [[0.3, 0.3, 0.1]])


# -- checks --------------------------------------------------------------------------------------


def test_check_statistics_against_numpy_and_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 30))
    b = a + rng.normal(scale=0.5, size=a.shape)
    corr = checks.correlate(a, b)
    for i in range(4):
        assert corr.per_image[i] == pytest.approx(np.corrcoef(a[i], b[i])[0, 1], abs=1e-12)
    assert corr.overall == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], abs=1e-12)

    distilled = rng.normal(size=(3, 3, 4, 4)).astype(np.float32)
    test = rng.normal(size=(25, 3, 4, 4)).astype(np.float32)
    dist = checks.pixel_distances(distilled, test)
    brute = np.linalg.norm(distilled.reshape(3, 1, -1) - test.reshape(1, 25, -1), axis=2)
    np.testing.assert_allclose(dist, brute, rtol=1e-4)

    influence = rng.normal(size=(3, 25))
    rho = checks.distance_spearman(influence, dist)
    for i in range(3):
        assert rho.per_image[i] == pytest.approx(spearmanr(influence[i], -dist[i])[0], abs=1e-9)

    floor = checks.noise_floor(
        np.array([1.0, 2.0]), np.array([1.0, 2.001]), np.array([[0.01, -0.0001]]), "x"
    )
    assert floor.loss_diff_max == pytest.approx(0.001)
    assert floor.above_floor == pytest.approx(0.5)


# -- the command line, on synthetic images ------------------------------------------------------

CLI_MODEL = ["--width", "8", "--steps", "10", "--test-limit", "50"]


def _add_set(tmp_path, synthetic, n: int = 10, name: str = "tiny", labels=None) -> None:
    from ddsem.data import normalize, stratified_indices
    from ddsem.db import open_db
    from ddsem.db.sets import add_distilled_set

    idx = stratified_indices(synthetic.train_y, n, 7)[:n]
    x = normalize(synthetic.train_x[idx]).numpy()
    y = synthetic.train_y[idx] if labels is None else np.asarray(labels)
    db = open_db(tmp_path / "test.db")
    add_distilled_set(db, name, "bptt", x, y)
    db.close()


def _sql(tmp_path, query: str) -> list[tuple]:
    with sqlite3.connect(tmp_path / "test.db") as con:
        return con.execute(query).fetchall()


def _snapshot(tmp_path) -> dict[str, int]:
    tables = [r[0] for r in _sql(tmp_path, "select name from sqlite_master where type='table'")]
    return {t: _sql(tmp_path, f'select count(*) from "{t}"')[0][0] for t in tables} | {
        "runs": _sql(tmp_path, "select id, status, config_hash from influencerun")  # type: ignore[dict-item]
    }


def _direct(synthetic, tmp_path, seed: int) -> np.ndarray:
    """The same run computed in memory, for comparison with what the CLI stored."""
    from ddsem.data import normalize, stratified_indices
    from ddsem.db import open_db
    from ddsem.db.sets import find_set, set_tensors

    db = open_db(tmp_path / "test.db")
    images, labels = set_tensors(db, find_set(db, "tiny").id)
    db.close()
    test = stratified_indices(synthetic.test_y, 50, 0)
    cfg = ModelConfig(width=8)
    return leave_one_out(
        cfg,
        TrainConfig(steps=10),
        torch.from_numpy(images),
        torch.from_numpy(labels),
        normalize(synthetic.test_x[test]),
        torch.from_numpy(synthetic.test_y[test]),
        init_state(cfg, seed),
    ).influence


def test_cli_computes_stores_and_answers(cli, tmp_path, synthetic, synthetic_path):
    _add_set(tmp_path, synthetic)
    r = cli("influence", "--method", "bptt", "--seeds", "0,1", *CLI_MODEL, "--data", str(synthetic_path), "--top-k", "5")  # fmt: skip
    assert r.code == 0, r.err
    assert "full-set model test accuracy" in r.out

    from ddsem.db import open_db
    from ddsem.db.codec import state_from_blob
    from ddsem.db.influence import list_runs, load_influence
    from ddsem.db.sets import find_set

    db = open_db(tmp_path / "test.db")
    runs = list_runs(db, find_set(db, "tiny").id)
    assert [(r.seed, r.status, r.num_models) for r in runs] == [(0, "complete", 11), (1, "complete", 11)]  # fmt: skip
    matrix, test_indices = load_influence(db, runs[0].id)
    assert matrix.shape == (10, 50) and matrix.dtype == np.float32
    # The stored matrix is what an in-memory run of the same config computes, bit for bit.
    np.testing.assert_array_equal(matrix, _direct(synthetic, tmp_path, 0))
    # The initial state is kept: every model can be reproduced from it.
    blob = _sql(tmp_path, f"select init_state from influencerun where id = {runs[0].id}")[0][0]
    for k, v in init_state(ModelConfig(width=8), 0).items():
        np.testing.assert_array_equal(state_from_blob(blob)[k], v.numpy())
    # Every model's losses and accuracy; the reference (-1) accuracy is the run's accuracy.
    models = _sql(tmp_path, f"select model_index, accuracy from influencemodel where run_id = {runs[0].id} order by model_index")  # fmt: skip
    assert [m for m, _ in models] == list(range(-1, 10))
    assert runs[0].full_accuracy == pytest.approx(models[0][1])
    # Plain SQL answers "which test images does distilled image 7 influence most".
    top = _sql(
        tmp_path,
        f"select test_index, value from influencetopk where run_id = {runs[0].id} "
        "and distilled_index = 7 order by rank",
    )
    order = np.argsort(-matrix[7], kind="stable")[:5]
    assert [t for t, _ in top] == test_indices[order].tolist()
    np.testing.assert_allclose([v for _, v in top], matrix[7, order], rtol=1e-6)
    # The test images are registered, so annotation and ranking can join on them.
    registered = {i for (i,) in _sql(tmp_path, "select \"index\" from image where split = 'test'")}
    assert registered == set(test_indices.tolist())
    db.close()

    before = _snapshot(tmp_path)
    again = cli("influence", "--method", "bptt", "--seeds", "0,1", *CLI_MODEL, "--data", str(synthetic_path), "--top-k", "5")  # fmt: skip
    assert again.code == 0 and again.out.count("already complete") == 2
    assert _snapshot(tmp_path) == before

    shown = cli("influence", "show", "--method", "bptt", "--image", "7", "--seed", "0", "--top", "3", "--json")  # fmt: skip
    assert shown.code == 0, shown.err
    payload = json.loads(shown.out)
    assert [t["test_index"] for t in payload["top"]] == test_indices[order[:3]].tolist()
    assert payload["scope"] == "seed:0"
    mean = cli("influence", "show", "--method", "bptt", "--image", "7", "--json")
    assert json.loads(mean.out)["scope"] == "mean"
    summary = cli("influence", "show", "--method", "bptt", "--json")
    assert [r["status"] for r in json.loads(summary.out)["runs"]] == ["complete", "complete"]


def test_cli_refuses_a_different_config_unless_overwrite(cli, tmp_path, synthetic, synthetic_path):
    _add_set(tmp_path, synthetic)
    assert cli("influence", "--method", "bptt", *CLI_MODEL, "--data", str(synthetic_path)).code == 0
    before = _snapshot(tmp_path)
    r = cli("influence", "--method", "bptt", "--width", "8", "--steps", "12", "--test-limit", "50", "--data", str(synthetic_path))  # fmt: skip
    assert r.code == 2 and "train.steps 10 -> 12" in r.err and "--overwrite" in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert _snapshot(tmp_path) == before
    r = cli("influence", "--method", "bptt", "--width", "8", "--steps", "12", "--test-limit", "50", "--data", str(synthetic_path), "--overwrite")  # fmt: skip
    assert r.code == 0, r.err
    rows = _sql(tmp_path, "select status, config_json from influencerun")
    assert len(rows) == 1 and rows[0][0] == "complete"
    assert json.loads(rows[0][1])["train"]["steps"] == 12
    assert _sql(tmp_path, "select count(*) from influencemodel")[0][0] == 11


def test_cli_resumes_a_killed_run(cli, tmp_path, synthetic, synthetic_path, monkeypatch):
    import ddsem.influence.loo as loo

    _add_set(tmp_path, synthetic)
    real = loo.train_and_evaluate
    calls: list[list[int]] = []

    def killed_after_first_chunk(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(list(args[3]))
        return real(*args, **kwargs)

    monkeypatch.setattr(loo, "train_and_evaluate", killed_after_first_chunk)
    r = cli("influence", "--method", "bptt", *CLI_MODEL, "--data", str(synthetic_path), "--chunk", "4")  # fmt: skip
    assert r.code == 130
    assert _sql(tmp_path, "select status from influencerun") == [("running",)]
    assert _sql(tmp_path, "select count(*) from influencemodel")[0][0] == 4
    assert _sql(tmp_path, "select count(*) from influencerow")[0][0] == 0
    # Readers see no run while it is partial.
    listing = cli("influence", "show", "--method", "bptt", "--image", "0")
    assert listing.code == 2 and "no complete" in listing.err

    trained: list[int] = []

    def counting(*args, **kwargs):
        trained.extend(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(loo, "train_and_evaluate", counting)
    r = cli("influence", "--method", "bptt", *CLI_MODEL, "--data", str(synthetic_path), "--chunk", "4")  # fmt: skip
    assert r.code == 0, r.err
    assert sorted(trained) == sorted(set(range(-1, 10)) - set(calls[0]))
    from ddsem.db import open_db
    from ddsem.db.influence import list_runs, load_influence

    db = open_db(tmp_path / "test.db")
    (run,) = list_runs(db, 1)
    np.testing.assert_array_equal(load_influence(db, run.id)[0], _direct(synthetic, tmp_path, 0))
    db.close()


def test_cli_check_real_context_and_figures(cli, tmp_path, synthetic, synthetic_path):
    _add_set(tmp_path, synthetic)
    data = ["--data", str(synthetic_path)]
    assert cli("influence", "--method", "bptt", "--seeds", "0,1", *CLI_MODEL, *data).code == 0
    r = cli("influence", "--method", "bptt", "--context", "real", "--real-images", "20", *CLI_MODEL, *data)  # fmt: skip
    assert r.code == 0, r.err
    assert "real-sample model test accuracy" in r.out
    out = tmp_path / "figs"
    r = cli("influence", "check", "--method", "bptt", "--out", str(out), "--json", *data)
    assert r.code == 0, r.err
    report = json.loads(r.out)

    from ddsem.db import open_db
    from ddsem.db.influence import list_runs, load_influence

    db = open_db(tmp_path / "test.db")
    distilled = [load_influence(db, x.id)[0] for x in list_runs(db, 1, context="distilled")]
    real = [load_influence(db, x.id)[0] for x in list_runs(db, 1, context="real")]
    db.close()
    expected = np.corrcoef(distilled[0].ravel(), distilled[1].ravel())[0, 1]
    assert report["seed_consistency"][0]["seeds"] == [0, 1]
    assert report["seed_consistency"][0]["overall"] == pytest.approx(expected, abs=1e-5)
    mean = (distilled[0].astype(np.float64) + distilled[1]) / 2
    context_r = np.corrcoef(mean.ravel(), real[0].ravel())[0, 1]
    assert report["context"]["overall"] == pytest.approx(context_r, abs=1e-5)
    assert len(report["pixel_distance"]["per_image"]) == 10
    (floor,) = report["noise_floor"]
    assert "loop, cpu" in floor["compared"] and "batched, cpu" in floor["compared"]
    assert floor["loss_diff_max"] < 1e-2 and floor["influence_std"] > 0
    assert {p.split("/")[-1] for p in report["figures"]} == {
        "seeds.png",
        "context.png",
        "pixel_distance.png",
    }
    for p in report["figures"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--test-limit", "0"], "--test-limit must be a positive"),
        (["--seeds", "0,1,0"], "lists 0 more than once"),
        (["--device", "cuda"], "not present"),
        (["--context", "mixed"], "unknown --context"),
    ],
)
def test_cli_bad_options(cli, tmp_path, synthetic, synthetic_path, args, message):
    _add_set(tmp_path, synthetic)
    before = _snapshot(tmp_path)
    r = cli("influence", "--method", "bptt", "--width", "8", "--steps", "2", "--data", str(synthetic_path), *args)  # fmt: skip
    assert r.code == 2 and message in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1
    assert _snapshot(tmp_path) == before


def test_cli_bad_sets(cli, tmp_path, synthetic, synthetic_path):
    data = ["--data", str(synthetic_path), "--width", "8", "--steps", "2", "--test-limit", "20"]
    _add_set(tmp_path, synthetic, n=1, name="single")
    _add_set(tmp_path, synthetic, n=3, name="offlabel", labels=[0, 1, 12])
    before = _snapshot(tmp_path)
    cases = [
        (["--set", "single"], "at least 2"),
        (["--set", "offlabel"], "labels [12] outside cifar10's 10 classes"),
        (["--method", "gm"], "known sets: single (bptt), offlabel (bptt)"),
        (["--set", "nope"], "no distilled set named 'nope'"),
    ]
    for args, message in cases:
        r = cli("influence", *args, *data)
        assert r.code == 2 and message in r.err, r.err
        assert len(r.err.strip().splitlines()) == 1
    assert _snapshot(tmp_path) == before
    assert "Usage" in cli("influence").out


def test_compute_module_does_not_import_storage_or_interfaces():
    """DESIGN 2: compute modules take tensors and configs; only jobs reach the database."""
    import ast

    import ddsem.influence

    folder = Path(ddsem.influence.__file__).parent
    imported = set()
    for source in folder.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
    assert "ddsem.influence.loo" in imported  # the walk sees the package's own imports
    assert not [m for m in imported if m.startswith(("ddsem.db", "ddsem.cli", "ddsem.tui"))]
