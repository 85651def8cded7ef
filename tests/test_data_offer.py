"""Without --data or $DDSEM_DATA a command offers torchvision's download, or says both ways out."""

from __future__ import annotations

from pathlib import Path

import pytest

from ddsem.cli import common
from ddsem.errors import UserError
from ddsem.jobs import data as data_job


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    monkeypatch.delenv("DDSEM_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DDSEM_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def _terminal(monkeypatch, interactive: bool) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: interactive)
    monkeypatch.setattr("sys.stdout.isatty", lambda: interactive)


def test_without_a_terminal_the_error_names_data_and_the_download(no_data, monkeypatch):
    _terminal(monkeypatch, False)
    monkeypatch.setattr(data_job, "download_reachable", lambda: pytest.fail("no probe"))
    with pytest.raises(UserError) as e:
        common.data_source(None)
    assert "--data" in str(e.value) and "ddsem data prepare --download" in str(e.value)


def test_without_a_network_the_error_says_so(no_data, monkeypatch):
    _terminal(monkeypatch, True)
    monkeypatch.setattr(data_job, "download_reachable", lambda: False)
    with pytest.raises(UserError) as e:
        common.data_source(None)
    assert "no network" in str(e.value) and "--data" in str(e.value)


def test_with_a_network_a_person_is_asked_and_the_answer_is_kept(no_data, monkeypatch):
    _terminal(monkeypatch, True)
    monkeypatch.setattr(data_job, "download_reachable", lambda: True)
    asked: list[str] = []
    downloads: list[str] = []

    def confirm(text, default):
        asked.append(text)
        return answer

    monkeypatch.setattr("typer.confirm", confirm)
    monkeypatch.setattr(
        data_job, "download", lambda dataset: downloads.append(dataset) or Path("/cache/data")
    )
    answer = False
    with pytest.raises(UserError):
        common.data_source(None)
    assert downloads == [] and "CIFAR-10" in asked[0]
    answer = True
    assert common.data_source(None, "cifar10") == "/cache/data"
    assert downloads == ["cifar10"]


def test_a_named_path_is_used_as_it_is(no_data, synthetic_path):
    assert common.data_source(str(synthetic_path)) == str(synthetic_path)
    with pytest.raises(UserError, match="does not exist"):
        common.data_source(str(synthetic_path / "nothing"))
