"""``ddsem analyze class-influence`` (appendix D): the per-image own-class and other-class
means equal numpy over the stored influence matrix, the test of "own > other" is scipy's
Wilcoxon, the result is stored once and re-runs read it, and bad requests are one line."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from ddsem.analyses.class_influence import class_influence

MODEL = ["--width", "8", "--steps", "20", "--test-limit", "60"]


@pytest.fixture(scope="module")
def influenced_once(synthetic, synthetic_path, tmp_path_factory):
    """A 20-image set with a complete seed-0 influence run of 60 test images."""
    from ddsem.cli import run
    from ddsem.data import normalize, stratified_indices
    from ddsem.db import open_db
    from ddsem.db.sets import add_distilled_set

    path = tmp_path_factory.mktemp("influenced") / "test.db"
    idx = stratified_indices(synthetic.train_y, 20, 3)
    db = open_db(path)
    add_distilled_set(db, "s", "dm", normalize(synthetic.train_x[idx]).numpy(),
                      synthetic.train_y[idx])  # fmt: skip
    db.close()
    argv = ["--db", str(path), "influence", "--set", "s", *MODEL, "--data", str(synthetic_path)]
    assert run([*argv, "--quiet"]) == 0
    return path


@pytest.fixture
def influenced(influenced_once, tmp_path):
    """A copy of the influenced database where the ``cli`` fixture looks (SQLite's backup:
    the source may still have committed pages in its -wal)."""
    path = tmp_path / "test.db"
    with sqlite3.connect(influenced_once) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    dst.close()
    return path


def _matrix(db_path):
    from ddsem.db import open_db
    from ddsem.db.influence import list_runs, load_influence
    from ddsem.db.sets import find_set, set_tensors

    db = open_db(db_path, create=False, readonly=True)
    s = find_set(db, "s")
    (run,) = list_runs(db, s.id)
    matrix, indices = load_influence(db, run.id)
    _, labels = set_tensors(db, s.id)
    db.close()
    return matrix.astype(np.float64), labels, indices


def test_the_means_equal_numpy_over_the_stored_matrix(cli, influenced, synthetic, tmp_path):
    from scipy.stats import wilcoxon

    r = cli("analyze", "class-influence", "--set", "s", "--json", "--out", "figs")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    matrix, labels, indices = _matrix(influenced)
    classes = synthetic.test_y[indices]
    rows = out["per_image"]["s"]
    for i, row in enumerate(rows):
        own = classes == labels[i]
        assert row["in_class"] == pytest.approx(matrix[i, own].mean(), rel=1e-12)
        assert row["out_class"] == pytest.approx(matrix[i, ~own].mean(), rel=1e-12)
        top10 = np.argsort(-matrix[i], kind="stable")[:10]
        assert row["top10_out_share"] == pytest.approx((classes[top10] != labels[i]).mean())
    (summary,) = out["sets"]
    in_class = np.array([row["in_class"] for row in rows])
    out_class = np.array([row["out_class"] for row in rows])
    expected_p = wilcoxon(in_class, out_class, alternative="greater").pvalue
    assert summary["wilcoxon_p"] == pytest.approx(expected_p)
    assert summary["chance_out_share"] == pytest.approx(0.9)  # 10 balanced classes
    assert summary["in_class"]["sd"] == pytest.approx(in_class.std(ddof=1))
    assert (tmp_path / out["figure"]).is_file()


def test_a_rerun_reads_the_stored_result_and_redraws(cli, influenced, monkeypatch, tmp_path):
    first = json.loads(cli("analyze", "class-influence", "--json", "--out", "figs").out)
    figure = tmp_path / first["figure"]
    figure.unlink()
    import ddsem.analyses.class_influence as compute

    monkeypatch.setattr(compute, "class_influence", lambda *a: pytest.fail("recomputed"))
    again = json.loads(cli("analyze", "class-influence", "--json", "--out", "figs").out)
    assert again["analysis_ids"] == first["analysis_ids"]
    assert [s["reused"] for s in again["sets"]] == [True]
    assert figure.is_file()
    with sqlite3.connect(influenced) as con:
        kinds = con.execute("SELECT kind, count(*) FROM analysisrun GROUP BY kind").fetchall()
    assert kinds == [("class-influence", 1)]
    r = cli("analyze", "class-influence", "--out", "figs")
    assert r.code == 0 and "Wilcoxon" in r.out and "s" in r.out


def test_compute_refuses_a_class_without_test_images():
    from ddsem.errors import UserError

    with pytest.raises(UserError, match="lack classes"):
        class_influence(np.zeros((2, 3)), np.array([0, 1]), np.array([0, 0, 0]))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--method", "gm"], "no distilled set made by method 'gm'"),
        (["--set", "s", "--context", "bogus"], "--context"),
        (["--set", "s", "--context", "real"], "no complete real influence run for set 's'"),
        (["--set", "s", "--out", "afile"], "--out must be a folder"),
    ],
)
def test_bad_requests_are_one_line_and_change_nothing(cli, influenced, tmp_path, args, needle):
    (tmp_path / "afile").write_text("x")
    before = influenced.read_bytes()
    r = cli("analyze", "class-influence", *args)
    assert r.code == 2, r.out + r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.err
    assert influenced.read_bytes() == before


def test_no_database_is_one_line_and_creates_none(cli, tmp_path):
    r = cli("analyze", "class-influence", db=str(tmp_path / "none.db"))
    assert r.code == 2 and "no ddsem database" in r.err
    assert not (tmp_path / "none.db").exists()
