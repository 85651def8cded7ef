"""The retraining protocols of ``ddsem evaluate`` (paper, dc, dsa) against independent
references: DC's evaluate_synset schedule counted by a plain loop, a torch.optim.SGD loop with
the same augmentation draws, and the engine's augmentation hook observed with a recorder."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddsem.config import DCEvalConfig, DSAEvalConfig, ModelConfig, TrainConfig
from ddsem.distill import evaluate as ev
from ddsem.distill.evaluate import SeededAugment, protocol_lr, protocol_phases
from ddsem.models import build_model
from ddsem.train import initial_states, train_population

TINY = ModelConfig(width=8, depth=2)


def _data(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 10


def _epochs_per_lr(epochs: int, lr: float) -> list[tuple[int, float]]:
    """DC's evaluate_synset loop, counted: `for ep in range(Epoch+1): train; if ep in
    [Epoch//2+1]: lr *= 0.1` -> [(epochs trained at lr, lr), ...]."""
    runs: list[list] = []
    for ep in range(epochs + 1):
        if not runs or runs[-1][1] != lr:
            runs.append([0, lr])
        runs[-1][0] += 1
        if ep in [epochs // 2 + 1]:
            lr *= 0.1
    return [(n, r) for n, r in runs]


# -- the schedule ---------------------------------------------------------------------------------


@pytest.mark.parametrize("epochs", [1, 2, 3, 10, 300, 1000])
@pytest.mark.parametrize("n", [100, 500, 256])
def test_dsa_and_dc_schedules_are_dcs_loop(epochs, n):
    per_epoch = -(-n // 256)
    for protocol, cfg in (
        ("dsa", replace(DSAEvalConfig(), epochs=epochs)),
        ("dc", replace(DCEvalConfig(), epochs=epochs)),
    ):
        phases = protocol_phases(protocol, n, dc=cfg, dsa=cfg)
        expected = _epochs_per_lr(epochs, 0.01)
        assert [p.steps for p in phases] == [e * per_epoch for e, _ in expected]
        assert [p.lr for p in phases] == pytest.approx([lr for _, lr in expected])
        for p in phases:
            assert (p.momentum, p.weight_decay, p.batch_size) == (0.9, 5e-4, 256)


def test_dsa_protocol_defaults():
    first, second = protocol_phases("dsa", 100)
    assert (first.steps, second.steps) == (502, 499)  # epochs 0..501 at 0.01, 502..1000 at 0.001
    assert (first.lr, second.lr) == (0.01, pytest.approx(0.001))
    assert DSAEvalConfig().dsa_strategy == "color_crop_cutout_flip_scale_rotate"
    assert ev.protocol_augmentation("dsa") == "color_crop_cutout_flip_scale_rotate"
    assert ev.protocol_augmentation("dc") == ev.protocol_augmentation("paper") == "none"
    assert protocol_phases("dc", 100)[0].steps == 152  # dc unchanged: 300 epochs
    assert protocol_lr(DSAEvalConfig(), None) == (0.01, "config")
    assert protocol_lr(DSAEvalConfig(), 0.0213) == (0.0213, "learned")
    assert protocol_lr(replace(DSAEvalConfig(), learned_lr=False), 0.0213) == (0.01, "config")
    a, b = protocol_phases("dsa", 100, dsa=replace(DSAEvalConfig(), lr=0.03))
    assert (a.lr, b.lr) == (0.03, pytest.approx(0.003))
    with pytest.raises(Exception, match="unknown evaluation protocol 'x': use paper, dc, dsa"):
        protocol_phases("x", 100)


# -- the engine's augmentation hook ---------------------------------------------------------------


class Recorder:
    def __init__(self, transform=None):
        self.calls: list[tuple[int, int, tuple]] = []
        self.transform = transform

    def __call__(self, x, step, model):
        self.calls.append((step, model, tuple(x.shape)))
        return x if self.transform is None else self.transform(x, step, model)


def _shift(x, step, model):
    """A per-model, per-step transform that is easy to reproduce by hand."""
    return x * (1.0 + 0.1 * model) + 0.01 * step


@pytest.mark.parametrize("path", ["loop", "batched"])
def test_augment_none_and_identity_are_bit_identical(path):
    x, y = _data()
    cfg = TrainConfig(steps=4, lr=0.05, weight_decay=5e-4, batch_size=8)
    init = initial_states(TINY, [0, 1])
    w = torch.ones(2, len(y))
    plain = train_population(TINY, x, y, w, init, cfg, path=path, batch_seed=3)
    rec = Recorder()
    seen = train_population(TINY, x, y, w, init, cfg, path=path, batch_seed=3, augment=rec)
    for a, b in zip(plain, seen, strict=True):
        if path == "loop":  # the same batch tensor reaches the same forward
            assert all(torch.equal(a[k], b[k]) for k in a)
        else:  # per-model batches (K, B, ...) take other kernels than one shared batch
            assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    # every model, every step, the minibatch (8 of the 20 images), before the forward
    assert sorted((s, m) for s, m, _ in rec.calls) == [(s, m) for s in range(4) for m in (0, 1)]
    assert {shape for _, _, shape in rec.calls} == {(8, 3, 32, 32)}


def test_augment_reaches_the_forward_of_each_model_on_both_paths():
    x, y = _data(10)
    cfg = TrainConfig(steps=4, lr=0.05, weight_decay=5e-4)
    init = initial_states(TINY, [0, 1])
    w = torch.ones(2, len(y))
    loop = train_population(TINY, x, y, w, init, cfg, path="loop", augment=_shift)
    batched = train_population(TINY, x, y, w, init, cfg, path="batched", augment=_shift)
    plain = train_population(TINY, x, y, w, init, cfg, path="loop")
    for k in range(2):
        # an independent reference: torch.optim.SGD on the transformed batch of model k
        model = build_model(TINY)
        model.load_state_dict(init[k])
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        for step in range(4):
            opt.zero_grad()
            F.cross_entropy(model(_shift(x, step, k)), y).backward()
            opt.step()
        ref = model.state_dict()
        for got in (loop[k], batched[k]):
            assert max((got[n] - ref[n]).abs().max().item() for n in ref) < 1e-5
        assert max((plain[k][n] - ref[n]).abs().max().item() for n in ref) > 1e-4


# -- the dsa protocol through evaluate_set --------------------------------------------------------


def _reference_evaluate_synset(x, y, seed, epochs, lr, strategy):
    """DC/MTT's evaluate_synset, written plainly: one full batch per epoch (n <= 256), DSA on
    each batch (the draws of SeededAugment), the lr cut with a fresh optimiser after epoch
    epochs//2 + 1."""
    from ddsem.models import init_state

    model = build_model(TINY)
    model.load_state_dict(init_state(TINY, seed))
    aug = SeededAugment(strategy, [seed])
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    for ep in range(epochs + 1):
        opt.zero_grad()
        F.cross_entropy(model(aug(x, ep, 0)), y).backward()
        opt.step()
        if ep in [epochs // 2 + 1]:
            lr *= 0.1
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    return model.state_dict()


def test_evaluate_set_runs_the_dsa_protocol(monkeypatch):
    x, y = _data(20)
    test_x, test_y = _data(30, seed=1)
    cfg = replace(DSAEvalConfig(), epochs=6, lr=0.02)
    phases = protocol_phases("dsa", len(y), dsa=cfg)
    calls, states = [], []
    real_train, real_eval = ev.train_population, ev.evaluate_population

    def recording_train(*args, **kw):
        calls.append((args[5], kw["augment"]))
        return real_train(*args, **kw)

    def recording_eval(model_cfg, st, *args, **kw):
        states.extend(st)
        return real_eval(model_cfg, st, *args, **kw)

    monkeypatch.setattr(ev, "train_population", recording_train)
    monkeypatch.setattr(ev, "evaluate_population", recording_eval)
    seeds = [5, 6]
    res = ev.evaluate_set(x, y, TINY, phases, seeds, test_x, test_y, augmentation=cfg.dsa_strategy)
    assert [(c.steps, c.lr) for c, _ in calls] == [(5, 0.02), (2, pytest.approx(0.002))]
    assert all(c.weight_decay == 5e-4 and c.momentum == 0.9 for c, _ in calls)
    assert [a.offset for _, a in calls] == [0, 5]  # draws continue across the lr step
    assert calls[0][1].seeds == seeds
    for k, seed in enumerate(seeds):
        ref = _reference_evaluate_synset(x, y, seed, 6, 0.02, cfg.dsa_strategy)
        assert max((states[k][n] - ref[n]).abs().max().item() for n in ref) < 1e-5
    again = ev.evaluate_set(
        x, y, TINY, phases, seeds, test_x, test_y, augmentation=cfg.dsa_strategy
    )
    assert again.accuracies == res.accuracies  # reproducible, to the bit
    assert all(torch.equal(states[2][n], states[0][n]) for n in states[0])
    plain = ev.evaluate_set(x, y, TINY, phases, seeds, test_x, test_y)  # no augmentation
    assert len(plain.accuracies) == 2 and all(a is None for _, a in calls[-2:])
    assert max((states[4][n] - states[0][n]).abs().max().item() for n in states[0]) > 1e-4


def test_seeded_augment_is_per_model_and_step():
    x, _ = _data(8)
    aug = SeededAugment("color_crop_cutout_flip_scale_rotate", [0, 1], offset=0)
    assert torch.equal(aug(x, 3, 1), aug(x, 3, 1))
    differs = [not torch.equal(aug(x, s, 0), aug(x, s, 1)) for s in range(10)]
    assert sum(differs) >= 8
    assert torch.equal(
        SeededAugment("color", [0, 1], offset=2)(x, 0, 1), SeededAugment("color", [0, 1])(x, 2, 1)
    )
    assert torch.equal(SeededAugment("none", [0])(x, 0, 0), x)


# -- the job and the command line -----------------------------------------------------------------


def _rows(db: str) -> list:
    con = sqlite3.connect(db)
    try:
        return con.execute(
            "SELECT params_json, result_json FROM analysisrun WHERE kind = 'evaluate' ORDER BY 1"
        ).fetchall()
    finally:
        con.close()


def _add_set(ws, name, method, synthetic, lr=None):
    from ddsem.data import normalize
    from ddsem.db.sets import add_distilled_set

    idx = np.arange(0, len(synthetic.train_y), 20)  # one image per class
    images = normalize(synthetic.train_x[idx]).numpy()
    return add_distilled_set(
        ws.db, name, method, images, synthetic.train_y[idx], synthetic_lr=lr, provenance={}
    )


def test_the_learned_lr_of_a_set_is_the_dsa_lr(workspace, synthetic):
    from ddsem.jobs import evaluate as job

    _add_set(workspace, "tm-a", "tm", synthetic, lr=0.0234)
    _add_set(workspace, "dm-a", "dm", synthetic)
    common = {"protocols": ("paper", "dc", "dsa"), "width": 8, "runs": 1, "data": synthetic}
    tm = {u.protocol: u for u in job.plan(workspace, job.EvaluateRequest("tm-a", **common)).units}
    dm = {u.protocol: u for u in job.plan(workspace, job.EvaluateRequest("dm-a", **common)).units}
    assert [ph.lr for ph in tm["dsa"].phases] == pytest.approx([0.0234, 0.00234])
    assert tm["dsa"].params["lr_source"] == "learned"
    assert tm["dsa"].params["augmentation"] == "color_crop_cutout_flip_scale_rotate"
    assert [ph.lr for ph in dm["dsa"].phases] == pytest.approx([0.01, 0.001])
    assert dm["dsa"].params["lr_source"] == "config"
    for units in (tm, dm):  # the other protocols keep their lr and train without augmentation
        assert units["dc"].phases[0].lr == units["paper"].phases[0].lr == 0.01
        assert units["dc"].params["augmentation"] == units["paper"].params["augmentation"]
        assert units["dc"].params["augmentation"] == "none"
    assert sum(ph.steps for ph in tm["dsa"].phases) == 1001  # 10 images: 1 step an epoch


def test_cli_dsa_is_stored_with_its_protocol_and_rerun_is_a_noop(cli, tmp_path, synthetic_path):
    from ddsem.data import load_dataset
    from ddsem.jobs import Workspace

    db = str(tmp_path / "test.db")
    ws = Workspace.open(db)
    _add_set(ws, "tm-a", "tm", load_dataset(str(synthetic_path)), lr=0.02)
    ws.db.close()
    args = ["evaluate", "--set", "tm-a", "--protocol", "dsa,dc", "--epochs", "3", "--runs", "2"]
    args += ["--width", "8", "--test-limit", "20", "--data", str(synthetic_path)]
    first = cli(*args)
    assert first.code == 0, first.err
    assert "dsa: 4 steps, lr 0.02 (the set's learned lr), weight decay 0.0005" in first.out
    assert "augmentation color_crop_cutout_flip_scale_rotate" in first.out
    assert "dc: 4 steps, lr 0.01, weight decay 0.0005, augmentation none" in first.out
    stored = {json.loads(p)["protocol"]: json.loads(p) for p, _ in _rows(db)}
    assert stored["dsa"]["augmentation"] == "color_crop_cutout_flip_scale_rotate"
    assert stored["dsa"]["lr_source"] == "learned"
    assert [ph["lr"] for ph in stored["dsa"]["phases"]] == pytest.approx([0.02, 0.002])
    assert (stored["dc"]["augmentation"], stored["dc"]["lr_source"]) == ("none", "config")
    before = _rows(db)
    again = cli(*args, "--json")
    assert again.code == 0 and _rows(db) == before
    assert [r["protocol"] for r in json.loads(again.out)["results"]] == ["dsa", "dc"]


def test_an_unknown_protocol_is_one_line_and_the_database_unchanged(cli, tmp_path, synthetic):
    from ddsem.jobs import Workspace

    db = tmp_path / "test.db"
    ws = Workspace.open(str(db))
    _add_set(ws, "tm-a", "tm", synthetic, lr=0.02)
    ws.db.close()
    before = db.read_bytes()
    bad = cli("evaluate", "--set", "tm-a", "--protocol", "paper,dsaa")
    assert bad.code == 2
    lines = [ln for ln in (bad.err + bad.out).splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown evaluation protocol 'dsaa': use paper, dc, dsa" in lines[0]
    assert db.read_bytes() == before
    zero = cli("evaluate", "--set", "tm-a", "--protocol", "dsa", "--epochs", "0")
    assert zero.code == 2 and "--epochs must be a positive number, got 0" in zero.err
    assert db.read_bytes() == before
