"""Opening databases (issue 15, defect 8): a foreign, unversioned, mismatched or unreachable
database is one `error:` line and exit 2 with the file byte-identical and no table created;
reading commands open read-only (SQLite ``mode=ro``), so an immutable file or a file in a
read-only folder without its -wal/-shm still lists, and a write to it says it is read-only.
And `data info --dataset cifar100` on CIFAR-10 (defect 9) is refused before any decoding."""

from __future__ import annotations

import importlib.util
import shutil
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from ddsem.db import SCHEMA_VERSION, open_db
from ddsem.errors import UserError


def tables_of(path: Path) -> set[str]:
    con = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()


def side_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.glob(path.name + "-*"))


def assert_refused(r, *needles: str) -> None:
    assert r.code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "Traceback" not in r.err + r.out
    for needle in needles:
        assert needle in lines[0], lines[0]


def ddsem_db(path: Path) -> Path:
    open_db(str(path)).close()
    assert not side_files(path)  # the last writer's close merges and removes -wal/-shm
    return path


@pytest.fixture
def foreign(tmp_path) -> Path:
    path = tmp_path / "notes.db"
    con = sqlite3.connect(path)
    with con:
        con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        con.execute("INSERT INTO notes (text) VALUES ('keep me')")
    con.close()
    return path


# -- files that are not (this) ddsem's: refused, untouched -------------------------------------


@pytest.mark.parametrize("command", [("sets", "list"), ("db", "info"), ("attributes", "list")])
def test_an_unrelated_sqlite_file_gets_no_ddsem_tables(cli, foreign, command):
    before = foreign.read_bytes()
    r = cli(*command, db=str(foreign))
    assert_refused(r, "is not a ddsem database", "notes", "another --db")
    assert foreign.read_bytes() == before and tables_of(foreign) == {"notes"}
    assert not side_files(foreign)


def test_a_database_with_a_column_missing_under_the_same_version(cli, tmp_path):
    path = ddsem_db(tmp_path / "old.db")
    con = sqlite3.connect(path)
    with con:
        con.execute("ALTER TABLE dataset DROP COLUMN source")
    con.close()
    before = path.read_bytes()
    for command in (("sets", "list"), ("db", "info")):
        r = cli(*command, db=str(path))
        assert_refused(r, f"does not match schema {SCHEMA_VERSION}", "dataset lacks", "source")
    assert path.read_bytes() == before and not side_files(path)


@pytest.mark.parametrize("how", ["no version row", "no meta table", "junk version"])
def test_an_unversioned_database_holding_rows_is_refused(cli, tmp_path, how):
    path = ddsem_db(tmp_path / "v0.db")
    con = sqlite3.connect(path)
    with con:
        con.execute(
            "INSERT INTO dataset (name, source, classes_json, num_train, num_test, created_at) "
            "VALUES ('cifar10', 'x', '[]', 1, 1, '2026-01-01')"
        )
        if how == "no version row":
            con.execute("DELETE FROM meta")
        elif how == "no meta table":
            con.execute("DROP TABLE meta")
        else:
            con.execute("UPDATE meta SET value = 'two' WHERE key = 'schema_version'")
    con.close()
    before = path.read_bytes()
    r = cli("sets", "list", db=str(path))
    assert_refused(r, "no schema version")
    assert path.read_bytes() == before


def test_an_empty_unstamped_database_is_taken_over(tmp_path):
    """Tables created but never stamped (a crash before the version row, before creation was
    one transaction): nothing to lose, so it is completed and stamped."""
    path = ddsem_db(tmp_path / "unstamped.db")
    con = sqlite3.connect(path)
    with con:
        con.execute("DELETE FROM meta")
    con.close()
    open_db(str(path)).close()
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION),)]
    con.close()


def test_a_new_database_is_created_and_stamped_in_one_transaction(tmp_path, monkeypatch):
    from ddsem.db import engine

    path = tmp_path / "new.db"

    from sqlalchemy.exc import OperationalError

    real = engine.SQLModel.metadata.create_all

    def create_then_fail(*a, **k):  # the tables are made, then the disk fails
        real(*a, **k)
        raise OperationalError("INSERT INTO meta", {}, sqlite3.OperationalError("disk I/O error"))

    monkeypatch.setattr(engine.SQLModel.metadata, "create_all", create_then_fail)
    with pytest.raises(UserError, match="cannot open database.*disk I/O error"):
        open_db(str(path))
    monkeypatch.undo()
    assert tables_of(path) == set()  # rolled back: no unstamped tables are left
    open_db(str(path)).close()
    assert "meta" in tables_of(path)


# -- URLs: a missing driver, an unknown scheme, a server that does not answer -------------------


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is not None, reason="psycopg installed")
def test_postgres_without_its_driver_names_the_package(cli):
    r = cli("sets", "list", db="postgresql://bob:secret@db.example/ddsem")
    assert_refused(r, "psycopg", "pip install")
    assert "secret" not in r.err


def test_an_unknown_url_scheme(cli, tmp_path):
    r = cli("sets", "list", db="foo://bar")
    assert_refused(r, "unknown database URL scheme 'foo'")
    assert not list(tmp_path.glob("*.db"))


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is None, reason="needs psycopg")
def test_a_server_that_cannot_be_reached_names_the_address(cli):
    r = cli("sets", "list", db="postgresql://bob:secret@127.0.0.1:1/ddsem")
    assert_refused(r, "cannot connect to the database server at 127.0.0.1:1")
    assert "secret" not in r.err


# -- read-only -----------------------------------------------------------------------------------


def _chattr(flag: str, path: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


@contextmanager
def immutable(path: Path):
    """``chattr +i``: read-only even for root (who ignores chmod 444); skips where unsupported."""
    if not _chattr("+i", path):
        pytest.skip("chattr +i is not supported here")
    try:
        yield
    finally:
        _chattr("-i", path)


def test_reading_commands_open_read_only(tmp_path):
    from ddsem.db.tables import Meta
    from ddsem.jobs import Workspace

    path = ddsem_db(tmp_path / "r.db")
    before = path.read_bytes()
    ws = Workspace.open(str(path), create=False)
    try:
        assert ws.db.readonly
        read_only = pytest.raises(UserError, match=f"the database is read-only: {path}")
        with read_only, ws.db.session() as s:
            s.add(Meta(key="x", value="y"))
    finally:
        ws.db.close()
    assert path.read_bytes() == before
    writer = Workspace.open(str(path))
    assert not writer.db.readonly
    writer.db.close()


def test_db_info_leaves_the_file_byte_identical(cli, tmp_path):
    path = ddsem_db(tmp_path / "r.db")
    before = path.read_bytes()
    assert cli("db", "info", "--json", db=str(path)).code == 0
    assert cli("sets", "list", db=str(path)).code == 0
    assert path.read_bytes() == before


def test_an_immutable_database_lists_and_refuses_writes(cli, tmp_path):
    path = ddsem_db(tmp_path / "ro.db")
    before = path.read_bytes()
    with immutable(path):
        r = cli("sets", "list", db=str(path))
        assert r.code == 0 and "no distilled sets" in r.out, r.err
        assert cli("db", "info", db=str(path)).code == 0
        r = cli("attributes", "add", "yellow", db=str(path))
        assert_refused(r, f"the database is read-only: {path}")
    assert path.read_bytes() == before


def test_a_database_in_a_read_only_folder_without_wal_or_shm(cli, tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    path = ddsem_db(folder / "x.db")
    before = path.read_bytes()
    with immutable(folder):
        r = cli("sets", "list", db=str(path))
        assert r.code == 0 and "no distilled sets" in r.out, r.err
        r = cli("db", "info", "--json", db=str(path))
        assert r.code == 0 and '"tables"' in r.out, r.err
        assert_refused(cli("attributes", "add", "yellow", db=str(path)), "read-only")
        new = str(folder / "new.db")
        assert_refused(cli("attributes", "add", "yellow", db=new), "folder is read-only")
        assert_refused(cli("sets", "list", db=new), "no ddsem database at")
        assert not side_files(path) and sorted(p.name for p in folder.iterdir()) == ["x.db"]
    assert path.read_bytes() == before


def test_an_old_read_only_database_says_how_to_upgrade(tmp_path):
    path = ddsem_db(tmp_path / "v1.db")
    con = sqlite3.connect(path)
    with con:
        con.execute("ALTER TABLE attributescore DROP COLUMN draws")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    before = path.read_bytes()
    with (
        immutable(path),
        pytest.raises(UserError, match=f"read-only.*upgraded to version {SCHEMA_VERSION}"),
    ):
        open_db(str(path), readonly=True)
    assert path.read_bytes() == before
    open_db(str(path), readonly=True).close()  # writable again: migrated, then opened ro
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION),)]
    con.close()


# -- CIFAR-100 asked of CIFAR-10 (defect 9) --------------------------------------------------------


def test_cifar100_on_a_cifar10_image_folder_is_refused_before_decoding(cli, synthetic_path):
    from ddsem.data.cifar import cache_dir

    before = sorted(cache_dir().glob("*")) if cache_dir().exists() else []
    r = cli("data", "info", "--dataset", "cifar100", "--data", str(synthetic_path))
    assert_refused(r, "holds cifar10 classes", "--dataset cifar10")
    after = sorted(cache_dir().glob("*")) if cache_dir().exists() else []
    assert after == before


def test_cifar100_on_torchvisions_cifar10_folder(cli, tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    r = cli("data", "info", "--dataset", "cifar100", "--data", str(tmp_path))
    assert_refused(r, "torchvision's cifar10 folder", "--dataset cifar10")


def test_cifar100_on_the_real_cifar10_archive(cli, cifar_path):
    from ddsem.data.cifar import cache_dir

    r = cli("data", "info", "--dataset", "cifar100", "--data", str(cifar_path))
    assert_refused(r, "holds cifar10 classes")
    assert not list(cache_dir().glob("cifar100-*"))


def test_a_read_only_file_lacking_a_newer_table_still_reads(cli, tmp_path):
    """Tables added under the same version are created on open; a read-only file cannot get
    them, and its readers do not need them."""
    path = ddsem_db(tmp_path / "older.db")
    con = sqlite3.connect(path)
    with con:
        con.execute("DROP TABLE analysisrun")
    con.close()
    before = path.read_bytes()
    with immutable(path):
        assert cli("sets", "list", db=str(path)).code == 0
        r = cli("db", "info", "--json", db=str(path))
        assert r.code == 0 and '"analysisrun": 0' in r.out, r.err
    assert path.read_bytes() == before
    open_db(str(path)).close()  # writable: the table is created
    assert "analysisrun" in tables_of(path)


def test_an_unreachable_server_names_its_address(cli, monkeypatch):
    """A server dialect whose connection is refused (no PostgreSQL server is at hand: a stand-in
    dialect raises the driver's OperationalError the way psycopg does)."""
    from sqlalchemy.dialects import registry
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    class Unreachable(SQLiteDialect_pysqlite):
        name = "unreachable"

        def create_connect_args(self, url):
            return [], {}

        def connect(self, *args, **kwargs):
            raise sqlite3.OperationalError(
                'connection to server at "10.0.0.1", port 5432 failed: Connection refused'
            )

    globals()["Unreachable"] = Unreachable
    registry.register("unreachable", __name__, "Unreachable")
    r = cli("sets", "list", db="unreachable://bob:secret@10.0.0.1:5432/ddsem")
    assert_refused(r, "cannot connect to the database server at 10.0.0.1:5432", "refused")
    assert "secret" not in r.err


def test_a_writing_job_on_a_read_only_database_refuses_before_its_work(
    cli, tmp_path, synthetic_path, monkeypatch
):
    """The colour annotator never runs: the read-only database is named first, in one line."""
    from ddsem.annotate.color import ColorAnnotator

    path = ddsem_db(tmp_path / "ro.db")
    monkeypatch.setattr(ColorAnnotator, "answer", lambda *a: pytest.fail("answered"))
    before = path.read_bytes()
    with immutable(path):
        r = cli("annotate", "--annotator", "color", "--data", str(synthetic_path), db=str(path))
    assert r.code == 2 and r.err.count("\n") == 1
    assert "the database is read-only" in r.err
    assert path.read_bytes() == before


def _with_set(path: Path) -> Path:
    import numpy as np

    from ddsem.db.sets import add_distilled_set

    db = open_db(str(path))
    images = np.random.default_rng(0).normal(size=(10, 3, 32, 32)).astype(np.float32)
    add_distilled_set(db, "s", "dm", images, np.arange(10), dataset="cifar10", provenance={})
    db.close()
    assert not side_files(path)
    return path


@pytest.mark.parametrize(
    ("command", "work"),
    [
        (
            ["evaluate", "--set", "s", "--runs", "1", "--width", "8"],
            "ddsem.distill.evaluate.evaluate_set",
        ),
        (
            ["landscape", "--set", "s", "--width", "8", "--grid", "2"],
            "ddsem.jobs.landscape._compute",
        ),
        (
            ["curvature", "--set", "s", "--width", "8", "--iterations", "2"],
            "ddsem.jobs.curvature._measure",
        ),
    ],  # fmt: skip
)
def test_training_jobs_on_a_read_only_database_refuse_before_training(
    cli, tmp_path, synthetic_path, monkeypatch, command, work
):
    """evaluate, landscape and curvature name the read-only database before they train."""
    import importlib

    module_name, _, name = work.rpartition(".")
    monkeypatch.setattr(importlib.import_module(module_name), name,
                        lambda *a, **k: pytest.fail("trained"))  # fmt: skip
    path = _with_set(tmp_path / "ro.db")
    before = path.read_bytes()
    with immutable(path):
        r = cli(*command, "--data", str(synthetic_path), db=str(path))
    assert_refused(r, "the database is read-only")
    assert path.read_bytes() == before
