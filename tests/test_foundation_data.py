"""Data loading: every layout, class order, completeness checks, cache, real CIFAR-10 facts."""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from ddsem.data import CIFAR10_CLASSES, load_dataset, normalize, stratified_indices
from ddsem.data.cifar import MEAN, STD, denormalize
from ddsem.errors import UserError


def _png(value: int) -> bytes:
    arr = np.full((32, 32, 3), value, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_folder(root, per_class=2, classes=CIFAR10_CLASSES, splits=("train", "test")):
    """A tiny image folder whose pixel value encodes (class, file number)."""
    for split in splits:
        for c, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            # written out of order on purpose: loading must sort by file number
            for n in reversed(range(per_class)):
                (d / f"{n:04d}.png").write_bytes(_png(c * 10 + n))
    return root


def make_archive(folder, path):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="cifar10")
    return path


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """Synthetic data sets get their own cache, away from the machine's real one."""
    monkeypatch.setenv("DDSEM_CACHE", str(tmp_path / "cache"))


with_private_cache = pytest.mark.usefixtures("private_cache")


@with_private_cache
def test_image_folder_and_archive_give_same_data_in_class_then_file_order(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    a = load_dataset(folder)
    b = load_dataset(make_archive(folder, tmp_path / "c.tar.gz"))
    assert a.classes == CIFAR10_CLASSES
    for d in (a, b):
        assert d.train_x.shape == (20, 32, 32, 3) and d.test_x.shape == (20, 32, 32, 3)
        assert d.train_y.tolist() == [c for c in range(10) for _ in range(2)]
        assert d.train_x[:, 0, 0, 0].tolist() == [c * 10 + n for c in range(10) for n in range(2)]
    np.testing.assert_array_equal(a.test_x, b.test_x)


@with_private_cache
def test_cache_is_written_and_reused(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    first = load_dataset(folder)
    assert first.cache_path is not None
    second = load_dataset(folder)
    assert second.cache_path == first.cache_path
    np.testing.assert_array_equal(first.train_x, second.train_x)


@with_private_cache
def test_missing_class_or_split_or_path_is_a_clear_error(tmp_path):
    folder = make_folder(tmp_path / "a", classes=CIFAR10_CLASSES[:9])
    with pytest.raises(UserError, match="missing class.*truck"):
        load_dataset(folder)
    folder = make_folder(tmp_path / "b", splits=("train",))
    with pytest.raises(UserError, match="no test/ split"):
        load_dataset(folder)
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"not an archive")
    with pytest.raises(UserError, match="not a readable"):
        load_dataset(bad)


@with_private_cache
def test_torchvision_batches_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def dump(name, n, offset):
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        labels = [(offset + i) % 10 for i in range(n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
        return data, labels

    batches = [dump(f"data_batch_{i}", 4, i) for i in range(1, 6)]
    test = dump("test_batch", 6, 0)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, f)
    d = load_dataset(tmp_path)  # the parent folder works too
    assert d.train_x.shape == (20, 32, 32, 3) and d.test_x.shape == (6, 32, 32, 3)
    expected = batches[0][0][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(d.train_x[0], expected)
    assert d.test_y.tolist() == test[1]
    (folder / "test_batch").unlink()
    with pytest.raises(UserError, match="missing test_batch"):
        load_dataset(folder, use_cache=False)


def test_normalize_round_trip_and_stratified_subset():
    x = np.random.default_rng(0).integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    t = normalize(x)
    assert t.shape == (5, 3, 32, 32)
    np.testing.assert_allclose(
        t[:, 0].mean().item(), ((x[..., 0] / 255 - MEAN[0]) / STD[0]).mean(), rtol=1e-5
    )
    np.testing.assert_allclose(denormalize(t), x / 255.0, atol=1e-6)
    labels = np.repeat(np.arange(10), 30)
    idx = stratified_indices(labels, 25, seed=0)
    assert len(idx) == 25 and np.bincount(labels[idx]).tolist() == [3] * 5 + [2] * 5
    np.testing.assert_array_equal(idx, stratified_indices(labels, 25, seed=0))
    with pytest.raises(UserError):
        stratified_indices(labels, 0)


def test_real_cifar10_counts_and_channel_means(cifar):
    assert cifar.train_x.shape == (50000, 32, 32, 3) and cifar.test_x.shape == (10000, 32, 32, 3)
    assert np.bincount(cifar.train_y).tolist() == [5000] * 10
    assert np.bincount(cifar.test_y).tolist() == [1000] * 10
    means = cifar.train_x.reshape(-1, 3).mean(0) / 255.0
    np.testing.assert_allclose(means, [0.491, 0.482, 0.447], atol=0.002)


def test_data_info_and_prepare_cli(cli, synthetic, synthetic_path):
    r = cli("data", "info", "--data", str(synthetic_path), "--json")
    assert r.code == 0, r.err
    import json

    info = json.loads(r.out)
    assert info["dataset"] == "cifar10" and info["source"] == str(synthetic_path)
    assert info["splits"]["train"]["images"] == 200
    assert info["splits"]["test"]["per_class"]["truck"] == 10
    means = synthetic.train_x.reshape(-1, 3).mean(0) / 255.0
    np.testing.assert_allclose(info["splits"]["train"]["channel_mean"], means, atol=1e-4)

    r = cli("data", "info", "--data", str(synthetic_path))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == f"cifar10 from {synthetic_path}" and lines[1] == f"cache: {info['cache']}"
    total = next(line for line in lines if "total" in line)
    assert [t for t in total.split() if t.isalnum()] == ["total", "200", "100"]
    test = info["splits"]["test"]
    assert lines[-1] == f"test: channel mean {test['channel_mean']}  std {test['channel_std']}"

    r = cli("data", "prepare", "--data", str(synthetic_path))
    assert r.code == 0, r.err
    assert r.out.strip() == f"cifar10: 200 train, 100 test images; cache {info['cache']}"
    r = cli("data", "info", "--data", str(synthetic_path), "--dataset", "mnist")
    assert r.code == 2 and "unknown dataset 'mnist': use cifar10 or cifar100" in r.err
