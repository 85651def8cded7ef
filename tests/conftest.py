"""Shared fixtures: a temporary database, the CLI, and real CIFAR-10 when DDSEM_DATA is set."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, tmp_path, monkeypatch):
    """Run ``ddsem ARGS`` in-process against a database in tmp_path; returns CliResult."""
    from ddsem.cli import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DDSEM_DB", raising=False)

    def _run(*args: str, db: str | None = None) -> CliResult:
        argv = ["--db", db or str(tmp_path / "test.db"), *args]
        capsys.readouterr()
        code = run(argv)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return _run


@pytest.fixture(scope="session")
def cifar_path() -> Path:
    path = os.environ.get("DDSEM_DATA")
    if not path:
        pytest.skip("DDSEM_DATA is not set: real CIFAR-10 tests need it (see README)")
    return Path(path)


@pytest.fixture(scope="session")
def cifar(cifar_path):
    """Real CIFAR-10 (decoded once per machine into the ddsem cache)."""
    from ddsem.data import load_dataset

    return load_dataset(cifar_path)
