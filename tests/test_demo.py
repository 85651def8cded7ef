"""`ddsem demo --small` end to end on real CIFAR-10: every step, questions answered, re-run reuses."""

from __future__ import annotations

import os

import pytest


def test_demo_runs_end_to_end_and_reuses_finished_work(cli, cifar_path, tmp_path):
    first = cli("demo", "--small", "--data", str(cifar_path), "--out", str(tmp_path / "figs"))
    assert first.code == 0, first.err
    for step in range(1, 8):
        assert f"[{step}/7]" in first.out
    assert 'understood: attribute "yellow", class automobile' in first.out
    assert "distilled images ranked by average precision" in first.out
    assert (tmp_path / "figs" / "table1.md").is_file()
    assert list((tmp_path / "figs").glob("pr_*.png"))

    again = cli("demo", "--small", "--data", str(cifar_path), "--out", str(tmp_path / "figs"))
    assert again.code == 0, again.err
    assert "already in the database: reused" in again.out
    assert "nothing to do" in again.out  # influence and annotation were complete


def test_demo_without_data_says_where_to_put_it(cli, monkeypatch, tmp_path):
    monkeypatch.delenv("DDSEM_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DDSEM_CACHE", str(tmp_path / "cache"))
    r = cli("demo", "--small")
    assert r.code == 2
    assert "CIFAR-10 not found" in r.err and "--data" in r.err


@pytest.fixture(autouse=True)
def _restore_data_env(monkeypatch):
    """The demo exports DDSEM_DATA for its steps; monkeypatch puts the old value back after."""
    if "DDSEM_DATA" in os.environ:
        monkeypatch.setenv("DDSEM_DATA", os.environ["DDSEM_DATA"])
    else:
        monkeypatch.delenv("DDSEM_DATA", raising=False)
