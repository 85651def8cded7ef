"""`ddsem sets import` on hostile files: one `error:` line, exit 2, the database unchanged, or
a clean import that stores exactly what the file holds. Never a traceback (issue 15, defect 4)."""

from __future__ import annotations

import contextlib
import io
import pickle
import shutil
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddsem.cli import run
from ddsem.data.cifar import MEAN, STD
from ddsem.db import open_db

RNG = np.random.default_rng(0)
GOOD_X = RNG.standard_normal((10, 3, 32, 32)).astype(np.float32)
GOOD_Y = np.arange(10)


def _state(db: Path) -> tuple[dict[str, int], bytes, bytes]:
    """Row counts of every table and the bytes of the database and its -wal file (plain sqlite3:
    ddsem's own open would cost more than the import it checks)."""
    wal = Path(f"{db}-wal")
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        counts = {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    return counts, db.read_bytes(), wal.read_bytes() if wal.exists() else b""


def _checkpoint(db: Path) -> None:
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _assert_refused(r, path: Path, message: str | None = None) -> None:
    assert r.code == 2, (r.code, r.out, r.err)
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, r.err
    assert "Traceback" not in r.err and path.name in r.err, r.err
    if message is not None:
        assert message in r.err, r.err


# -- each case of defect 4 through the CLI --------------------------------------------------------


def _write_case(case: str, path: Path) -> None:
    if case == "empty.pt":
        path.write_bytes(b"")
    elif case == "text.pt":
        path.write_text("hello, this is not a tensor file\n")
    elif case == "truncated.npz":
        buf = io.BytesIO()
        np.savez(buf, images=GOOD_X, labels=GOOD_Y)
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif case == "string-labels.npz":
        np.savez(path, images=GOOD_X, labels=np.array(["cat"] * 10))
    elif case == "zero.npz":
        path.write_bytes(b"")
    elif case == "labels-n-by-2.npz":
        np.savez(path, images=GOOD_X, labels=np.stack([GOOD_Y, GOOD_Y], 1))
    elif case == "complex.npz":
        np.savez(path, images=GOOD_X.astype(np.complex64) * 1j, labels=GOOD_Y)
    elif case == "npy-as.npz":
        with path.open("wb") as f:
            np.save(f, GOOD_X)
    elif case == "object.npz":
        np.savez(path, images=GOOD_X, labels=np.array([1, "a", None], dtype=object))
    elif case == "overflow.pt":
        torch.save(
            {
                "data": torch.full((10, 3, 32, 32), 1e300, dtype=torch.float64),
                "label": torch.arange(10),
            },
            path,
        )
    elif case == "float-labels.pt":
        torch.save({"data": torch.from_numpy(GOOD_X), "label": torch.arange(10) + 0.5}, path)
    elif case == "uint8-5d.npz":  # pixels to normalise, but not N x 3 x H x W
        np.savez(path, images=np.zeros((2, 3, 32, 32, 1), np.uint8), labels=GOOD_Y[:2])
    elif case == "escape.pt":  # raw control bytes must not reach the terminal
        path.write_bytes(b"\x1b[31mXYZ")
    elif case == "plain-pickle.pt":
        path.write_bytes(pickle.dumps(Exploit(str(path.with_name("pwned")))))
    elif case == "lr-nan":
        torch.save(torch.from_numpy(GOOD_X), path.with_name("images_best.pt"))
        torch.save(torch.arange(10), path.with_name("labels_best.pt"))
        torch.save(torch.tensor(float("nan")), path.with_name("lr_best.pt"))
    else:
        raise AssertionError(case)


CASES = [
    ("empty.pt", "not a readable PyTorch file"),
    ("text.pt", "not a readable PyTorch file"),
    ("truncated.npz", "not a readable .npz"),
    ("string-labels.npz", "labels must be numbers"),
    ("zero.npz", "not a readable .npz"),
    ("labels-n-by-2.npz", "N x 10 soft labels, got shape (10, 2)"),
    ("complex.npz", "complex-valued"),
    ("npy-as.npz", "a single array"),
    ("object.npz", "not a readable .npz"),
    ("overflow.pt", "NaN or infinite"),
    ("float-labels.pt", "integer class indices"),
    ("uint8-5d.npz", "N x C x H x W"),
    ("escape.pt", "not a readable PyTorch file (Unsupported operand 27)"),
    ("plain-pickle.pt", "not a readable PyTorch file"),
    ("lr-nan", "learning rate must be positive"),
]


class Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def stored(cli, tmp_path):
    """A database holding one imported set, checkpointed; returns its path."""
    torch.save(
        {"data": torch.from_numpy(GOOD_X), "label": torch.from_numpy(GOOD_Y)}, tmp_path / "ok.pt"
    )
    assert cli("sets", "import", str(tmp_path / "ok.pt"), "--method", "bptt").code == 0
    db = tmp_path / "test.db"
    _checkpoint(db)
    return db


@pytest.mark.parametrize("case, message", CASES, ids=[c for c, _ in CASES])
def test_each_bad_file_is_one_line_exit_2_and_leaves_the_database_unchanged(
    cli, tmp_path, stored, case, message
):
    path = tmp_path / case
    _write_case(case, path)
    if case == "lr-nan":
        path = tmp_path / "images_best.pt"
    before = _state(stored)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = cli("sets", "import", str(path), "--method", "dm", "--name", "new")
    _assert_refused(r, tmp_path / ("lr_best.pt" if case == "lr-nan" else case), message)
    assert not [w for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert _state(stored) == before
    assert "\x1b" not in r.err and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", ""], "--method must name"),
        (["--method", "   "], "--method must name"),
        (["--method", "\t"], "--method must name"),
        (["--method", "d\nm"], "control characters"),
        (["--method", "dm", "--name", " "], "--name must not be empty"),
        (["--method", "dm", "--exp", "-1"], "--exp must be 0 or more"),
        (["--method", "dm", "--format", "x" * 5000], "unknown format"),
    ],
)
def test_blank_or_odd_options_are_refused(cli, tmp_path, stored, args, message):
    np.savez(tmp_path / "good.npz", images=GOOD_X, labels=GOOD_Y)
    before = _state(stored)
    r = cli("sets", "import", str(tmp_path / "good.npz"), *args)
    assert r.code == 2 and r.err.startswith("error: ") and r.err.count("\n") == 1, r.err
    assert message in r.err and len(r.err) < 300, r.err
    assert _state(stored) == before


def test_soft_and_column_labels_are_the_class_indices(cli, tmp_path, stored):
    soft = np.full((10, 10), 0.01)
    soft[np.arange(10), GOOD_Y[::-1]] = 0.9
    np.savez(tmp_path / "soft.npz", images=GOOD_X, labels=soft)
    np.savez(tmp_path / "column.npz", images=GOOD_X, labels=GOOD_Y[:, None])
    assert cli("sets", "import", str(tmp_path / "soft.npz"), "--method", "x").code == 0
    assert cli("sets", "import", str(tmp_path / "column.npz"), "--method", "y").code == 0
    from ddsem.db.sets import find_set, set_tensors

    db = open_db(stored)
    try:
        s = find_set(db, "x")
        assert (
            np.array_equal(set_tensors(db, s.id)[1], GOOD_Y[::-1]) and s.provenance["soft_labels"]
        )
        assert np.array_equal(set_tensors(db, find_set(db, "y").id)[1], GOOD_Y)
    finally:
        db.close()


def test_an_eof_error_is_not_reported_as_an_interrupt(monkeypatch, capsys, tmp_path):
    """typer wraps an EOFError escaping a command in Abort; run() must not call it Ctrl-C."""
    from ddsem.jobs import sets as job

    def boom(*_a, **_k):
        raise EOFError("a bug")

    monkeypatch.setattr(job, "list_sets", boom)
    open_db(tmp_path / "t.db").close()
    with pytest.raises(EOFError):
        run(["--db", str(tmp_path / "t.db"), "sets", "list"])
    assert "interrupted" not in capsys.readouterr().err


# -- property: random and mutated files -----------------------------------------------------------


@dataclass
class Spec:
    """A valid container holding possibly wrong content, and what ddsem must make of it."""

    container: str  # npz | paper | dc | mtt
    images: np.ndarray | list
    labels: np.ndarray | list
    image_key: str
    label_key: str
    extra: bool

    def expected(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The stored images and labels the file's documented format means, None if invalid."""
        x, y = self.images, self.labels
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            return None
        if self.image_key not in ("images", "data", "x", "-") or self.label_key not in (
            "labels",
            "label",
            "y",
            "-",
        ):
            return None
        if self.container in ("paper", "dc", "mtt") and x.dtype.kind not in "fiu":
            return None
        if x.dtype.kind not in "fiu" or y.dtype.kind not in "fiu":
            return None
        if self.container == "npz":
            if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
                x = x.transpose(0, 3, 1, 2)
            if x.dtype == np.uint8 and x.ndim == 4 and x.shape[1] == 3:
                m = np.asarray(MEAN, np.float32)[:, None, None]
                s = np.asarray(STD, np.float32)[:, None, None]
                x = (x.astype(np.float32) / 255.0 - m) / s
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (3, 32, 32) or len(x) == 0 or not np.isfinite(x).all():
            return None
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim == 2 and y.shape[1] == 10 and np.isfinite(y).all():
            y = y.argmax(1)
        if y.ndim != 1 or len(y) != len(x):
            return None
        if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
            return None
        if y.min() < 0 or y.max() > 9:
            return None
        return x, y.astype(np.int64)


def _images(draw, n: int) -> np.ndarray | list:
    shape = draw(
        st.sampled_from(
            [(n, 3, 32, 32)] * 6
            + [(n, 32, 32, 3)] * 2
            + [
                (n, 3, 32),
                (n, 1, 32, 32),
                (n, 3, 28, 28),
                (0, 3, 32, 32),
                (n, 3, 32, 32, 1),
                (),
                (n,),
            ]
        )
    )
    dtype = draw(
        st.sampled_from(
            ["float32"] * 4
            + ["float64", "float16", "uint8", "int64", "bool", "complex64", "U2", "list"]
        )
    )
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if dtype == "list":
        return [[1.0, 2.0], [3.0]]  # ragged
    if dtype == "U2":
        return np.full(shape, "ab")
    x = rng.standard_normal(shape) * 2
    if dtype in ("uint8", "int64"):
        x = rng.integers(0, 256, shape)
    elif dtype == "bool":
        x = x > 0
    x = x.astype(dtype)
    if dtype.startswith("float") and x.size:
        special = draw(st.sampled_from([None] * 4 + [np.nan, np.inf, -np.inf, 1e300]))
        if special is not None:
            with np.errstate(over="ignore"):
                x.flat[draw(st.integers(0, x.size - 1))] = special
    return x


def _labels(draw, n: int) -> np.ndarray:
    kind = draw(
        st.sampled_from(["vector"] * 5 + ["column", "n-by-2", "soft", "scalar", "long", "short"])
    )
    dtype = draw(st.sampled_from(["int64"] * 3 + ["float64", "uint8", "bool", "U1", "half"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    length = {"long": n + 1, "short": max(n - 1, 0)}.get(kind, n)
    y = rng.integers(0, 10, length)
    if draw(st.booleans()) and length:
        y[draw(st.integers(0, length - 1))] = draw(st.sampled_from([-1, 10, 255]))
    if kind == "column":
        y = y[:, None]
    elif kind == "n-by-2":
        y = np.stack([y, y], 1)
    elif kind == "soft":
        return rng.random((n, 10))
    elif kind == "scalar":
        y = np.asarray(y[0] if length else 0)
    if dtype == "half":
        return y.astype(np.float64) + 0.5
    if dtype == "U1":
        return y.astype("U1")
    return y.astype(dtype)


@st.composite
def specs(draw) -> Spec:
    container = draw(st.sampled_from(["npz", "npz", "paper", "dc", "mtt"]))
    n = draw(st.integers(1, 4))
    image_key = draw(st.sampled_from(["images"] * 6 + ["data", "x", "pixels"]))
    label_key = draw(st.sampled_from(["labels"] * 6 + ["label", "y", "targets"]))
    if container != "npz":
        image_key = "data" if image_key != "pixels" or container == "mtt" else "pixels"
        label_key = "label" if label_key != "targets" or container != "paper" else "targets"
        if container in ("dc", "mtt"):
            image_key = label_key = "-"
    return Spec(
        container, _images(draw, n), _labels(draw, n), image_key, label_key, draw(st.booleans())
    )


def _tensor(a):
    """A tensor where torch has the dtype; else the raw value (the pickle must then be refused)."""
    if isinstance(a, np.ndarray) and a.dtype.kind in "biufc" and a.dtype != np.uint16:
        return torch.from_numpy(a.copy(order="C"))  # (ascontiguousarray makes 0-d arrays 1-d)
    return a


def _write(spec: Spec, folder: Path) -> Path:
    if spec.container == "npz":
        images = spec.images
        if isinstance(images, list):  # ragged: an object array, refused by allow_pickle=False
            images = np.array(images, dtype=object)
        arrays = {spec.image_key: images, spec.label_key: spec.labels}
        if spec.extra:
            arrays["notes"] = np.arange(3)
        path = folder / "set.npz"
        np.savez(path, **arrays)
        return path
    x, y = _tensor(spec.images), _tensor(spec.labels)
    if spec.container == "mtt":
        torch.save(x, folder / "images_best.pt")
        torch.save(y, folder / "labels_best.pt")
        return folder / "images_best.pt"
    obj = {"data": [[x, y]]} if spec.container == "dc" else {spec.image_key: x, spec.label_key: y}
    if spec.extra:
        obj["accs_all_exps"] = {"ConvNet": [0.5]}
    path = folder / "set.pt"
    torch.save(obj, path)
    return path


def _valid_bytes(suffix: str) -> bytes:
    buf = io.BytesIO()
    if suffix == ".npz":
        np.savez(buf, images=GOOD_X[:2], labels=GOOD_Y[:2])
    else:
        torch.save({"data": torch.from_numpy(GOOD_X[:2]), "label": torch.arange(2)}, buf)
    return buf.getvalue()


VALID = {".npz": _valid_bytes(".npz"), ".pt": _valid_bytes(".pt")}


@st.composite
def raw_files(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from([".npz", ".pt"]))
    kind = draw(st.sampled_from(["random", "magic", "truncated", "flipped"]))
    good = VALID[suffix]
    if kind == "random":
        return suffix, draw(st.binary(max_size=512))
    if kind == "magic":
        head = draw(
            st.sampled_from([b"PK\x03\x04", b"\x93NUMPY\x01\x00", b"\x80\x02", b"\x80\x04"])
        )
        return suffix, head + draw(st.binary(max_size=256))
    if kind == "truncated":
        return suffix, good[: draw(st.integers(0, len(good) - 1))]
    data = bytearray(good)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return suffix, bytes(data)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """A checkpointed database holding one set; each example works on a copy."""
    folder = tmp_path_factory.mktemp("import-baseline")
    torch.save(
        {"data": torch.from_numpy(GOOD_X), "label": torch.from_numpy(GOOD_Y)}, folder / "ok.pt"
    )
    db = folder / "base.db"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert (
            run(
                ["--db", str(db), "-q", "sets", "import", str(folder / "ok.pt"), "--method", "bptt"]
            )
            == 0
        )
    _checkpoint(db)
    return db


def _import(db: Path, path: Path) -> tuple[int, str]:
    err = io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = run(
                [
                    "--db",
                    str(db),
                    "-q",
                    "sets",
                    "import",
                    str(path),
                    "--method",
                    "dm",
                    "--name",
                    "new",
                    "--no-zca",  # an MTT file is otherwise refused without data to test it
                ]
            )
    noise = [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert not noise, noise
    return code, err.getvalue()


def _check(db: Path, path: Path, code: int, err: str, before, expected) -> None:
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        names = (path.name, "labels_best.pt") if path.name == "images_best.pt" else (path.name,)
        assert any(name in err for name in names), err
        assert _state(db) == before
        return
    from ddsem.db.sets import find_set, set_tensors

    database = open_db(db)
    try:
        images, labels = set_tensors(database, find_set(database, "new").id)
    finally:
        database.close()
    assert images.dtype == np.float32 and images.shape[1:] == (3, 32, 32)
    assert np.isfinite(images).all() and labels.min() >= 0 and labels.max() <= 9
    if expected is not None:
        assert np.array_equal(images, expected[0]) and np.array_equal(labels, expected[1])


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=specs())
def test_mutated_containers_import_exactly_or_are_refused(baseline, tmp_path_factory, spec):
    folder = tmp_path_factory.mktemp("case")
    db = folder / "t.db"
    shutil.copy(baseline, db)
    path = _write(spec, folder)
    before = _state(db)
    code, err = _import(db, path)
    expected = spec.expected()
    assert code == (0 if expected is not None else 2), (spec, code, err)
    _check(db, path, code, err, before, expected)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=raw_files())
def test_random_and_corrupted_bytes_import_or_are_refused(baseline, tmp_path_factory, raw):
    suffix, data = raw
    folder = tmp_path_factory.mktemp("raw")
    db = folder / "t.db"
    shutil.copy(baseline, db)
    path = folder / f"set{suffix}"
    path.write_bytes(data)
    before = _state(db)
    code, err = _import(db, path)
    _check(db, path, code, err, before, None)
