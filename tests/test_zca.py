"""ZCA whitening (MTT's --zca): the transform against kornia, its storage, the jobs that use it,
and `sets import` of MTT files in ZCA space."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import torch

from ddsem.data import normalize
from ddsem.data import zca as Z


def correlated_pixels(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    """uint8 N x size x size x 3 images with smooth, correlated pixels (full rank)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1, (n, size // 2, size // 2, 3))
    up = base.repeat(2, 1).repeat(2, 2) + 0.3 * rng.normal(0, 1, (n, size, size, 3))
    return np.clip(128 + 40 * up, 0, 255).astype(np.uint8)


def kornia_fit(pixels: np.ndarray, eps: float):
    import kornia as K

    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    return K.enhance.ZCAWhitening(eps=eps, compute_inv=True).fit(x), x


def test_the_stored_transform_is_kornias_and_inverts():
    pixels = correlated_pixels(400)  # N > D = 192: kornia's own fit
    zca = Z.fit(pixels, Z.EPS)
    module, x01 = kornia_fit(pixels, Z.EPS)
    x = normalize(pixels)
    assert torch.allclose(zca.forward(x), module(x01), atol=1e-5)
    assert torch.allclose(zca.to_kornia()(x01), module(x01), atol=1e-6)
    assert torch.allclose(zca.inverse_transform(zca.forward(x)), x, atol=1e-4)
    assert np.allclose(zca.inverse_np(zca.forward_np(x.numpy())), x.numpy(), atol=1e-4)
    assert np.allclose(zca.forward_np(x.numpy()), zca.forward(x).numpy(), atol=1e-5)
    assert torch.allclose(zca.pixels(zca.forward(x)), x01, atol=1e-5)


def test_whitened_training_images_have_identity_covariance():
    pixels = correlated_pixels(3000, seed=1)
    zca = Z.fit(pixels, 1e-6)  # eps far below every eigenvalue: exact whitening
    z = zca.forward(normalize(pixels)).reshape(3000, -1).double()
    cov = torch.cov(z.T)
    assert torch.allclose(cov, torch.eye(cov.shape[0], dtype=cov.dtype), atol=2e-3)
    # MTT's eps 0.1 shrinks each eigenvalue s to s / (s + eps): not the identity
    zca = Z.fit(pixels, Z.EPS)
    x01 = torch.from_numpy(pixels).permute(0, 3, 1, 2).reshape(3000, -1).double() / 255
    s, u = torch.linalg.eigh(torch.cov(x01.T))
    expected = (u * (s / (s + Z.EPS))) @ u.T
    cov = torch.cov(zca.forward(normalize(pixels)).reshape(3000, -1).double().T)
    assert torch.allclose(cov, expected, atol=1e-4)


def test_the_gram_path_for_few_images_equals_kornia():
    pixels = correlated_pixels(60, seed=2)  # N < D = 192: the Gram route
    zca = Z.fit(pixels, Z.EPS)
    module, x01 = kornia_fit(pixels, Z.EPS)
    assert np.allclose(zca.transform, module.transform_matrix.numpy(), atol=1e-4)
    assert np.allclose(zca.inverse, module.transform_inv.numpy(), atol=1e-4)
    assert torch.allclose(zca.forward(normalize(pixels)), module(x01), atol=1e-4)


# -- storage, import and export ---------------------------------------------------------------------


@pytest.fixture
def zca_set(workspace, synthetic):
    """A set in ZCA space (whitened real images), stored with the synthetic data's transform."""
    from ddsem.db.sets import add_distilled_set
    from ddsem.jobs.common import fit_zca, zca_compute

    arrays = fit_zca(workspace.db, synthetic)
    idx = np.arange(0, 200, 20)
    z = zca_compute(arrays).forward_np(normalize(synthetic.train_x[idx]).numpy())
    add_distilled_set(workspace.db, "tm-zca", "tm", z, synthetic.train_y[idx], zca_id=arrays.id)
    return z, synthetic.train_y[idx], arrays


def test_a_zca_set_exported_in_zca_space_and_reimported_is_the_same(
    workspace, synthetic, zca_set, tmp_path
):
    from ddsem.db.sets import find_set, set_tensors, set_zca
    from ddsem.jobs import sets as job

    z, y, arrays = zca_set
    s = find_set(workspace.db, "tm-zca")
    assert s.zca["transform_id"] == arrays.id
    out = tmp_path / "zca.pt"
    job.export(workspace, job.SetExportRequest(out, "tm-zca", space="zca"))
    r = job.import_set(workspace, job.ImportRequest(out, "tm", "again", data=synthetic))
    assert r.space == "zca" and r.summary.zca["transform_id"] == arrays.id
    images, labels = set_tensors(workspace.db, r.summary.id)
    assert np.array_equal(images, z) and np.array_equal(labels, y)
    # the default export is inverse-transformed to normalised pixels
    job.export(workspace, job.SetExportRequest(tmp_path / "n.pt", "tm-zca"))
    saved = torch.load(tmp_path / "n.pt", weights_only=True)
    assert saved["space"] == "normalised"
    assert np.allclose(saved["data"].numpy(), set_zca(workspace.db, s.id).to_normalised(z))
    idx = np.arange(0, 200, 20)
    assert np.allclose(saved["data"].numpy(), normalize(synthetic.train_x[idx]).numpy(), atol=1e-3)


def test_mtt_files_are_told_apart_by_their_scale(workspace, synthetic, zca_set, tmp_path):
    from ddsem.jobs import sets as job

    z, y, _ = zca_set
    idx = np.arange(5, 200, 20)
    normalised = normalize(synthetic.train_x[idx])
    for folder, images in (("n", normalised), ("z", torch.from_numpy(z))):
        (tmp_path / folder).mkdir()
        torch.save(images, tmp_path / folder / "images_best.pt")
        torch.save(torch.from_numpy(y), tmp_path / folder / "labels_best.pt")
    n = job.import_set(
        workspace, job.ImportRequest(tmp_path / "n/images_best.pt", "tm", "n", data=synthetic)
    )
    assert (
        n.space == "normalised" and n.summary.zca is None and "looks normalised" in (n.space_reason)
    )
    w = job.import_set(
        workspace, job.ImportRequest(tmp_path / "z/images_best.pt", "tm", "w", data=synthetic)
    )
    assert w.space == "zca" and w.summary.zca is not None
    # in between: not told, the option named
    torch.save(torch.from_numpy(z) * 2.2, tmp_path / "z/images_best.pt")
    from ddsem.errors import UserError

    with pytest.raises(UserError, match="cannot tell whether images_best.pt.*--zca.*--no-zca"):
        job.import_set(
            workspace, job.ImportRequest(tmp_path / "z/images_best.pt", "tm", "u", data=synthetic)
        )


# -- the jobs -------------------------------------------------------------------------------------


def test_tm_distils_in_zca_space_with_zca_experts(workspace, synthetic):
    from ddsem.db.sets import set_zca
    from ddsem.jobs import distill as distill_job
    from ddsem.jobs import experts as experts_job
    from ddsem.jobs.experts import ExpertsRequest

    small = {"width": 4, "epochs": 2, "data": synthetic, "test_limit": 20}
    experts_job.run(workspace, ExpertsRequest(num_experts=1, zca=False, **small))
    req = distill_job.DistillRequest(
        "tm", ipc=1, width=4, iterations=2, data=synthetic,
        params={"syn_steps": 2, "max_start_epoch": 1, "expert_epochs": 1},
    )  # fmt: skip
    assert req.uses_zca  # CIFAR-10 at ipc 1: MTT's published runs whiten
    from ddsem.errors import UserError

    with pytest.raises(UserError, match="ZCA-whitened cifar10.*--zca"):
        distill_job.plan(workspace, req)  # only normalised experts exist: never mixed
    experts_job.run(workspace, ExpertsRequest(num_experts=1, **small))
    result = distill_job.run(workspace, req)
    assert result.summary.zca is not None
    assert distill_job.method_config(req).lr_img == 100.0  # TM_ZCA's pixel lr
    zca = set_zca(workspace.db, result.summary.id)
    assert zca is not None and zca.eps == Z.EPS


# -- bad input ------------------------------------------------------------------------------------


def _bytes(path):
    return path.read_bytes() if path.exists() else None


def test_zca_on_another_method_is_refused(cli, synthetic_path, tmp_path):
    r = cli("distill", "--method", "dm", "--zca", "--data", str(synthetic_path))
    assert r.code == 2 and "--zca is for trajectory matching" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_zca_import_without_a_transform_is_refused(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("DDSEM_DATA", raising=False)
    torch.save(torch.zeros(10, 3, 32, 32), tmp_path / "images_best.pt")
    torch.save(torch.arange(10), tmp_path / "labels_best.pt")
    from ddsem.db.engine import open_db

    open_db(str(tmp_path / "test.db")).close()
    db = tmp_path / "test.db"
    before = _bytes(db)
    r = cli("sets", "import", str(tmp_path / "images_best.pt"), "--method", "tm", "--zca")
    assert r.code == 2 and "ZCA transform" in r.err and "--data" in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1
    assert _bytes(db) == before


def test_mismatched_mtt_labels_and_lr_files_are_refused(cli, tmp_path):
    torch.save(torch.zeros(10, 3, 32, 32), tmp_path / "images_best.pt")
    torch.save(torch.arange(10), tmp_path / "labels_500.pt")
    torch.save(torch.arange(9), tmp_path / "labels_best.pt")
    torch.save(torch.tensor(0.01), tmp_path / "lr_500.pt")
    from ddsem.db.engine import open_db

    open_db(str(tmp_path / "test.db")).close()
    db = tmp_path / "test.db"
    before = _bytes(db)
    img = str(tmp_path / "images_best.pt")
    for extra, words in (
        (["--labels", str(tmp_path / "labels_500.pt")], "different points of an MTT run"),
        (["--lr", str(tmp_path / "lr_500.pt"), "--no-zca"], "different points of an MTT run"),
        (["--no-zca"], "10 images but 9 labels"),
    ):
        r = cli("sets", "import", img, "--method", "tm", *extra)
        assert r.code == 2 and words in r.err, r.err
        assert len(r.err.strip().splitlines()) == 1
    assert _bytes(db) == before
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM distilledset").fetchone() == (0,)
