"""``ddsem analyze inverse`` (paper Fig. 2): real-data models classify distilled sets and
embed their penultimate features. Tiny synthetic runs: results stored, a re-run trains
nothing, a killed run resumes, figures written, bad input refused; per-class accuracy and
the penultimate features against independent torch/numpy computations."""

from __future__ import annotations

import json
import sqlite3
import sys
import types

import numpy as np
import pytest
import torch

TINY = ["--models", "convnet:4,convnet:6", "--epochs", "2", "--test-limit", "40",
        "--embed-test", "30"]  # fmt: skip


def _add_set(tmp_path, name, method, n=10, shape=(3, 32, 32), seed=0):
    from ddsem.db import open_db
    from ddsem.db.sets import add_distilled_set

    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, *shape)).astype(np.float32)
    db = open_db(tmp_path / "test.db")
    add_distilled_set(db, name, method, images, np.arange(n) % 10)
    db.close()


def _dump(tmp_path) -> str:
    with sqlite3.connect(tmp_path / "test.db") as con:
        return "\n".join(con.iterdump())


def _kinds(tmp_path) -> list[str]:
    with sqlite3.connect(tmp_path / "test.db") as con:
        return [k for (k,) in con.execute("SELECT kind FROM analysisrun ORDER BY id")]


def test_inverse_end_to_end_reuse_and_reference(cli, tmp_path, synthetic_path, monkeypatch):
    _add_set(tmp_path, "bptt-a", "bptt", seed=0)
    _add_set(tmp_path, "dm-a", "dm", seed=1)
    args = ["analyze", "inverse", *TINY, "--data", str(synthetic_path),
            "--out", str(tmp_path / "fig")]  # fmt: skip
    first = cli(*args, "--json")
    assert first.code == 0, first.err
    out = json.loads(first.out)
    assert out["kind"] == "inverse" and out["trained"] == 2 and out["computed"] == 6
    assert out["chance"] == pytest.approx(0.1) and out["test_images"] == 40
    assert out["train_images"] == 200  # synthetic: 20 per class; fewer than 256: full batch
    assert [m["steps"] for m in out["models"]] == [2, 2]
    assert "drops the last partial batch" in out["epoch_note"]
    assert len(out["results"]) == 4 and len(out["embeddings"]) == 2
    from ddsem.analyses.inverse import available_embedder

    assert {e["embedder"] for e in out["embeddings"]} == {available_embedder()}
    assert all(e["test_points"] == 30 for e in out["embeddings"])
    for f in out["figures"]:
        assert (tmp_path / "fig").joinpath(f.split("/")[-1]).is_file()
    assert out["figure"].endswith(".png") and "inverse-accuracy" in out["figure"]
    assert _kinds(tmp_path).count("real-model") == 2
    assert _kinds(tmp_path).count("inverse") == 4
    assert _kinds(tmp_path).count("inverse-embedding") == 2

    # reference: the stored real model, a plain forward pass, numpy per-class accuracy
    from ddsem.config import ModelConfig
    from ddsem.db import open_db
    from ddsem.db.analyses import find_real_model, list_analyses
    from ddsem.db.sets import find_set, set_tensors
    from ddsem.models import build_model

    db = open_db(tmp_path / "test.db")
    stored_models = list_analyses(db, ("real-model",))
    for r in out["results"]:
        width = int(r["model"].split("-")[1])
        (row,) = [m for m in stored_models if m.params["model"]["width"] == width]
        state, real_result = find_real_model(db, row.params)
        assert r["test_accuracy"] == pytest.approx(real_result["test_accuracy"])
        net = build_model(ModelConfig(**row.params["model"]))
        net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        images, labels = set_tensors(db, find_set(db, name=r["set"]).id)
        with torch.no_grad():
            pred = net.eval()(torch.from_numpy(images)).argmax(1).numpy()
        assert r["predictions"] == pred.tolist()
        expect = [
            float(np.mean(pred[labels == c] == c)) if np.any(labels == c) else None
            for c in range(10)
        ]
        assert r["per_class"] == pytest.approx(expect)
        assert r["accuracy"] == pytest.approx(float(np.mean(pred == labels)))
    db.close()

    # an identical re-run trains nothing and computes nothing: the engine may not be called
    def fail(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr("ddsem.train.train_population", fail)
    monkeypatch.setattr("ddsem.analyses.inverse.embed_2d", fail)
    figure = tmp_path / "fig" / out["figure"].split("/")[-1]
    figure.unlink()
    second = cli(*args, "--json")
    assert second.code == 0, second.err
    again = json.loads(second.out)
    assert again["trained"] == 0 and again["computed"] == 0
    assert again["analysis_ids"] == out["analysis_ids"]
    assert [r["accuracy"] for r in again["results"]] == [r["accuracy"] for r in out["results"]]
    assert figure.is_file()  # redrawn
    assert all(e["reused"] for e in again["embeddings"])
    # the table: chance and the model's real test accuracy beside each set's accuracy
    text = cli(*args)
    assert text.code == 0, text.err
    assert "chance 10%" in text.out and "real test %" in text.out and "per-class" in text.out


def test_killed_run_resumes_with_the_models_finished(workspace, synthetic, tmp_path, monkeypatch):
    from ddsem.config import RealModelSpec
    from ddsem.db.sets import add_distilled_set
    from ddsem.jobs.analyze import inverse as job

    rng = np.random.default_rng(0)
    images = rng.normal(size=(10, 3, 32, 32)).astype(np.float32)
    add_distilled_set(workspace.db, "dm-a", "dm", images, np.arange(10) % 10)
    request = job.InverseRequest(
        models=(RealModelSpec("convnet", 4, 1), RealModelSpec("resnet18bn", 8, 1)),
        test_limit=20, embed=False, data=synthetic, out=str(tmp_path / "fig"),
    )  # fmt: skip
    import ddsem.train

    real_train = ddsem.train.train_population
    calls = []

    def killed_on_second(*a, **k):
        calls.append(a[0].arch)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*a, **k)

    monkeypatch.setattr("ddsem.train.train_population", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        job.run(workspace, request)
    p = job.plan(workspace, request)
    assert [m.real_stored is not None for m in p.models] == [True, False]
    assert [u.stored is not None for m in p.models for u in m.units] == [True, False]
    monkeypatch.setattr("ddsem.train.train_population", real_train)
    workspace.progress.phases.clear()
    result = job.run(workspace, request)
    assert result.trained == 1 and result.computed == 1
    trained = [d for d, _, _ in workspace.progress.phases if d.startswith("train ")]
    assert len(trained) == 1 and "resnet18bn" in trained[0]
    assert result.embeddings == [] and result.figure.is_file()


def test_penultimate_features_are_the_last_linear_layers_input():
    from ddsem.analyses.inverse import penultimate_features
    from ddsem.config import ModelConfig
    from ddsem.models import build_model, init_state, reference_config

    x = torch.randn(6, 3, 32, 32)
    for arch in ("convnet", "resnet18bn", "alexnet"):
        cfg = reference_config(arch, ModelConfig(width=8, depth=2))
        state = init_state(cfg, 0)
        net = build_model(cfg)
        net.load_state_dict(state)
        with torch.no_grad():
            expect = net.eval().embed(x).flatten(1).numpy()
        got = penultimate_features(cfg, state, x, chunk_size=4)
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_embedding_uses_umap_when_importable(monkeypatch):
    from ddsem.analyses.inverse import available_embedder, embed_2d

    seen = {}

    class UMAP:
        def __init__(self, n_neighbors, random_state):
            seen.update(n_neighbors=n_neighbors, random_state=random_state)

        def fit_transform(self, x):
            return x[:, :2] * 2

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=UMAP))
    x = np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32)
    assert available_embedder() == "umap"
    xy, used = embed_2d(x, 5, 42)
    assert used == "umap" and seen == {"n_neighbors": 5, "random_state": 42}
    np.testing.assert_allclose(xy, x[:, :2] * 2)
    xy, used = embed_2d(x, 5, 42, "tsne")
    assert used == "tsne" and xy.shape == (20, 2) and np.all(np.isfinite(xy))


def test_model_specs():
    from ddsem.config import RealModelSpec
    from ddsem.errors import UserError
    from ddsem.jobs.analyze.inverse import model_specs

    assert model_specs(None) == (
        RealModelSpec("convnet", 16, 20), RealModelSpec("convnet", 128, 40),
        RealModelSpec("resnet18bn", 128, 40),
    )  # fmt: skip
    assert model_specs("convnet:16,resnet18bn", "5") == (
        RealModelSpec("convnet", 16, 5), RealModelSpec("resnet18bn", 128, 5),
    )  # fmt: skip
    assert model_specs("ConvNet:8", None) == (RealModelSpec("convnet", 8, 40),)
    assert model_specs("convnet:16,convnet:4", "3,4")[1].epochs == 4
    for models, epochs, message in [
        ("convnet:x", None, "the width must be an integer"),
        ("convnet:", None, "write arch:width"),
        ("convnet:16,,vgg11", None, "empty item"),
        ("convnet:16", "1,2", "2 numbers for 1 models"),
        ("convnet:16", "a", "--epochs must be an integer"),
    ]:
        with pytest.raises(UserError, match=message):
            model_specs(models, epochs)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "gm"], "no distilled set made by method 'gm'"),
        (["--set", "nope"], "nope"),
        (["--models", "nonet"], "unknown architecture 'nonet'"),
        (["--models", "convnet:0"], "--width must be positive"),
        (["--models", "convnet:4,convnet:4"], "lists convnet-4 more than once"),
        (["--models", "convnet:4", "--epochs", "0"], "--epochs of convnet-4 must be at least 1"),
        (["--models", "convnet:4", "--epochs", "1,2"], "2 numbers for 1 models"),
        (["--models", "convnet:4", "--embed-model", "resnet18bn"], "--embed-model resnet18bn"),
        (["--models", "convnet:4", "--embed-test", "0"], "--embed-test must be at least 1"),
        (["--models", "convnet:4", "--test-limit", "-1"], "--test-limit must be at least 1"),
        (["--models", "convnet:4", "--set", "small"], "has images of shape (3, 16, 16)"),
        (["--models", "convnet:4", "--out", "afile"], "--out must be a folder"),
    ],
)
def test_bad_input_is_refused_and_the_database_unchanged(cli, tmp_path, args, message):
    _add_set(tmp_path, "bptt-a", "bptt")
    _add_set(tmp_path, "small", "dm", shape=(3, 16, 16))
    (tmp_path / "afile").write_text("x")
    before = _dump(tmp_path)
    result = cli("analyze", "inverse", *args, "--data", str(tmp_path / "no-data-here"))
    assert result.code == 2, result.out + result.err
    assert result.err.startswith("error: ") and message in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1
    assert _dump(tmp_path) == before
