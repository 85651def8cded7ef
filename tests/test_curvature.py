"""Curvature against independent references: the full Hessian of a tiny model
(``torch.func.hessian``), its exact eigenvalues (``torch.linalg.eigvalsh``), plain retraining,
and a plain forward pass; plus the CLI end to end (resume, bad input)."""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddsem.config import CurvatureConfig, LandscapeConfig, ModelConfig
from ddsem.curvature import (
    HessianOperator,
    MatrixOperator,
    compute_landscape,
    hutchinson_trace,
    lanczos,
    plane_through,
    spectral_density,
    train_with_checkpoints,
)
from ddsem.curvature.landscape import grid_losses
from ddsem.models import build_model, init_state
from ddsem.runtime import generator
from ddsem.train import train_population

# torch.func.hessian (the reference) uses forward AD, whose first use makes torch warn about its
# own internal torch.jit.script calls
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

TINY = ModelConfig(width=2, depth=2, image_size=8)  # 192 parameters: the full Hessian fits
SADDLE_SEED = 1  # an initialisation of TINY whose Hessian trace on the fixture's data is < 0


@pytest.fixture(scope="module")
def tiny():
    """A float64 tiny ConvNet at its initialisation (a saddle: negative trace), 12 images, and
    its exact Hessian from torch.func.hessian over a plain functional forward."""
    model = build_model(TINY).double()
    state = {k: v.double() for k, v in init_state(TINY, SADDLE_SEED).items()}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.arange(12) % 10
    names = [n for n, _ in model.named_parameters()]
    flat = torch.cat([state[n].reshape(-1) for n in names])

    def loss(theta):
        parts = torch.split(theta, [state[n].numel() for n in names])
        params = {n: p.view(state[n].shape) for n, p in zip(names, parts, strict=True)}
        return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    hessian = torch.func.hessian(loss)(flat)
    return {"model": model, "state": state, "x": x, "y": y, "H": hessian}


def _op(tiny, chunk_size=12, path="batched"):
    """The tiny model's operator; "batched" by default: for a model this small the per-vector
    overhead of the CPU's loop path dominates (both paths are checked against H below)."""
    return HessianOperator(
        tiny["model"], tiny["state"], tiny["x"], tiny["y"], chunk_size=chunk_size, path=path
    )


def test_hessian_vector_products_match_the_full_hessian(tiny):
    H = tiny["H"]
    assert torch.allclose(H, H.T, atol=1e-12)
    vectors = torch.randn(4, H.shape[0], generator=torch.Generator().manual_seed(1), dtype=H.dtype)
    expected = vectors @ H
    for chunk, path in ((12, "loop"), (5, "loop"), (12, "batched"), (5, "batched")):
        op = _op(tiny, chunk, path)  # one cached graph or three weighted chunks; both paths
        assert op.dim == H.shape[0] == 192
        assert torch.allclose(op(vectors), expected, rtol=1e-9, atol=1e-11)
        assert torch.allclose(op(vectors), expected, rtol=1e-9, atol=1e-11)  # reused graph
        assert torch.allclose(op(vectors[0]), expected[0], rtol=1e-9, atol=1e-11)


def _exact_hessian(model, state, x, y):
    model = model.eval()
    names = [n for n, _ in model.named_parameters()]
    buffers = {n: state[n] for n, _ in model.named_buffers()}
    flat = torch.cat([state[n].reshape(-1) for n in names])

    def loss(theta):
        parts = torch.split(theta, [state[n].numel() for n in names])
        params = {n: p.view(state[n].shape) for n, p in zip(names, parts, strict=True)}
        return F.cross_entropy(torch.func.functional_call(model, (params, buffers), (x,)), y)

    return torch.func.hessian(loss)(flat)


@pytest.mark.parametrize("norm", ["instancenorm", "batchnorm", "none"])
@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_taylor_quadratic_forms_equal_the_full_hessians(tiny, norm, pooling):
    """The trace's v'Hv by second-order Taylor mode (no Hessian-vector product) is v'Hv of the
    exact Hessian, for every ConvNet variant, in one chunk or several."""
    cfg = ModelConfig(width=2, depth=2, image_size=8, norm=norm, pooling=pooling)
    model = build_model(cfg).double()
    state = {k: v.double() for k, v in init_state(cfg, SADDLE_SEED).items()}
    g = torch.Generator().manual_seed(2)
    for name in state:  # non-trivial running statistics for eval-mode batch norm
        if name.endswith("running_mean"):
            state[name] = 0.3 * torch.randn(state[name].shape, generator=g, dtype=torch.float64)
        elif name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(state[name].shape, generator=g, dtype=torch.float64)
    H = _exact_hessian(model, state, tiny["x"], tiny["y"])
    vectors = torch.randn(5, H.shape[0], generator=g, dtype=torch.float64)
    expected = ((vectors @ H) * vectors).sum(dim=1)
    for chunk, path in ((12, "loop"), (5, "loop"), (12, "batched"), (5, "batched")):
        op = HessianOperator(model, state, tiny["x"], tiny["y"], chunk_size=chunk, path=path)
        assert op.taylor_layers is not None  # the Taylor path, not products
        got = op.quadratic_forms(vectors)
        assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
        assert torch.allclose(op.quadratic_forms(vectors), got, rtol=0, atol=0)  # cached primal


def test_other_models_get_their_quadratic_forms_from_products(tiny):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 2, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(2 * 8 * 8, 10),
    ).double()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    op = HessianOperator(model, state, tiny["x"], tiny["y"])
    assert op.taylor_layers is None
    H = _exact_hessian(model, state, tiny["x"], tiny["y"])
    vectors = torch.randn(3, H.shape[0], generator=torch.Generator().manual_seed(3), dtype=H.dtype)
    expected = ((vectors @ H) * vectors).sum(dim=1)
    assert torch.allclose(op.quadratic_forms(vectors), expected, rtol=1e-9, atol=1e-11)


def test_hutchinson_matches_the_exact_trace_within_its_reported_error(tiny):
    H = tiny["H"]
    exact = float(H.trace())
    est = hutchinson_trace(
        MatrixOperator(H), max_probes=20_000, rel_err=0.0, block=2000, generator=generator(0)
    )
    assert est.probes == 20_000
    assert abs(est.trace - exact) <= 4 * est.stderr
    # the reported error is the estimator's true one: Var(v'Hv) = 2 sum_{i != j} H_ij^2
    off = H - torch.diag(torch.diag(H))
    expected_stderr = math.sqrt(2 * float((off**2).sum()) / est.probes)
    assert 0.9 < est.stderr / expected_stderr < 1.1


def test_hutchinson_on_the_model_at_a_saddle(tiny):
    exact = float(tiny["H"].trace())
    assert exact < 0  # the premise: negative curvature dominates at this initialisation
    est = hutchinson_trace(_op(tiny), max_probes=100, rel_err=0.0, block=50, generator=generator(3))
    assert est.probes == 100 and est.trace < 0
    assert abs(est.trace - exact) <= 4 * est.stderr
    again = hutchinson_trace(
        _op(tiny), max_probes=100, rel_err=0.0, block=50, generator=generator(3)
    )
    assert again.trace == est.trace  # seeded probes: a re-run reproduces the value


def test_stopping_rule_uses_the_magnitude_so_negative_traces_are_not_cut_short(tiny):
    H = tiny["H"]
    exact = float(H.trace())
    est = hutchinson_trace(
        MatrixOperator(H), max_probes=100_000, rel_err=0.05, block=100, generator=generator(4)
    )
    # PyHessian 0.1 stops after 2 probes on a negative trace; this runs until 5% is reached
    assert est.probes > 500 and est.probes < 100_000
    assert est.stderr <= 0.05 * abs(est.trace)
    assert est.trace < 0 and abs(est.trace - exact) <= 4 * est.stderr
    # a zero trace can never reach a relative error: the estimate runs to the cap
    zero = MatrixOperator(torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64))
    capped = hutchinson_trace(zero, max_probes=50, rel_err=0.05, block=8, generator=generator(5))
    assert capped.probes == 50


def test_lanczos_finds_the_extreme_eigenvalues_of_the_model(tiny):
    eigenvalues = torch.linalg.eigvalsh(tiny["H"]).numpy()
    result = lanczos(_op(tiny), 40, runs=1, generator=generator(6))
    scale = float(np.abs(eigenvalues).max())
    assert result.bottom < 0  # the saddle's negative curvature is found
    assert abs(result.top - eigenvalues.max()) <= 1e-6 * scale
    assert abs(result.bottom - eigenvalues.min()) <= 1e-6 * scale
    # every Ritz value is within its residual bound of some true eigenvalue
    distance = np.abs(result.nodes[0][:, None] - eigenvalues[None, :]).min(axis=1)
    assert np.all(distance <= result.residuals[0] + 1e-9 * scale)
    assert np.isclose(result.weights.sum(), 1.0)


def test_density_mass_matches_the_exact_spectrum(tiny):
    H = tiny["H"]
    eigenvalues = torch.linalg.eigvalsh(H).numpy()
    dim, runs = H.shape[0], 8
    result = lanczos(MatrixOperator(H), dim, runs=runs, generator=generator(7))
    # with m = dim steps every weighted node is an exact eigenvalue
    weighted = result.nodes[result.weights > 1e-10]
    assert np.abs(weighted[:, None] - eigenvalues[None, :]).min(axis=1).max() < 1e-8
    # mass below a threshold: E = k / dim, std <= sqrt(2 k) / dim per Rademacher run
    for threshold in (0.0, float(np.median(eigenvalues)), 0.5 * eigenvalues.max()):
        k = int((eigenvalues < threshold).sum())
        tolerance = 4 * math.sqrt(2 * k) / dim / math.sqrt(runs)
        assert abs(result.mass_below(threshold) - k / dim) <= tolerance
    grid, density = spectral_density(result)
    step = grid[1] - grid[0]
    assert abs(density.sum() * step - 1.0) < 1e-3  # total mass 1
    below = density[grid < 0].sum() * step
    assert abs(below - result.mass_below(0.0)) < 0.02  # smoothing moves little mass


def test_lanczos_continues_past_an_invariant_subspace():
    values = torch.tensor([1.0] * 20 + [2.0] * 20 + [-3.0] * 10, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(50, 50, generator=torch.Generator().manual_seed(0)).double())
    op = MatrixOperator(q @ torch.diag(values) @ q.T)
    result = lanczos(op, 10, runs=2, generator=generator(8))
    assert np.all(np.isfinite(result.nodes)) and np.allclose(result.weights.sum(axis=1), 1.0)
    heavy = result.nodes[result.weights > 1e-8]
    assert np.abs(heavy[:, None] - np.array([1.0, 2.0, -3.0])[None, :]).min(axis=1).max() < 1e-8
    assert result.nodes.shape == (2, 10)  # the fresh blocks fill the remaining steps


def _tiny_data(n, seed, size=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.arange(n) % 10


def test_checkpoints_equal_separate_uninterrupted_runs():
    cfg = ModelConfig(width=4, depth=1, image_size=8)
    x, y = _tiny_data(24, 1)
    curvature = CurvatureConfig(batch_size=8)  # minibatches: the schedule must line up too
    got = {}
    train_with_checkpoints(
        cfg, x, y, curvature, [7, 0, 3], lambda it, st: got.setdefault(it, st), seed=2
    )
    assert sorted(got) == [0, 3, 7]
    init = init_state(cfg, 2)
    assert all(torch.equal(got[0][k], init[k]) for k in init)
    for steps in (3, 7):
        (alone,) = train_population(
            cfg, x, y, torch.ones(1, 24), [init], curvature.train_config(steps), batch_seed=2
        )
        assert all(torch.equal(got[steps][k], alone[k]) for k in alone)
    # restarting the momentum (two calls of 3 and 4 steps) is a different trajectory
    (first,) = train_population(
        cfg, x, y, torch.ones(1, 24), [init], curvature.train_config(3), batch_seed=2
    )
    (restarted,) = train_population(
        cfg, x, y, torch.ones(1, 24), [first], curvature.train_config(4), batch_seed=2
    )
    assert max((restarted[k] - got[7][k]).abs().max() for k in got[7]) > 1e-6
    # the batched (torch.func) path calls the hook with the same states
    seen = {}
    train_population(
        cfg, x, y, torch.ones(2, 24), [init, init], curvature.train_config(7), batch_seed=2,
        path="batched", on_step=lambda k, s, st: seen.setdefault((k, s), {n: v.clone() for n, v in st.items()}),
    )  # fmt: skip
    for k in (0, 1):
        assert max((seen[(k, 3)][n] - got[3][n]).abs().max() for n in got[3]) < 1e-5


def test_plane_geometry_is_exact():
    cfg = ModelConfig(width=3, depth=1, image_size=8)
    a, b, c = (init_state(cfg, s) for s in (0, 1, 2))
    plane = plane_through(a, b, c)
    assert abs(float(plane.first @ plane.second)) < 1e-9 * float(plane.first.norm() ** 2)
    x, y = plane.coords(c)
    assert plane.coords(a) == pytest.approx((0.0, 0.0), abs=1e-12)
    assert plane.coords(b) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert y == pytest.approx(1.0, abs=1e-12)
    for target, (px, py) in ((a, (0, 0)), (b, (1, 0)), (c, (x, y))):
        at = plane.state_at(px, py)
        assert all(torch.allclose(at[k], target[k], atol=1e-6) for k in target)
    # a grid loss equals a plain forward pass at that point
    images, labels = _tiny_data(12, 3)
    losses = grid_losses(cfg, plane, np.array([0.0, 1.0]), np.array([0.0]), {"t": (images, labels)})
    for col, state in enumerate((a, b)):
        model = build_model(cfg)
        model.load_state_dict(state)
        with torch.no_grad():
            direct = F.cross_entropy(model(images), labels).item()
        assert losses["t"][0, col] == pytest.approx(direct, rel=1e-5)


def test_compute_landscape_small():
    cfg = ModelConfig(width=3, depth=1, image_size=8)
    real, distilled, test = _tiny_data(40, 4), _tiny_data(10, 5), _tiny_data(16, 6)
    land = compute_landscape(
        cfg, real, distilled, test,
        LandscapeConfig(grid=4, batch_size=16, distilled_steps=6, trajectory_points=3), seed=1,
    )  # fmt: skip
    assert land.real_steps == 3  # one epoch of 40 images in batches of 16
    assert land.losses["test"].shape == land.losses["distilled"].shape == (4, 4)
    assert np.all(np.isfinite(land.losses["test"]))
    assert land.points["real"] == pytest.approx((1.0, 0.0), abs=1e-9)
    assert land.points["distilled"][1] == pytest.approx(1.0, abs=1e-9)
    assert land.paths["real"][0] == pytest.approx((0.0, 0.0), abs=1e-12)
    assert land.paths["real"][-1] == pytest.approx((1.0, 0.0), abs=1e-6)
    model = build_model(cfg)
    model.load_state_dict(init_state(cfg, 1))
    with torch.no_grad():
        direct = F.cross_entropy(model(test[0]), test[1]).item()
    assert land.point_losses["test"]["init"] == pytest.approx(direct, rel=1e-5)


# -- command line --------------------------------------------------------------------------------


def _add_set(tmp_path, name="bptt-small", method="bptt", n=10):
    from ddsem.db import open_db
    from ddsem.db.sets import add_distilled_set

    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, 3, 32, 32)).astype(np.float32)
    add_distilled_set(open_db(tmp_path / "test.db"), name, method, images, np.arange(n) % 10)


def _dump(tmp_path) -> str:
    with sqlite3.connect(tmp_path / "test.db") as con:
        return "\n".join(con.iterdump())


SMALL = [
    "--width", "4", "--depth", "2", "--train-samples", "32", "--iterations", "4",
    "--every", "4", "--probes", "4", "--probe-block", "4", "--real-samples", "16",
    "--lanczos-steps", "3",
]  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "gm"], "no distilled set made by method 'gm'"),
        (["--method", "bptt", "--every", "0"], "--every must be at least 1"),
        (["--method", "bptt", "--rel-err", "0"], "--rel-err must lie strictly between 0 and 1"),
        (["--method", "bptt", "--rel-err", "1.5"], "--rel-err must lie strictly between"),
        (["--method", "bptt", "--density-at", "0,9"], "--density-at 9 is beyond the run"),
        ([], "name at least one source"),
    ],
)
def test_curvature_bad_input(cli, tmp_path, args, message):
    _add_set(tmp_path)
    before = _dump(tmp_path)
    result = cli("curvature", *SMALL, *args)
    assert result.code == 2
    assert result.err.startswith("error: ") and message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert _dump(tmp_path) == before


def test_curvature_end_to_end_and_resume(cli, tmp_path, synthetic_path):
    _add_set(tmp_path)
    args = ["curvature", *SMALL, "--method", "bptt", "--real", "--density-at", "1",
            "--data", str(synthetic_path), "--out", str(tmp_path / "fig")]  # fmt: skip
    first = cli(*args, "--json")
    assert first.code == 0, first.err
    out = json.loads(first.out)
    assert out["computed"] == 6 and len(out["points"]) == 6  # 2 sources x iterations 0, 1, 4
    assert "unbiased estimate of the full training set's trace" in out["real_note"]
    assert all((tmp_path / "fig" / f).is_file() for f in
               ("curvature-run1-trace.png", "curvature-run1-density.png"))  # fmt: skip
    densities = [p for p in out["points"] if p["has_density"]]
    assert {(p["source"], p["iteration"]) for p in densities} == {("bptt-small", 1), ("real", 1)}
    # lose some points (a crash), resume: only those are computed, with the same values
    with sqlite3.connect(tmp_path / "test.db") as con:
        con.execute("DELETE FROM curvaturepoint WHERE iteration = 4")
        con.execute("UPDATE curvaturepoint SET density = NULL WHERE source = 'real'")
    second = cli(*args)
    assert second.code == 0 and "computed 3 of 6 points" in second.out
    assert "unbiased estimate" in second.out and "top eigenvalue" in second.out
    assert "of the spectrum below -" in second.out and "(-1% of the spectral radius)" in second.out
    from ddsem.db import open_db
    from ddsem.db.curvature import read_points

    again = [p.as_json() for p in read_points(open_db(tmp_path / "test.db"), out["run_id"])]
    assert sorted(again, key=str) == sorted(out["points"], key=str)  # replayed exactly


def test_landscape_end_to_end(cli, tmp_path, synthetic_path):
    _add_set(tmp_path)
    args = ["landscape", "--method", "bptt", "--grid", "3", "--width", "4", "--depth", "2",
            "--train-samples", "32", "--test-samples", "20", "--distilled-steps", "5",
            "--data", str(synthetic_path), "--out", str(tmp_path / "fig")]  # fmt: skip
    first = cli(*args, "--json")
    assert first.code == 0, first.err
    out = json.loads(first.out)
    assert out["reused"] is False and out["sources"] == ["test", "distilled"]
    assert len(out["xs"]) == len(out["ys"]) == 3 and out["points"]["real"][0] == pytest.approx(1)
    assert (tmp_path / "fig" / f"landscape-{out['analysis_id']}.png").is_file()
    from ddsem.db import open_db
    from ddsem.db.curvature import find_landscape

    stored = find_landscape(open_db(tmp_path / "test.db"), out["params"])
    assert stored is not None and stored.losses.shape == (2, 3, 3)
    assert np.all(np.isfinite(stored.losses))
    again = json.loads(cli(*args, "--json").out)
    assert again["reused"] is True and again["analysis_id"] == out["analysis_id"]
    bad = cli("landscape", "--method", "dm", "--data", str(synthetic_path))
    assert bad.code == 2 and "no distilled set made by method 'dm'" in bad.err


def test_a_changed_source_loses_its_stale_points(tmp_path):
    from ddsem.db import open_db
    from ddsem.db.curvature import open_curvature_run, read_points, save_point, stored_points

    db = open_db(tmp_path / "c.db")
    config = {"model": "tiny", "seed": 0}
    sources = [{"source": "bptt", "set_id": 1}, {"source": "real", "images": 16}]
    run = open_curvature_run(db, config, sources)
    for src in ("bptt", "real"):
        save_point(db, run.id, src, 0, trace=1.0, trace_stderr=0.1, probes=10)
    save_point(db, run.id, "bptt", 0, top_eigenvalue=2.0, spectrum=np.ones((1, 3, 3)))
    assert stored_points(db, run.id) == {("bptt", 0): True, ("real", 0): False}
    same = open_curvature_run(db, config, [{"source": "real", "images": 32}])
    assert same.id == run.id and [s["source"] for s in same.sources] == ["bptt", "real"]
    (kept,) = read_points(db, run.id)
    assert kept.source == "bptt" and kept.top_eigenvalue == 2.0 and kept.spectrum.shape == (1, 3, 3)
    assert open_curvature_run(db, {**config, "seed": 1}, sources).id != run.id
