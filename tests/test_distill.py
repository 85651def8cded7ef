"""Distillation (DM, GM, TM, BPTT), expert trajectories, evaluation and the architectures.

References: BPTT's recomputed hypergradient against plain autograd through the unrolled
training; GM's layer distance against torch's cosine similarity; DSA transforms against torch's
flip / identity; architecture sizes against the reference networks' parameter counts; every
method's set against its own initialisation, retrained and tested on real CIFAR-10.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddsem.config import (
    BPTTConfig,
    DMConfig,
    ExpertConfig,
    GMConfig,
    ModelConfig,
    TMConfig,
    TrainConfig,
)
from ddsem.distill import augment
from ddsem.distill.bptt import BPTT, unrolled_hypergradient
from ddsem.distill.common import FlatModel, RealData, initial_set, run
from ddsem.distill.dm import DM
from ddsem.distill.evaluate import protocol_phases
from ddsem.distill.experts import train_expert
from ddsem.distill.gm import GM, layer_distance, loops_for
from ddsem.distill.tm import TM, resolve
from ddsem.models import build_model, init_state, reference_config
from ddsem.train import evaluate_population, initial_states, train_population

WIDTH = 16
MODEL = ModelConfig(width=WIDTH)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The CI machine is small and shared: one intra-op thread is the fastest setting there
    (module scope, so the module's data fixtures below run under it too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- pieces with independent references ----------------------------------------------------------


def test_augment_shared_parameters_act_alike_on_real_and_synthetic():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 32, 32)
    for family in augment.FAMILIES:
        params = augment.sample((family,), 1, g, (32, 32), shared=True)
        both = augment.apply(x, params)
        assert torch.allclose(both[:2], augment.apply(x[:2], params), atol=1e-6), family
        assert torch.allclose(both[4:], augment.apply(x[4:], params), atol=1e-6), family
        # a shared draw is one transform: image 0 of a copy batch transforms like image 0
        assert torch.allclose(augment.apply(x[[0, 0]], params)[1], both[0], atol=1e-6), family


def test_augment_transforms_match_references_and_carry_gradients():
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    flip = augment.AugParams("flip", {"flip": torch.tensor([True, False])})
    out = augment.apply(x, flip)
    assert torch.equal(out[0], x[0].flip(2)) and torch.equal(out[1], x[1])
    still = augment.AugParams("crop", {"tx": torch.tensor([0]), "ty": torch.tensor([0])})
    assert torch.equal(augment.apply(x, still), x)
    shift = augment.AugParams("crop", {"tx": torch.tensor([2]), "ty": torch.tensor([0])})
    shifted = augment.apply(x, shift)
    assert torch.equal(shifted[:, :, :30], x[:, :, 2:]) and torch.all(shifted[:, :, 30:] == 0)
    unit = augment.AugParams("scale", {"sx": torch.tensor([1.0]), "sy": torch.tensor([1.0])})
    assert torch.allclose(augment.apply(x, unit), x, atol=1e-5)
    g = torch.Generator().manual_seed(1)
    for family in augment.FAMILIES:
        (grad,) = torch.autograd.grad(augment.augment(x, (family,), g).square().sum(), x)
        assert grad.abs().sum() > 0, family
    with pytest.raises(Exception, match="unknown augmentation"):
        augment.parse_strategy("color_blur")


def test_bptt_hypergradient_equals_autograd_through_the_unrolled_training():
    torch.manual_seed(0)
    cfg = ModelConfig(width=4, depth=1, image_size=8)
    model = FlatModel(cfg, torch.device("cpu"))
    w0 = model.flatten(init_state(cfg, 0)).double()
    model.module.double()
    x, y = torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.arange(6)
    ox, oy = torch.randn(12, 3, 8, 8, dtype=torch.float64), torch.arange(12) % 10
    loss, grad = unrolled_hypergradient(model, w0, x, y, ox, oy, steps=7, lr=0.05, momentum=0.9)

    xr = x.clone().requires_grad_(True)
    w, v = w0.clone().requires_grad_(True), torch.zeros_like(w0)
    for _ in range(7):  # the whole unrolled graph, kept in memory
        (g,) = torch.autograd.grad(model.loss(w, xr, y), w, create_graph=True)
        v = 0.9 * v + g
        w = w - 0.05 * v
    reference = model.loss(w, ox, oy)
    (ref_grad,) = torch.autograd.grad(reference, xr)
    assert float(loss) == pytest.approx(float(reference.detach()), rel=1e-12)
    assert torch.allclose(grad, ref_grad, rtol=1e-9, atol=1e-12)
    assert ref_grad.abs().max() > 1e-4


def test_gm_layer_distance_is_one_minus_cosine_per_output_unit():
    a, b = torch.randn(5, 3, 3, 3), torch.randn(5, 3, 3, 3)
    expected = (1 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=0)).sum()
    assert float(layer_distance(a, b)) == pytest.approx(float(expected), rel=1e-4)
    assert float(layer_distance(torch.randn(7), torch.randn(7))) == 0.0  # biases are ignored
    assert loops_for(10, GMConfig()) == (10, 50) and loops_for(2, GMConfig()) == (1, 1)


def test_architectures_have_the_reference_sizes_and_norms():
    sizes = {"alexnet": 1_872_202, "vgg11": 9_231_114, "resnet18": 11_173_962, "convnet": 320_010}
    for arch, n in sizes.items():
        model = build_model(reference_config(arch, ModelConfig()))
        assert sum(p.numel() for p in model.parameters()) == n, arch
    small = reference_config("resnet18", ModelConfig(width=8))
    assert build_model(small)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert reference_config("alexnet", MODEL).norm == "none"
    assert reference_config("vgg11bn", MODEL).norm == "batchnorm"


def test_dc_protocol_phases_follow_the_reference_schedule():
    first, second = protocol_phases("dc", 100)
    assert (first.steps, first.lr, second.steps, second.lr) == (
        152,
        0.01,
        149,
        pytest.approx(0.001),
    )
    assert first.weight_decay == 5e-4 and first.momentum == 0.9 and first.batch_size == 256
    a, b = protocol_phases("dc", 500)  # two minibatches per epoch
    assert (a.steps, b.steps) == (304, 298)
    assert protocol_phases("paper", 100) == [TrainConfig()]


def test_tm_table_fills_per_ipc_settings():
    cfg = resolve(TMConfig(), 10)
    assert (cfg.syn_steps, cfg.expert_epochs, cfg.max_start_epoch) == (30, 2, 20)
    assert resolve(TMConfig(syn_steps=7), 1).syn_steps == 7
    assert resolve(TMConfig(), 2).max_start_epoch == 2  # the entry at or below


# -- each method: gradients on the synthetic data, improvement on real CIFAR-10 ------------------


@pytest.fixture(scope="module")
def real(cifar):
    return RealData(cifar.train_x, cifar.train_y, cifar.num_classes, torch.device("cpu"))


@pytest.fixture(scope="module")
def test_set(cifar):
    from ddsem.data import normalize, stratified_indices

    idx = stratified_indices(cifar.test_y, 500, 0)
    return normalize(cifar.test_x[idx]), torch.from_numpy(cifar.test_y[idx])


def two_experts(data, limit: int | None = None) -> list[torch.Tensor]:
    """Two short expert trajectories (3 epochs) on ``limit`` training images of ``data``."""
    from ddsem.data import normalize, stratified_indices

    idx = stratified_indices(data.train_y, limit, 0)
    x, y = normalize(data.train_x[idx]), torch.from_numpy(data.train_y[idx])
    cfg = ExpertConfig(epochs=3)
    return [torch.from_numpy(train_expert(MODEL, cfg, x, y, seed)[0]) for seed in (0, 1)]


@pytest.fixture(scope="module")
def experts(cifar):
    """Two short expert trajectories on 1,000 real images."""
    return two_experts(cifar, 1000)


@pytest.fixture(scope="module")
def synthetic_real(synthetic):
    return RealData(
        synthetic.train_x, synthetic.train_y, synthetic.num_classes, torch.device("cpu")
    )


@pytest.fixture(scope="module")
def synthetic_experts(synthetic):
    """Two short expert trajectories on the 200 synthetic training images."""
    return two_experts(synthetic)


def retrained_accuracy(images, labels, test_set) -> float:
    """Mean test accuracy of 2 models trained with the paper's protocol (300 full-batch steps)."""
    states = train_population(
        MODEL, images, labels, torch.ones(2, len(labels)), initial_states(MODEL, [100, 101]),
        TrainConfig(),
    )  # fmt: skip
    return float(evaluate_population(MODEL, states, *test_set).accuracy.mean())


@pytest.fixture(scope="module")
def baseline(real, test_set):
    """The shared starting point (seed 0: one random real image per class) and its accuracy."""
    start = initial_set(real, 1, "real", torch.Generator().manual_seed(0))
    return start, retrained_accuracy(start.images, start.labels, test_set)


def make(method, images, labels, real, experts):
    """A tiny configuration of each method and its number of iterations. GM and BPTT take a
    larger image lr than their published one so that a few tens of iterations move the images."""
    if method == "dm":
        return DM(images, labels, real, MODEL, DMConfig(batch_real=16), "cpu"), 50
    if method == "gm":
        return GM(images, labels, real, MODEL, GMConfig(batch_real=32, lr_img=3.0), "cpu", 1), 20
    if method == "tm":
        cfg = resolve(TMConfig(syn_steps=10, expert_epochs=2, max_start_epoch=2), 1)
        return TM(images, labels, experts, MODEL, cfg, "cpu"), 25
    cfg = BPTTConfig(batch_real=16, inner_steps=20, lr_img=300.0)
    return BPTT(images, labels, real, MODEL, cfg, "cpu"), 15


@pytest.mark.parametrize("method", ["dm", "gm", "tm", "bptt"])
def test_method_improves_on_its_real_initialisation(method, real, test_set, experts, baseline):
    """ipc 1, width 16, tens of iterations: the distilled set beats the real images it started
    from by at least 2.5 points of retrained test accuracy (seeded, 500 test images)."""
    start, before = baseline
    g = torch.Generator().manual_seed(0)
    assert torch.equal(initial_set(real, 1, "real", g).images, start.images)  # same draws follow
    distiller, iterations = make(method, start.images, start.labels, real, experts)
    outcome = run(distiller, g, start=0, total=iterations)
    assert outcome.finished and all(np.isfinite(outcome.losses))
    assert np.isfinite(distiller.last_grad_norm) and distiller.last_grad_norm > 0
    after = retrained_accuracy(distiller.images.detach(), start.labels, test_set)
    assert after >= before + 0.025, (method, before, after)


@pytest.mark.parametrize("method", ["dm", "gm", "tm", "bptt"])
def test_gradients_reach_the_images(method, synthetic_real, synthetic_experts):
    real = synthetic_real
    g = torch.Generator().manual_seed(3)
    start = initial_set(real, 1, "noise", g)
    distiller, _ = make(method, start.images, start.labels, real, synthetic_experts)
    if method == "bptt":
        distiller.cfg = replace(distiller.cfg, inner_steps=3)
    if method == "tm":
        distiller.cfg = replace(distiller.cfg, syn_steps=2)
    distiller.step(g)
    moved = (distiller.images.detach() - start.images).abs()
    assert distiller.last_grad_norm > 0 and torch.isfinite(distiller.images).all()
    assert (moved.flatten(1).sum(1) > 0).all()  # every synthetic image received a gradient
    if method == "tm":
        assert distiller.synthetic_lr != float(torch.tensor(0.01))  # the learned lr moved too


# -- command line: resume, provenance, evaluate, bad input ---------------------------------------

DM_ARGS = [
    "--method",
    "dm",
    "--ipc",
    "1",
    "--width",
    "8",
    "--batch-real",
    "8",
    "--real-limit",
    "200",
]


def _rows(db: str) -> dict[str, list]:
    con = sqlite3.connect(db)
    try:
        names = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        return {n: con.execute(f"select * from {n}").fetchall() for n in names}
    finally:
        con.close()


def _set(cli, name: str) -> dict:
    return json.loads(cli("sets", "show", name, "--json").out)


def _tensors(tmp_path, name: str) -> tuple[np.ndarray, np.ndarray]:
    from ddsem.db import open_db
    from ddsem.db.sets import find_set, set_tensors

    store = open_db(str(tmp_path / "test.db"))
    try:
        return set_tensors(store, find_set(store, name).id)
    finally:
        store.close()


def test_resumed_run_equals_uninterrupted_run(cli, tmp_path, synthetic_path):
    data = ["--data", str(synthetic_path)]
    common = [
        *DM_ARGS,
        *data,
        "--iterations",
        "10",
        "--seed",
        "4",
        "--param",
        "dsa_strategy=color_crop_flip",
    ]
    straight = cli("distill", *common, "--name", "straight", "--json")
    assert straight.code == 0, straight.err
    first = cli("distill", *common, "--name", "resumed", "--stop-after", "5")
    assert first.code == 0 and "stopped at iteration 5 of 10" in first.out
    second = cli("distill", *common, "--name", "resumed", "--resume")
    assert second.code == 0, second.err
    assert "resuming dm run for 'resumed' at iteration 5 of 10" in second.out

    a, b = _tensors(tmp_path, "straight"), _tensors(tmp_path, "resumed")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    prov = _set(cli, "resumed")["provenance"]
    assert prov["method"] == "dm" and prov["iterations"] == 10 and prov["seed"] == 4
    assert prov["config"]["params"]["batch_real"] == 8 and prov["wall_seconds"] > 0
    assert len(prov["init_real_indices"]) == 10
    assert json.loads(straight.out)["method"] == "dm"


def test_tm_experts_resume_and_evaluate_from_the_command_line(cli, tmp_path, synthetic_path):
    data = ["--data", str(synthetic_path)]
    small = ["--width", "8", "--real-limit", "200"]
    tm = [
        "--method",
        "tm",
        "--ipc",
        "1",
        *small,
        *data,
        "--iterations",
        "6",
        "--param",
        "syn_steps=3",
    ]
    missing = cli("distill", *tm)
    assert missing.code == 2 and "ddsem distill experts --width 8" in missing.err
    made = cli(
        "distill",
        "experts",
        *small,
        *data,
        "--num-experts",
        "2",
        "--epochs",
        "2",
        "--test-limit",
        "100",
    )
    assert made.code == 0, made.err
    again = cli("distill", "experts", *small, *data, "--num-experts", "2", "--epochs", "2")
    assert "nothing to do" in again.out
    short = cli("distill", *tm, "--param", "max_start_epoch=5")
    assert short.code == 2 and "trained for 2 epochs" in short.err
    tm_args = [*tm, "--param", "max_start_epoch=1", "--param", "expert_epochs=1"]
    assert cli("distill", *tm_args, "--name", "tm-a").code == 0
    assert cli("distill", *tm_args, "--name", "tm-b", "--stop-after", "3").code == 0
    assert cli("distill", *tm_args, "--name", "tm-b", "--resume").code == 0
    a, b = _set(cli, "tm-a"), _set(cli, "tm-b")
    assert a["synthetic_lr"] == b["synthetic_lr"] and a["synthetic_lr"] != 0.01
    assert np.array_equal(_tensors(tmp_path, "tm-a")[0], _tensors(tmp_path, "tm-b")[0])
    assert a["provenance"]["experts"]["count"] == 2

    args = ["evaluate", "--set", "tm-a", "--arch", "convnet,alexnet", "--runs", "2", "--width", "8"]
    args += ["--test-limit", "100", *data, "--json"]
    first = cli(*args)
    assert first.code == 0, first.err
    result = json.loads(first.out)
    cells = {(r["arch"], r["protocol"]): r for r in result["results"]}
    assert set(cells) == {(a, p) for a in ("convnet", "alexnet") for p in ("paper", "dc")}
    for r in cells.values():
        assert len(r["accuracies"]) == 2 and 0.0 <= r["mean"] <= 1.0
        assert r["std"] == pytest.approx(float(np.std(r["accuracies"])))
    assert json.loads(cli(*args).out) == result  # stored: a re-run reads, it does not retrain


def test_bad_input_is_one_line_exit_2_and_leaves_the_database_unchanged(
    cli, tmp_path, synthetic_path
):
    data = ["--data", str(synthetic_path)]
    db = str(tmp_path / "test.db")
    assert cli("distill", *DM_ARGS, *data, "--iterations", "4", "--stop-after", "2").code == 0
    before = _rows(db)
    cases = [
        (["distill", "--method", "dm", "--ipc", "0", *data], "--ipc must be a positive number"),
        (["distill", *DM_ARGS[:2], "--ipc", "21", *DM_ARGS[4:], *data], "more than class"),
        (["distill", "--method", "kip", *data], "unknown distillation method 'kip'"),
        (
            ["distill", *DM_ARGS, *data, "--iterations", "4", "--name", "x", "--resume"],
            "nothing to resume",
        ),
        (["distill", *DM_ARGS, *data, "--iterations", "5", "--resume"], "different configuration"),
        (["distill", *DM_ARGS, *data, "--iterations", "4"], "pass --resume to continue"),
        (["distill", *DM_ARGS, *data, "--param", "syn_steps=3"], "dm has no parameter 'syn_steps'"),
        (
            ["distill", "--method", "tm", "--ipc", "1", "--width", "8", *data],
            "ddsem distill experts",
        ),
        (
            ["evaluate", "--set", "nope", "--arch", "convnet", *data],
            "no distilled set named 'nope'",
        ),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.code == 2, (args, result.out, result.err)
        assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
        assert message in result.err, (message, result.err)
        assert _rows(db) == before, args
    assert cli("distill", *DM_ARGS, *data, "--iterations", "4", "--resume").code == 0
    before = _rows(db)
    result = cli("evaluate", "--set", "dm-ipc1", "--arch", "convnet,lenet5", *data)
    assert result.code == 2 and "unknown architecture 'lenet5'" in result.err
    assert _rows(db) == before
