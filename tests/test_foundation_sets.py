"""Database, codec and `ddsem sets`: formats, bit-exact round trips, and bad input."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import torch

from ddsem.db import open_db
from ddsem.db.admin import table_counts
from ddsem.db.codec import from_blob, state_from_blob, state_to_blob, to_blob
from ddsem.errors import UserError


def _paper_set(path, n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(n, 3, 32, 32, generator=g) * 3  # values far outside [0, 1] are kept
    torch.save({"data": data, "label": torch.arange(n) % 10}, path)
    return data


def _counts(tmp_path):
    return table_counts(open_db(tmp_path / "test.db"))


def test_codec_round_trips_bit_exactly():
    a = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    b = from_blob(to_blob(a))
    assert b.dtype == a.dtype and np.array_equal(a, b)
    state = {"w": torch.randn(2, 3), "n": torch.tensor(7)}
    back = state_from_blob(state_to_blob(state))
    assert torch.equal(torch.from_numpy(back["w"]), state["w"]) and int(back["n"]) == 7


def test_import_export_round_trip_is_bit_exact(cli, tmp_path):
    data = _paper_set(tmp_path / "set.pt")
    r = cli("sets", "import", str(tmp_path / "set.pt"), "--method", "bptt")
    assert r.code == 0, r.err
    r = cli("sets", "export", "bptt", "--out", str(tmp_path / "out.pt"))
    assert r.code == 0, r.err
    back = torch.load(tmp_path / "out.pt", weights_only=True)
    assert torch.equal(back["data"], data)
    assert torch.equal(back["label"], torch.arange(20) % 10)
    assert (tmp_path / "out.png").stat().st_size > 0
    listing = json.loads(cli("sets", "list", "--json").out)
    assert [(s["name"], s["method"], s["num_images"], s["ipc"]) for s in listing] == [
        ("bptt", "bptt", 20, 2)
    ]
    shown = json.loads(cli("sets", "show", "--method", "bptt", "--json").out)
    assert shown["per_class"] == [2] * 10 and shown["pixel_max"] > 1.0


def test_dc_mtt_and_npz_formats(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("DDSEM_DATA", raising=False)  # an MTT file without data to test it
    runs = [[torch.randn(10, 3, 32, 32), torch.arange(10)] for _ in range(3)]
    torch.save({"data": runs, "accs_all_exps": {}}, tmp_path / "res_DC.pt")
    assert (
        cli("sets", "import", str(tmp_path / "res_DC.pt"), "--method", "gm", "--exp", "2").code == 0
    )
    torch.save(torch.randn(10, 3, 32, 32), tmp_path / "images_best.pt")
    torch.save(torch.arange(10), tmp_path / "labels_best.pt")
    torch.save(torch.tensor(0.0123), tmp_path / "lr_best.pt")
    mtt = ["sets", "import", str(tmp_path / "images_best.pt"), "--method", "tm"]
    refused = cli(*mtt)  # an MTT file may be in ZCA space: without data it is not guessed
    assert refused.code == 2 and "pass --no-zca if it is normalised" in refused.err
    assert cli(*mtt, "--no-zca").code == 0
    np.savez(
        tmp_path / "s.npz",
        images=np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8),
        labels=np.arange(10),
    )
    assert cli("sets", "import", str(tmp_path / "s.npz"), "--method", "dm").code == 0
    from ddsem.db.sets import find_set, set_tensors

    db = open_db(tmp_path / "test.db")
    gm = find_set(db, method="gm")
    images, _ = set_tensors(db, gm.id)
    assert np.array_equal(images, runs[2][0].numpy()) and gm.provenance["exp"] == 2
    assert abs(find_set(db, method="tm").synthetic_lr - 0.0123) < 1e-7
    assert (
        cli(
            "sets",
            "import",
            str(tmp_path / "res_DC.pt"),
            "--method",
            "gm",
            "--name",
            "x",
            "--exp",
            "3",
        ).code
        == 2
    )


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize(
    "case, message",
    [
        ("pickle", "other than plain tensors"),
        ("shape", "N x C x H x W"),
        ("channels", "channels, expected 3"),
        ("size", "expected 32x32"),
        ("nan", "NaN or infinite"),
        ("inf", "NaN or infinite"),
        ("labels", "labels must lie in 0..9"),
        ("missing", "does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_the_database_unchanged(
    cli, tmp_path, case, message
):
    _paper_set(tmp_path / "ok.pt")
    assert cli("sets", "import", str(tmp_path / "ok.pt"), "--method", "bptt").code == 0
    before = _counts(tmp_path)
    bad = tmp_path / "bad.pt"
    marker = tmp_path / "pwned"
    x, y = torch.zeros(10, 3, 32, 32), torch.arange(10)
    if case == "pickle":
        torch.save({"data": Exploit(str(marker)), "label": y}, bad)
    elif case == "shape":
        torch.save({"data": torch.zeros(10, 3, 32), "label": y}, bad)
    elif case == "channels":
        torch.save({"data": torch.zeros(10, 1, 32, 32), "label": y}, bad)
    elif case == "size":
        torch.save({"data": torch.zeros(10, 3, 28, 28), "label": y}, bad)
    elif case in ("nan", "inf"):
        x[3, 0, 0, 0] = float("nan") if case == "nan" else float("inf")
        torch.save({"data": x, "label": y}, bad)
    elif case == "labels":
        torch.save({"data": x, "label": y + 1}, bad)
    marker.unlink(missing_ok=True)
    r = cli("sets", "import", str(bad), "--method", "dm")
    assert r.code == 2
    assert message in r.err and r.err.count("\n") == 1 and "Traceback" not in r.err
    assert not marker.exists()  # the pickle was never executed
    assert _counts(tmp_path) == before


def test_database_that_is_not_sqlite_or_newer_is_refused(cli, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"hello, not a database at all")
    r = cli("sets", "list", db=str(junk))
    assert r.code == 2 and "not a SQLite database" in r.err
    assert junk.read_bytes() == b"hello, not a database at all"
    newer = tmp_path / "newer.db"
    open_db(newer).close()
    con = sqlite3.connect(newer)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    r = cli("sets", "list", db=str(newer))
    assert r.code == 2 and "schema version 99" in r.err
    with pytest.raises(UserError):
        open_db(newer)


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    db = open_db(tmp_path / "w.db")
    with db.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_cli_import_loads_no_heavy_libraries():
    code = (
        "import sys, ddsem.cli, ddsem.db;"
        "heavy = [m for m in ('torch', 'transformers', 'faiss', 'textual') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    helptext = subprocess.run(
        [sys.executable, "-m", "ddsem", "--help"], capture_output=True, text=True
    )
    assert helptext.returncode == 0 and "sets" in helptext.stdout
