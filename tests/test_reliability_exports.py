"""Exports never overwrite silently and never the database (issue 15, defects 1, 7 and 9's
`db export --out <folder>`): `sets export` and `db export` refuse the database and its side files
always, an existing file unless --force, a folder and a missing folder with one line; and they
write through a temporary file, so a failure leaves the old file and no half-written one."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from ddsem.db.engine import database_files
from ddsem.errors import UserError
from ddsem.jobs import Workspace
from ddsem.jobs import database as database_job
from ddsem.jobs import sets as sets_job

SIDE = ("", "-wal", "-shm", "-journal")


@pytest.fixture
def world(cli, tmp_path, synthetic_path):
    """A database with a set (bptt) and annotations, checkpointed so its file holds everything."""
    data = torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 3
    torch.save({"data": data, "label": torch.arange(20) % 10}, tmp_path / "set.pt")
    assert cli("sets", "import", str(tmp_path / "set.pt"), "--method", "bptt").code == 0
    assert cli("annotate", "--data", str(synthetic_path), "--limit", "10").code == 0
    db = tmp_path / "test.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return {"db": db, "data": data}


def snapshot(db: Path) -> tuple[bytes, list[str]]:
    """The database file's bytes and a dump of its rows."""
    con = sqlite3.connect(db)
    dump = list(con.iterdump())
    con.close()
    return db.read_bytes(), dump


def sets_export(*args: str) -> list[str]:
    return ["sets", "export", "bptt", *args]


def db_export(*args: str) -> list[str]:
    return ["db", "export", "--what", "annotations", *args]


def assert_refused(cli, world, args, *needles):
    before = snapshot(world["db"])
    r = cli(*args)
    assert r.code == 2, (r.out, r.err)
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, r.err
    assert "Traceback" not in r.err
    for needle in needles:
        assert needle in r.err, r.err
    assert snapshot(world["db"]) == before
    return r


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp" in p.name]


# -- the database and its side files: refused always ---------------------------------------------


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("side", SIDE, ids=["db", "wal", "shm", "journal"])
@pytest.mark.parametrize("command", [sets_export, db_export], ids=["sets", "db"])
def test_export_onto_the_database_is_refused_always(cli, world, tmp_path, command, side, force):
    target = tmp_path / f"test.db{side}"
    args = (
        command("--out", target.name, "--format", "csv")  # relative: the cwd; --db is absolute
        if command is db_export
        else command("--out", target.name)
    )
    assert_refused(cli, world, [*args, *(["--force"] if force else [])], "it is the database")
    # SQLite itself makes and removes its -wal and -shm files as connections come and go; what
    # is there is never an export (a torch zip, a PNG or the CSV header)
    if target.exists():
        assert not target.read_bytes().startswith((b"PK", b"\x89PNG", b"dataset,"))
    assert not (tmp_path / "test.png").exists()
    assert no_temporaries(tmp_path)
    assert cli("sets", "list").code == 0  # the database still opens


def test_the_png_beside_the_export_is_checked_too(cli, world, tmp_path):
    assert_refused(cli, world, sets_export("--out", "x.pt", "--png", "test.db", "--force"),
                   "--png", "it is the database")  # fmt: skip
    assert not (tmp_path / "x.pt").exists()
    # the default PNG of --out x.png would be x.png itself
    assert_refused(cli, world, sets_export("--out", "x.png"), "PNG grid would overwrite --out")


def test_other_names_of_the_database_are_refused(cli, world, tmp_path):
    (tmp_path / "link.pt").symlink_to(world["db"])
    os.link(world["db"], tmp_path / "hard.csv")
    (tmp_path / "sub").mkdir()
    assert_refused(cli, world, sets_export("--out", "link.pt", "--force"), "it is the database")
    assert_refused(cli, world, db_export("--out", "hard.csv", "--force"), "it is the database")
    assert_refused(
        cli, world, sets_export("--out", str(tmp_path / "sub" / ".." / "test.db"), "--force"),
        "it is the database",
    )  # fmt: skip


def test_database_files():
    got = database_files("sqlite:///some/where.db")
    here = Path("some/where.db").resolve()
    assert got == tuple(here.with_name(here.name + s) for s in SIDE)
    assert database_files("sqlite:///file:/x/y.db?mode=ro&uri=true")[0] == Path("/x/y.db")
    assert database_files("sqlite://") == () and database_files("sqlite:///:memory:") == ()
    assert database_files("postgresql://u@host/db") == ()


# -- existing files: refused without --force, replaced with it -----------------------------------


def test_sets_export_refuses_an_existing_file_unless_force(cli, world, tmp_path):
    for existing, other in [("out.pt", "out.png"), ("out.png", "out.pt")]:
        for p in tmp_path.glob("out.*"):
            p.unlink()
        (tmp_path / existing).write_bytes(b"keep me")
        assert_refused(cli, world, sets_export("--out", "out.pt"), "exists; pass --force")
        assert (tmp_path / existing).read_bytes() == b"keep me"
        assert not (tmp_path / other).exists()  # nothing of the export is written
    r = cli(*sets_export("--out", "out.pt", "--force"))
    assert r.code == 0, r.err
    back = torch.load(tmp_path / "out.pt", weights_only=True)
    assert torch.equal(back["data"], world["data"])
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out.pt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert no_temporaries(tmp_path)


def test_db_export_refuses_an_existing_file_unless_force(cli, world, tmp_path):
    out = tmp_path / "ann.json"
    out.write_text("keep me")
    assert_refused(cli, world, db_export("--out", str(out)), "exists; pass --force")
    assert out.read_text() == "keep me"
    r = cli(*db_export("--out", str(out), "--force"))
    assert r.code == 0, r.err
    assert len(json.loads(out.read_text())) == 20  # 10 images, two prompts
    assert no_temporaries(tmp_path)


# -- folders --------------------------------------------------------------------------------------


def test_a_folder_or_a_missing_folder_gets_one_line(cli, world, tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir.png").mkdir()
    assert_refused(cli, world, sets_export("--out", "dir"), "--out is a folder")
    assert_refused(cli, world, sets_export("--out", "dir.pt"), "--png is a folder")
    assert_refused(cli, world, sets_export("--out", "no/x.pt"), "output folder does not exist")
    assert_refused(cli, world, sets_export("--out", "x.pt", "--png", "no/x.png"),
                   "output folder does not exist")  # fmt: skip
    assert_refused(cli, world, db_export("--out", "dir"), "--out is a folder")  # not "format ''"
    assert_refused(cli, world, db_export("--out", "dir", "--force"), "--out is a folder")
    assert_refused(cli, world, db_export("--out", "no/x.csv"), "output folder does not exist")
    assert_refused(cli, world, db_export("--out", "noext"), "cannot tell the export format")
    (tmp_path / "file").write_text("")
    assert_refused(cli, world, db_export("--out", "file/x.csv"), "output folder does not exist")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("x.")]


# -- never half-written ---------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_a_failed_sets_export_leaves_the_old_files(world, tmp_path, monkeypatch, failure):
    import ddsem.plots

    (tmp_path / "out.pt").write_bytes(b"old pt")
    (tmp_path / "out.png").write_bytes(b"old png")

    def broken_grid(images, path, **kwargs):  # the .pt is written; the PNG dies half-way
        Path(path).write_bytes(b"\x89PNG half")
        raise failure("disk gone")

    monkeypatch.setattr(ddsem.plots, "image_grid", broken_grid)
    ws = Workspace.open(str(world["db"]))
    request = sets_job.SetExportRequest(tmp_path / "out.pt", "bptt", force=True)
    with pytest.raises(failure):
        sets_job.export(ws, request)
    assert (tmp_path / "out.pt").read_bytes() == b"old pt"
    assert (tmp_path / "out.png").read_bytes() == b"old png"
    assert no_temporaries(tmp_path)
    ws.db.close()


def test_a_failed_db_export_leaves_the_old_file(world, tmp_path, monkeypatch):
    import ddsem.db.export as ex

    out = tmp_path / "ann.csv"
    out.write_text("old")

    class HalfWriter(ex.csv.DictWriter):
        def writerows(self, rows):
            super().writerows(rows[:3])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(ex.csv, "DictWriter", HalfWriter)
    ws = Workspace.open(str(world["db"]))
    request = database_job.TableExportRequest("annotations", out, force=True)
    with pytest.raises(UserError, match="cannot write .*ann.csv: No space left on device"):
        database_job.export(ws, request)
    assert out.read_text() == "old" and no_temporaries(tmp_path)
    ws.db.close()


def test_an_unwritable_folder_gets_one_line(cli, world, tmp_path, monkeypatch):
    import ddsem.db.export as ex

    def refused(*args, **kwargs):  # what a read-only folder does (root ignores chmod)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ex.tempfile, "mkstemp", refused)
    assert_refused(cli, world, db_export("--out", "x.csv"), "cannot write", "Permission denied")
    assert_refused(cli, world, sets_export("--out", "x.pt"), "cannot write", "Permission denied")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("x.")]


def test_a_set_exported_with_force_round_trips(world, tmp_path):
    ws = Workspace.open(str(world["db"]))
    out = tmp_path / "a.pt"
    sets_job.export(ws, sets_job.SetExportRequest(out, "bptt"))
    first = out.read_bytes()
    sets_job.export(ws, sets_job.SetExportRequest(out, "bptt", force=True))
    back = torch.load(out, weights_only=True)
    assert np.array_equal(back["data"].numpy(), world["data"].numpy()) and len(first) > 0
    ws.db.close()
