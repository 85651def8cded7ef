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


@pytest.fixture(scope="session", autouse=True)
def _private_data_cache(tmp_path_factory):
    """Decoded-pixel caches go to a temporary folder, never the user's ~/.cache/ddsem."""
    if "DDSEM_CACHE" in os.environ:
        yield
        return
    os.environ["DDSEM_CACHE"] = str(tmp_path_factory.mktemp("ddsem-cache"))
    yield
    del os.environ["DDSEM_CACHE"]


@pytest.fixture(scope="session")
def synthetic():
    """A small procedural CIFAR-shaped ImageData (20 train, 10 test images per class)."""
    from ddsem.data.synthetic import synthetic_data

    return synthetic_data(train_per_class=20, test_per_class=10, seed=0)


@pytest.fixture(scope="session")
def synthetic_path(synthetic, tmp_path_factory) -> Path:
    """The same images as an image folder, for the CLI's --data."""
    from ddsem.data.synthetic import write_image_folder

    return write_image_folder(synthetic, tmp_path_factory.mktemp("synthetic"))


@pytest.fixture
def workspace(tmp_path):
    """A job workspace on a fresh database in tmp_path, CPU, recording progress."""
    from ddsem.jobs import Recorder, Workspace

    ws = Workspace.open(str(tmp_path / "jobs.db"), device="cpu", progress=Recorder())
    yield ws
    ws.db.close()


# -- PostgreSQL (issue 19): a fresh database per test on the server of $DDSEM_TEST_POSTGRES ------

POSTGRES_ENV = "DDSEM_TEST_POSTGRES"


def postgres_admin_url():
    """The SQLAlchemy URL of $DDSEM_TEST_POSTGRES (a server's maintenance database, e.g. what
    ``scripts/postgres.sh start`` prints), or None when it is not set."""
    value = os.environ.get(POSTGRES_ENV)
    if not value:
        return None
    from sqlalchemy.engine import make_url

    url = make_url(value)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url


@pytest.fixture
def postgres_url(request):
    """A new, empty PostgreSQL database for this test (dropped after it), as a URL string;
    skipped unless $DDSEM_TEST_POSTGRES names a server (``scripts/postgres.sh start``)."""
    admin_url = postgres_admin_url()
    if admin_url is None:
        pytest.skip(
            f"{POSTGRES_ENV} is not set: PostgreSQL tests need a server (.ci/run starts one "
            "with scripts/postgres.sh)"
        )
    import re
    import uuid

    from sqlalchemy import create_engine, text

    stem = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:30]
    name = f"t_{stem}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield admin_url.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The same test on a SQLite file and on a fresh PostgreSQL database (skipped without
    $DDSEM_TEST_POSTGRES)."""
    if request.param == "sqlite":
        return str(tmp_path / "test.db")
    return request.getfixturevalue("postgres_url")
