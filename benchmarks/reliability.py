"""Re-measure issue 15's reliability figures: bad inputs tried vs handled cleanly, kills survived
with results equal to an uninterrupted run, and readers that fail while jobs write.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reliability.py [--quick] [--out figures.json]

Everything happens in a temporary folder (the decoded-pixel cache too, via DDSEM_CACHE): a tiny
database is built once with the CLI on procedural CIFAR-shaped images (``ddsem.data.synthetic``),
and every case runs ``python -m ddsem --db DB --device cpu ...`` as a subprocess on its own copy.

A bad input is *handled cleanly* when the command exits 2, stderr's last non-empty line starts
with ``error:``, stderr holds no ``Traceback`` and at most 3 non-empty lines, the database's rows
are unchanged (its sha256, or a dump of every row of every table, -wal included, when the bytes
differ), no row is left with status 'running', and no file in the case's folder was changed,
removed or created. A case marked ``accept`` in the catalogue is an input that is actually fine:
there exit 0 is counted as *accepted* (and a clean refusal is fine too).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PARALLEL = 2  # the machine this was written for has 2 cores
MEMORY_LIMIT = (
    6 << 30
)  # address space per command: a huge size is a MemoryError, not the OOM killer
NUMERIC_TIMEOUT = 60.0  # a huge count that is accepted runs until this and counts as not handled
HUGE_INT = str(10**30)  # past int64: SQLite, numpy and torch all overflow on it
INT_VALUES = ["nan", "inf", "-1", "0", HUGE_INT, "abc"]
FLOAT_VALUES = ["nan", "inf", "-inf", "-1", "0", "1e300", "abc"]
QUICK_INT_VALUES = ["nan", "-1", HUGE_INT]
QUICK_FLOAT_VALUES = ["nan", "-1", "1e300"]
DB = "ddsem.db"  # the database's name inside every case folder
SIDE = ("-wal", "-shm", "-journal")


# -- the catalogue ---------------------------------------------------------------------------------


@dataclass
class Case:
    """One bad (or borderline) input. ``args`` follow ``python -m ddsem --db DB --device cpu``;
    ``{data}`` is the synthetic image folder. ``setup(folder)`` prepares files beside the case's
    database copy; ``db`` replaces the database argument (a URL or another file)."""

    name: str
    group: str
    args: list[str]
    setup: Callable[[Path], None] | None = None
    db: str = DB
    accept: str | None = None  # why exit 0 is a legitimate answer to this input
    timeout: float = 120.0
    cleanup: Callable[[Path], None] | None = None


# base commands: cheap, valid on the prepared database; a numeric option's bad value replaces
# (or is added to) these, so the bad value is the only thing wrong with the command
BASES: dict[str, list[str]] = {
    "evaluate": ["evaluate", "--set", "s1", "--arch", "convnet", "--protocol", "paper",
                 "--runs", "1", "--width", "8", "--test-limit", "20", "--data", "{data}"],
    "annotate": ["annotate", "--annotator", "color", "--limit", "40", "--batch-size", "8",
                 "--data", "{data}"],
    "rank": ["rank", "--set", "s1", "--draws", "100"],
    "query": ["query", "blue", "--set", "s1", "--draws", "100"],
    "report": ["report", "--set", "s1", "--out", "rep", "--draws", "100"],
    "curvature": ["curvature", "--set", "s1", "--iterations", "2", "--every", "1", "--probes",
                  "2", "--real-samples", "20", "--lanczos-steps", "3", "--train-samples", "20",
                  "--width", "8", "--data", "{data}", "--out", "figs"],
    "landscape": ["landscape", "--set", "s1", "--grid", "2", "--width", "4", "--depth", "2",
                  "--train-samples", "20", "--test-samples", "10", "--distilled-steps", "2",
                  "--data", "{data}", "--out", "figs"],
    "sets import": ["sets", "import", "good.npz", "--method", "dm", "--name", "imp"],
    "distill": ["distill", "--method", "dm", "--ipc", "1", "--iterations", "2", "--width", "8",
                "--batch-real", "4", "--name", "d2", "--data", "{data}"],
    "distill experts": ["distill", "experts", "--num-experts", "1", "--epochs", "1", "--width",
                        "8", "--real-limit", "50", "--batch-size", "16", "--test-limit", "20",
                        "--data", "{data}"],
    "influence": ["influence", "--set", "s1", "--width", "8", "--steps", "20", "--test-limit",
                  "40", "--data", "{data}"],
    "influence show": ["influence", "show", "--set", "s1", "--image", "0", "--top", "3"],
    "attributes extract": ["attributes", "extract", "--min-df", "1"],
    "analyze recognition": ["analyze", "recognition", "--set", "s1", "--width", "4", "--depth",
                            "2", "--epochs", "1", "--train-samples", "20", "--test-limit", "20",
                            "--runs", "1", "--data", "{data}", "--out", "figs"],
    "analyze inverse": ["analyze", "inverse", "--set", "s1", "--models", "convnet:4", "--epochs",
                        "1", "--train-samples", "20", "--test-limit", "20", "--no-embed",
                        "--data", "{data}", "--out", "figs"],
    "analyze clipping": ["analyze", "clipping", "--set", "s1", "--width", "4", "--depth", "2",
                         "--runs", "1", "--steps", "2", "--test-limit", "20", "--data", "{data}",
                         "--out", "figs"],
    "analyze extra-training": ["analyze", "extra-training", "--set", "s1", "--width", "4",
                               "--depth", "2", "--runs", "1", "--steps", "2", "--real-iterations",
                               "2", "--train-samples", "20", "--test-limit", "20", "--data",
                               "{data}", "--out", "figs"],
    "analyze mixing": ["analyze", "mixing", "--set", "s1", "--counts", "0,1", "--width", "4",
                       "--depth", "2", "--runs", "1", "--steps", "2", "--test-limit", "20",
                       "--data", "{data}", "--out", "figs"],
    "analyze agreement": ["analyze", "agreement", "--set", "s1", "--width", "4", "--depth", "2",
                          "--train-samples", "40", "--test-limit", "20", "--pool", "2", "--chunk",
                          "2", "--epochs", "1", "--early-runs", "1", "--early-epochs", "1",
                          "--runs", "1", "--window", "100", "--data", "{data}", "--out", "figs"],
}  # fmt: skip
STR_NUMERIC = {"influence": ["--seeds"], "curvature": ["--density-at"]}  # numbers in a string
GLOBAL_SEED_ON = ["influence", "rank", "distill", "curvature"]

# (command, option, value) -> why exit 0 is right. Filled in from what the inputs mean: zero
# where zero is a meaningful count, a huge count where "more than there is" means "all".
ACCEPT: dict[tuple[str, str, str], str] = {}


def _accept(reason: str, command: str, option: str, *values: str) -> None:
    for v in values:
        ACCEPT[(command, option, v)] = reason


_accept("--seed 0 is the default seed", "influence", "--seed", "0")
_accept("--seed 0 is the default seed", "rank", "--seed", "0")
_accept("--seed 0 is the default seed", "distill", "--seed", "0")
_accept("--seed 0 is the default seed", "curvature", "--seed", "0")
_accept("--seeds 0 is the stored run: nothing to do", "influence", "--seeds", "0")
_accept("--chunk 0 is the default (4 on the CPU)", "influence", "--chunk", "0")
_accept("--top 0 lists no rows, a valid request", "rank", "--top", "0")
_accept("--min-positives 0 keeps every attribute", "rank", "--min-positives", "0")
_accept("--min-positives 0 keeps every attribute", "report", "--min-positives", "0")
_accept("--images 0 shows no example images", "query", "--images", "0")
_accept("--image 0 is the first distilled image", "influence show", "--image", "0")
_accept("--iterations 0 measures curvature at initialisation only", "curvature",
        "--iterations", "0")  # fmt: skip
_accept("--density-at 0 is the first checkpoint", "curvature", "--density-at", "0")
_accept("--margin 0 is a plane without margin", "landscape", "--margin", "0")
_accept("--exp 0 is the default experiment index", "sets import", "--exp", "0")
_accept("--min-positives larger than any count: nothing qualifies", "rank", "--min-positives",
        HUGE_INT)  # fmt: skip
_accept("--top larger than the table lists every row", "rank", "--top", HUGE_INT)
_accept("--top larger than the table lists every row", "query", "--top", HUGE_INT)
_accept("--top larger than the table lists every row", "influence show", "--top", HUGE_INT)
_accept("--top larger than the table lists every row", "report", "--top", HUGE_INT)
_accept("--images larger than there are shows them all", "query", "--images", HUGE_INT)
_accept("--limit larger than the split annotates all", "annotate", "--limit", HUGE_INT)
_accept("--test-limit larger than the split takes all", "influence", "--test-limit", HUGE_INT)
_accept("--test-limit larger than the split takes all", "evaluate", "--test-limit", HUGE_INT)
_accept("--test-limit larger than the split takes all", "distill experts", "--test-limit",
        HUGE_INT)  # fmt: skip
_accept("--real-limit larger than the split takes all", "distill experts", "--real-limit",
        HUGE_INT)  # fmt: skip
_accept("--real-limit larger than the split takes all", "distill", "--real-limit", HUGE_INT)
_accept("--train-samples larger than the split takes all", "curvature", "--train-samples",
        HUGE_INT)  # fmt: skip
_accept("--train-samples larger than the split takes all", "landscape", "--train-samples",
        HUGE_INT)  # fmt: skip
_accept("--test-samples larger than the split takes all", "landscape", "--test-samples",
        HUGE_INT)  # fmt: skip
_accept("--max-terms larger than the vocabulary keeps all", "attributes extract",
        "--max-terms", HUGE_INT)  # fmt: skip
_accept("--max-new-tokens is unused by the colour annotator; more is fine", "annotate",
        "--max-new-tokens", HUGE_INT)  # fmt: skip
_accept("--min-df above every count: no attribute extracted, a valid answer",
        "attributes extract", "--min-df", HUGE_INT)  # fmt: skip
_accept("--batch-size larger than the images: one batch", "annotate", "--batch-size", HUGE_INT)
_accept("--probe-block larger than the probes: one block", "curvature", "--probe-block",
        HUGE_INT)  # fmt: skip
_accept("--chunk-size larger than the samples: one chunk", "curvature", "--chunk-size",
        HUGE_INT)  # fmt: skip
_accept("--batch-real larger than a class: the whole class", "distill", "--batch-real",
        HUGE_INT)  # fmt: skip
_accept("--batch-size larger than the data: one batch", "distill experts", "--batch-size",
        HUGE_INT)  # fmt: skip
_accept("--checkpoint-every longer than the run: one checkpoint at the end", "distill",
        "--checkpoint-every", HUGE_INT)  # fmt: skip
_accept("--stop-after past the last iteration: runs to the end", "distill", "--stop-after",
        HUGE_INT)  # fmt: skip
_accept("--real-samples larger than the split takes all", "curvature", "--real-samples",
        HUGE_INT)  # fmt: skip
_accept("--real-images larger than the split takes all (unused in distilled context)",
        "influence", "--real-images", HUGE_INT)  # fmt: skip
_accept("--top-k larger than the test images keeps them all", "influence", "--top-k", HUGE_INT)
_accept(
    "--tolerance 0: settled once accuracy equals its final value",
    "analyze recognition",
    "--tolerance",
    "0",
)
_accept("--draws is a cap: the null is drawn deeper only while an answer needs it", "rank",
        "--draws", HUGE_INT)  # fmt: skip
_accept("--draws is a cap: the null is drawn deeper only while an answer needs it", "query",
        "--draws", HUGE_INT)  # fmt: skip
_accept("--draws is a cap: the null is drawn deeper only while an answer needs it", "report",
        "--draws", HUGE_INT)  # fmt: skip
_accept("--min-positives above every count: an empty table, a valid answer", "report",
        "--min-positives", HUGE_INT)  # fmt: skip
_accept("--attributes-per-image larger than the vocabulary shows them all", "report",
        "--attributes-per-image", HUGE_INT)  # fmt: skip
_accept("--chunk larger than the models: one transaction", "influence", "--chunk", HUGE_INT)
_accept("--probes is a cap: probing stops once the stderr reaches --rel-err", "curvature",
        "--probes", HUGE_INT)  # fmt: skip
_accept("Lanczos options are unused without --density-at", "curvature", "--lanczos-steps",
        HUGE_INT)  # fmt: skip
_accept("Lanczos options are unused without --density-at", "curvature", "--lanczos-runs",
        HUGE_INT)  # fmt: skip
_accept("--exp picks the experiment of a DC res_*.pt file; an .npz has none and ignores it",
        "sets import", "--exp", HUGE_INT)  # fmt: skip
_accept("--every past the last iteration: the first and last checkpoint", "curvature",
        "--every", HUGE_INT)  # fmt: skip


def _command_options() -> dict[str, list[tuple[str, type]]]:
    """Every command's options and arguments with their Python types, from the CLI itself."""
    import typer

    from ddsem.cli import app

    found: dict[str, list[tuple[str, type]]] = {}

    def params(cmd) -> list[tuple[str, type]]:
        out = []
        for p in cmd.params:
            if "Option" in type(p).__name__ and not p.is_flag:
                out.append((p.opts[0], p.type_descriptor.annotation))
        return out

    def walk(cmd, path: list[str]) -> None:
        if path:
            own = params(cmd)
            if own:
                found[" ".join(path)] = own
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


UNCOVERED: list[str] = []


def _with(base: list[str], option: str, value: str) -> list[str]:
    """``base`` with ``option`` set to ``value`` (replaced where present, else appended)."""
    args = list(base)
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    return args


def numeric_cases(quick: bool = False) -> list[Case]:
    """NaN, inf, negative, zero, huge and non-number values for every numeric option of every
    command (read from the CLI's own option lists), on a cheap valid base command."""
    cases = []
    options = _command_options()
    uncovered = sorted(
        c for c, opts in options.items()
        if c not in BASES and any(t in (int, float) for _, t in opts)
    )  # fmt: skip
    UNCOVERED[:] = uncovered  # commands newer than this catalogue: reported, not tried
    for command, opts in sorted(options.items()):
        if command not in BASES:
            continue
        numeric = [(o, t) for o, t in opts if t in (int, float)]
        numeric += [(o, int) for o in STR_NUMERIC.get(command, [])]
        if command in GLOBAL_SEED_ON:
            numeric.append(("--seed", int))
        for option, kind in numeric:
            if kind is float:
                values = QUICK_FLOAT_VALUES if quick else FLOAT_VALUES
            else:
                values = QUICK_INT_VALUES if quick else INT_VALUES
            for value in values:
                cases.append(
                    Case(
                        name=f"{command} {option} {value[:12]}",
                        group="numeric option",
                        args=_with(BASES[command], option, value),
                        setup=_good_npz if command == "sets import" else None,
                        accept=ACCEPT.get((command, option, value)),
                        timeout=NUMERIC_TIMEOUT,
                    )
                )
    return cases


# -- files the cases need --------------------------------------------------------------------------

RNG = np.random.default_rng(0)
GOOD_X = RNG.standard_normal((10, 3, 32, 32)).astype(np.float32)
GOOD_Y = np.arange(10)


class Exploit:
    """A pickle that runs code on load: it creates the file ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _good_npz(d: Path) -> None:
    np.savez(d / "good.npz", images=GOOD_X, labels=GOOD_Y)


def _existing(d: Path) -> None:
    (d / "existing.pt").write_bytes(b"precious: not to be overwritten\n")
    (d / "existing.png").write_bytes(b"precious png\n")
    (d / "existing.csv").write_bytes(b"precious,csv\n")
    (d / "folder").mkdir()
    (d / "folder" / "keep.txt").write_text("keep\n")


def _bad_file(kind: str) -> Callable[[Path], None]:
    def write(d: Path) -> None:
        import torch

        path = d / kind
        if kind == "empty.pt" or kind == "zero.npz":
            path.write_bytes(b"")
        elif kind == "text.pt":
            path.write_text("hello, this is not a tensor file\n")
        elif kind == "truncated.npz":
            buf = io.BytesIO()
            np.savez(buf, images=GOOD_X, labels=GOOD_Y)
            path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        elif kind == "truncated.pt":
            buf = io.BytesIO()
            torch.save({"data": torch.from_numpy(GOOD_X), "label": torch.arange(10)}, buf)
            path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        elif kind == "string-labels.npz":
            np.savez(path, images=GOOD_X, labels=np.array(["cat"] * 10))
        elif kind == "labels-n-by-2.npz":
            np.savez(path, images=GOOD_X, labels=np.stack([GOOD_Y, GOOD_Y], 1))
        elif kind == "complex.npz":
            np.savez(path, images=GOOD_X.astype(np.complex64) * 1j, labels=GOOD_Y)
        elif kind == "nan-images.npz":
            np.savez(path, images=np.full_like(GOOD_X, np.nan), labels=GOOD_Y)
        elif kind == "labels-out-of-range.npz":
            np.savez(path, images=GOOD_X, labels=GOOD_Y + 100)
        elif kind == "negative-labels.npz":
            np.savez(path, images=GOOD_X, labels=-GOOD_Y - 1)
        elif kind == "length-mismatch.npz":
            np.savez(path, images=GOOD_X, labels=GOOD_Y[:3])
        elif kind == "no-images.npz":
            np.savez(path, labels=GOOD_Y)
        elif kind == "zero-images.npz":
            np.savez(path, images=np.zeros((0, 3, 32, 32), np.float32), labels=GOOD_Y[:0])
        elif kind == "wrong-shape.npz":
            np.savez(path, images=np.zeros((10, 7), np.float32), labels=GOOD_Y)
        elif kind == "npy-as.npz":
            with path.open("wb") as f:
                np.save(f, GOOD_X)
        elif kind == "object.npz":
            np.savez(path, images=GOOD_X, labels=np.array([1, "a", None], dtype=object))
        elif kind == "object-pickle.npz":  # an object array runs code when unpickled
            arr = np.empty(1, dtype=object)
            arr[0] = Exploit(str(d / "pwned"))
            np.savez(path, images=GOOD_X, labels=arr)
        elif kind == "overflow.pt":
            torch.save(
                {"data": torch.full((10, 3, 32, 32), 1e300, dtype=torch.float64),
                 "label": torch.arange(10)}, path,
            )  # fmt: skip
        elif kind == "float-labels.pt":
            torch.save({"data": torch.from_numpy(GOOD_X), "label": torch.arange(10) + 0.5}, path)
        elif kind == "plain-pickle.pt":
            path.write_bytes(pickle.dumps(Exploit(str(d / "pwned"))))
        elif kind == "dict-pickle.pt":
            torch.save(
                {"data": torch.from_numpy(GOOD_X), "label": torch.arange(10),
                 "x": Exploit(str(d / "pwned"))}, path,
            )  # fmt: skip
        elif kind == "object-pickle.pt":
            torch.save(Exploit(str(d / "pwned")), path)
        elif kind == "escape.pt":
            path.write_bytes(b"\x1b[31mXYZ")
        elif kind == "images_best.pt":  # MTT layout, lr_best.pt holds code or NaN
            torch.save(torch.from_numpy(GOOD_X), d / "images_best.pt")
            torch.save(torch.arange(10), d / "labels_best.pt")
            torch.save(Exploit(str(d / "pwned")), d / "lr_best.pt")
        elif kind == "nan-lr/images_best.pt":
            (d / "nan-lr").mkdir()
            torch.save(torch.from_numpy(GOOD_X), d / "nan-lr" / "images_best.pt")
            torch.save(torch.arange(10), d / "nan-lr" / "labels_best.pt")
            torch.save(torch.tensor(float("nan")), d / "nan-lr" / "lr_best.pt")
        elif kind == "a-folder.pt":
            path.mkdir()
        elif kind == "missing.pt":
            pass
        else:
            raise AssertionError(kind)

    return write


def _foreign(d: Path) -> None:
    con = sqlite3.connect(d / "notes.db")
    with con:
        con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        con.execute("INSERT INTO notes (text) VALUES ('keep me')")
    con.close()


def _not_sqlite(d: Path) -> None:
    (d / "junk.db").write_bytes(b"this is not a database\n" * 100)


def _alter(sql: list[str]) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        con = sqlite3.connect(d / DB)
        with con:
            for s in sql:
                con.execute(s)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        for s in SIDE:
            with contextlib.suppress(FileNotFoundError):
                os.remove(d / (DB + s))

    return setup


def _chattr(flag: str, path: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


def _readonly(d: Path) -> None:
    """The database immutable (``chattr +i``: even root cannot write it), else chmod 444."""
    if not _chattr("+i", d / DB):
        os.chmod(d / DB, 0o444)


def _readonly_folder(d: Path) -> None:
    _readonly(d)
    if not _chattr("+i", d):
        os.chmod(d, 0o555)


def _writable(d: Path) -> None:
    _chattr("-i", d)
    _chattr("-i", d / DB)
    os.chmod(d, 0o755)
    os.chmod(d / DB, 0o644)


def _wal_present(d: Path) -> None:
    _existing(d)
    (d / (DB + "-wal")).write_bytes(b"")  # an empty -wal beside the database


def input_cases(quick: bool = False) -> list[Case]:
    """Issue 15's defects 1-9 as commands, and more of the same kinds."""
    c: list[Case] = []

    def add(name, group, args, **kw):
        c.append(Case(name=name, group=group, args=args, **kw))

    # defect 1 and 7: exports onto the database, its side files, existing files, folders
    ex = "export"
    for force in ([], ["--force"]):
        f = " --force" if force else ""
        add(f"sets export --out db{f}", ex, ["sets", "export", "s1", "--out", DB, *force])
        add(f"sets export --out abs db{f}", ex,
            ["sets", "export", "s1", "--out", "{dir}/" + DB, *force])  # fmt: skip
        add(
            f"sets export --out db-wal{f}",
            ex,
            ["sets", "export", "s1", "--out", DB + "-wal", *force],
            setup=_wal_present,
        )
        add(f"sets export --png db{f}", ex,
            ["sets", "export", "s1", "--out", "x.pt", "--png", DB, *force])  # fmt: skip
        add(
            f"db export scores --out db{f}",
            ex,
            ["db", "export", "--what", "scores", "--format", "csv", "--out", DB, *force],
        )
        add(f"db export annotations --out db-wal{f}", ex,
            ["db", "export", "--what", "annotations", "--format", "csv", "--out", DB + "-wal",
             *force], setup=_wal_present)  # fmt: skip
        add(f"db export --out ./sub/../db{f}", ex,
            ["db", "export", "--what", "scores", "--format", "json", "--out", "folder/../" + DB,
             *force], setup=_existing)  # fmt: skip
    add(
        "sets export --out existing.pt",
        ex,
        ["sets", "export", "s1", "--out", "existing.pt"],
        setup=_existing,
    )
    add(
        "sets export --out new.pt --png existing.png",
        ex,
        ["sets", "export", "s1", "--out", "new.pt", "--png", "existing.png"],
        setup=_existing,
    )
    add("sets export --out x.png (grid over itself)", ex,
        ["sets", "export", "s1", "--out", "x.png"])  # fmt: skip
    add(
        "sets export --out folder", ex, ["sets", "export", "s1", "--out", "folder"], setup=_existing
    )
    add(
        "sets export --out folder --force",
        ex,
        ["sets", "export", "s1", "--out", "folder", "--force"],
        setup=_existing,
    )
    add("sets export --out missing/x.pt", ex, ["sets", "export", "s1", "--out", "missing/x.pt"])
    add("sets export unknown set", ex, ["sets", "export", "nosuch", "--out", "n.pt"])
    add("db export --out existing.csv", ex,
        ["db", "export", "--what", "scores", "--format", "csv", "--out", "existing.csv"],
        setup=_existing)  # fmt: skip
    add(
        "db export --out folder",
        ex,
        ["db", "export", "--what", "scores", "--out", "folder"],
        setup=_existing,
    )
    add("db export --out folder --format csv", ex,
        ["db", "export", "--what", "scores", "--format", "csv", "--out", "folder"],
        setup=_existing)  # fmt: skip
    add("db export --what bogus", ex, ["db", "export", "--what", "bogus", "--out", "b.csv"])
    add(
        "db export --format bogus",
        ex,
        ["db", "export", "--what", "scores", "--format", "bogus", "--out", "b.csv"],
    )
    add(
        "db export --out missing/x.csv",
        ex,
        ["db", "export", "--what", "scores", "--format", "csv", "--out", "missing/x.csv"],
    )
    add("db export --out existing.csv --force", ex,
        ["db", "export", "--what", "scores", "--format", "csv", "--out", "existing.csv",
         "--force"], setup=_existing,
        accept="--force asks to replace the file")  # fmt: skip

    # defect 4: bad `sets import` files
    im = "sets import file"
    for kind in ["empty.pt", "text.pt", "truncated.pt", "truncated.npz", "zero.npz",
                 "string-labels.npz", "labels-n-by-2.npz", "complex.npz", "nan-images.npz",
                 "labels-out-of-range.npz", "negative-labels.npz", "length-mismatch.npz",
                 "no-images.npz", "zero-images.npz", "wrong-shape.npz", "npy-as.npz",
                 "object.npz", "object-pickle.npz", "overflow.pt", "float-labels.pt",
                 "plain-pickle.pt", "dict-pickle.pt", "object-pickle.pt", "escape.pt",
                 "images_best.pt", "nan-lr/images_best.pt", "a-folder.pt",
                 "missing.pt"]:  # fmt: skip
        add(
            f"sets import {kind}",
            im,
            ["sets", "import", kind, "--method", "dm", "--name", "new"],
            setup=_bad_file(kind),
        )
    # defect 4 and 9: odd options of `sets import`
    io_ = "sets import option"
    for args, name in [(["--method", ""], 'method ""'), (["--method", "   "], 'method "   "'),
                       (["--method", "d\nm"], "method with newline"),
                       (["--method", "dm", "--name", ""], 'name ""'),
                       (["--method", "dm", "--name", " "], 'name " "'),
                       (["--method", "dm", "--name", "s1"], "name of a stored set"),
                       (["--method", "dm", "--format", "bogus"], "format bogus"),
                       (["--method", "dm", "--dataset", "bogus"], "dataset bogus"),
                       (["--method", "dm", "--labels", "missing.pt"], "labels missing"),
                       (["--method", "dm", "--lr", "missing.pt"], "lr missing"),
                       (["--method", "x" * 5000], "method 5000 chars")]:  # fmt: skip
        add(f"sets import {name}", io_, ["sets", "import", "good.npz", *args], setup=_good_npz)

    # defects 5, 6 and 9: depths, list items, kinds, empty names, long questions
    op = "other option"
    for command in ["distill", "influence", "curvature", "landscape", "distill experts"]:
        for depth in ["6", "99"]:
            add(f"{command} --depth {depth}", op, _with(BASES[command], "--depth", depth))
    for value in ["5,,6", ",", "", "0,4294967296", "a,b", "1,1", "-1", "0,nan"]:
        add(f"influence --seeds {value!r}", op, _with(BASES["influence"], "--seeds", value))
    for value in ["0,,1", "-1", "nan", "abc", "99999"]:
        add(f"curvature --density-at {value!r}", op,
            _with(BASES["curvature"], "--density-at", value))  # fmt: skip
    for p in ["lr_img=nan", "lr_img=inf", "lr_img=-1", "momentum_img=nan", "lr_img=abc",
              "bogus_key=1", "noequals", "batch_real=0", "iterations=-5"]:  # fmt: skip
        add(f"distill --param {p}", op, [*BASES["distill"], "--param", p])
    for command, option in [("rank", "--method"), ("influence", "--method"),
                            ("distill", "--method"), ("curvature", "--method"),
                            ("evaluate", "--method"), ("landscape", "--method")]:  # fmt: skip
        base = [a for a in BASES[command] if a not in ("--set", "s1")]
        add(f"{command} --method ''", op, _with(base, option, ""))
        add(f"{command} --method bogus", op, _with(base, option, "bogus"))
    add("attributes list --kind bogus", op, ["attributes", "list", "--kind", "bogus"])
    add("attributes add --kind bogus", op, ["attributes", "add", "yellowish", "--kind", "bogus"])
    add("attributes add ''", op, ["attributes", "add", ""])
    add("attributes merge x x", op, ["attributes", "merge", "blue", "blue"])
    add("attributes merge unknown", op, ["attributes", "merge", "blue", "nosuch"])
    add("attributes remove unknown", op, ["attributes", "remove", "nosuch"])
    add("query 100k chars", op, ["query", "x" * 100_000, "--set", "s1"])
    add("query 15k unknown words", op,
        ["query", " ".join(f"qz{i}" for i in range(15_000)), "--set", "s1"])  # fmt: skip
    add("query ''", op, ["query", "", "--set", "s1"])
    add(
        "query control chars",
        op,
        ["query", "blue\x1b[31m\x07", "--set", "s1"],
        accept="control characters are dropped; the answer names the ignored word '31m'",
    )
    add("query --set unknown", op, ["query", "blue", "--set", "nosuch"])
    add("rank --set unknown", op, ["rank", "--set", "nosuch"])
    add("sets show unknown", op, ["sets", "show", "nosuch"])
    add("sets delete unknown", op, ["sets", "delete", "nosuch"])
    add("influence show --set unknown", op, ["influence", "show", "--set", "nosuch"])
    add("influence show --image 99999", op, _with(BASES["influence show"], "--image", "99999"))
    add("influence show --context bogus", op,
        [*BASES["influence show"], "--context", "bogus"])  # fmt: skip
    add("influence --context bogus", op, [*BASES["influence"], "--context", "bogus"])
    add("influence check --out existing.pt", op,
        ["influence", "check", "--set", "s1", "--out", "existing.pt", "--data", "{data}"],
        setup=_existing)  # fmt: skip
    add("evaluate --arch bogus", op, _with(BASES["evaluate"], "--arch", "bogus"))
    add("evaluate --protocol bogus", op, _with(BASES["evaluate"], "--protocol", "bogus"))
    add("evaluate --arch ''", op, _with(BASES["evaluate"], "--arch", ""))
    add("distill --init bogus", op, [*BASES["distill"], "--init", "bogus"])
    add("distill --dataset bogus", op, [*BASES["distill"], "--dataset", "bogus"])
    add("distill --name s1 (exists)", op, _with(BASES["distill"], "--name", "s1"))
    add("distill --resume (no run)", op, [*BASES["distill"], "--resume"])
    add("distill --name ''", op, _with(BASES["distill"], "--name", ""))
    add("distill --method tm (no experts)", op, _with(BASES["distill"], "--method", "tm"))
    add("annotate --annotator bogus", op, _with(BASES["annotate"], "--annotator", "bogus"))
    add("annotate --split bogus", op, [*BASES["annotate"], "--split", "bogus"])
    add("annotate --classes bogus", op, [*BASES["annotate"], "--classes", "bogus"])
    add("annotate --dataset bogus", op, [*BASES["annotate"], "--dataset", "bogus"])
    add(
        "annotate llava --model missing",
        op,
        [*_with(BASES["annotate"], "--annotator", "llava"), "--model", "/nonexistent/model"],
    )
    add("--data missing", op, _with(BASES["influence"], "--data", "/nonexistent/data"))
    add("--data a file", op, _with(BASES["influence"], "--data", "{dir}/" + DB))
    add("data info --dataset cifar100 on cifar10", op,
        ["data", "info", "--dataset", "cifar100", "--data", "{data}"])  # fmt: skip
    add("data info --dataset bogus", op, ["data", "info", "--dataset", "bogus", "--data", "{data}"])
    add("--device bogus", op, [*BASES["rank"], "--device", "bogus"])
    add("--device cuda:99", op, [*BASES["influence"][:-2], "--seeds", "3", "--device", "cuda:99",
                                  "--data", "{data}"])  # fmt: skip
    add(
        "report --out existing file",
        op,
        _with(BASES["report"], "--out", "existing.pt"),
        setup=_existing,
    )

    # defect 8: databases that are not (this) ddsem's, URLs, read-only files
    d = "database"
    add("--db foo://bar", d, ["sets", "list"], db="foo://bar")
    add("--db postgresql (no driver / no server)", d, ["sets", "list"],
        db="postgresql://nobody@127.0.0.1:1/x")  # fmt: skip
    add("--db mysql://", d, ["sets", "list"], db="mysql://nobody@127.0.0.1:1/x")
    add("--db sqlite:////nonexistent/dir/x.db", d, ["attributes", "add", "yellow"],
        db="sqlite:////nonexistent/dir/x.db")  # fmt: skip
    add("--db a folder", d, ["sets", "list"], db="{dir}/folder", setup=_existing)
    add("--db missing file (reading)", d, ["sets", "list"], db="{dir}/none.db")
    for cmd in (["sets", "list"], ["db", "info"], ["attributes", "list"],
                ["attributes", "add", "yellow"]):  # fmt: skip
        add(f"foreign sqlite: {' '.join(cmd)}", d, cmd, db="{dir}/notes.db", setup=_foreign)
    add("not sqlite: sets list", d, ["sets", "list"], db="{dir}/junk.db", setup=_not_sqlite)
    add(
        "not sqlite: attributes add",
        d,
        ["attributes", "add", "x"],
        db="{dir}/junk.db",
        setup=_not_sqlite,
    )
    missing_col = _alter(["ALTER TABLE dataset DROP COLUMN source"])
    for cmd in (["sets", "list"], ["db", "info"], ["attributes", "add", "yellow"]):
        add(f"missing column: {' '.join(cmd)}", d, cmd, setup=missing_col)
    v0 = _alter(["DELETE FROM meta"])
    add("version-0 (no version row): sets list", d, ["sets", "list"], setup=v0)
    add("version-0 (no meta table): sets list", d, ["sets", "list"],
        setup=_alter(["DROP TABLE meta"]))  # fmt: skip
    add(
        "junk version: sets list",
        d,
        ["sets", "list"],
        setup=_alter(["UPDATE meta SET value = 'two' WHERE key = 'schema_version'"]),
    )
    add(
        "newer version: sets list",
        d,
        ["sets", "list"],
        setup=_alter(["UPDATE meta SET value = '999' WHERE key = 'schema_version'"]),
    )
    add(
        "newer version: attributes add",
        d,
        ["attributes", "add", "yellow"],
        setup=_alter(["UPDATE meta SET value = '999' WHERE key = 'schema_version'"]),
    )
    add(
        "read-only db: sets list",
        d,
        ["sets", "list"],
        setup=_readonly,
        cleanup=_writable,
        accept="a reading command on a read-only database",
    )
    add(
        "read-only db: db info",
        d,
        ["db", "info", "--json"],
        setup=_readonly,
        cleanup=_writable,
        accept="a reading command on a read-only database",
    )
    add(
        "read-only db: influence show",
        d,
        BASES["influence show"],
        setup=_readonly,
        cleanup=_writable,
        accept="a reading command on a read-only database",
    )
    add(
        "read-only db: attributes add",
        d,
        ["attributes", "add", "yellow"],
        setup=_readonly,
        cleanup=_writable,
    )
    add(
        "read-only db: annotate",
        d,
        _with(BASES["annotate"], "--limit", "60"),
        setup=_readonly,
        cleanup=_writable,
    )
    add(
        "read-only db: influence (new seed)",
        d,
        [*BASES["influence"], "--seeds", "4"],
        setup=_readonly,
        cleanup=_writable,
    )
    add(
        "read-only folder: sets list",
        d,
        ["sets", "list"],
        setup=_readonly_folder,
        cleanup=_writable,
        accept="a reading command on a read-only database",
    )
    add(
        "read-only folder: attributes add",
        d,
        ["attributes", "add", "yellow"],
        setup=_readonly_folder,
        cleanup=_writable,
    )
    if quick:
        keep = {"sets export --out db", "db export scores --out db", "sets export --out folder",
                "sets import empty.pt", "sets import truncated.npz", "sets import zero.npz",
                "sets import plain-pickle.pt", 'sets import method ""', "distill --depth 99",
                "influence --seeds '5,,6'", "attributes list --kind bogus", "query 100k chars",
                "--db foo://bar", "--db postgresql (no driver / no server)",
                "foreign sqlite: sets list", "missing column: sets list",
                "version-0 (no version row): sets list", "read-only db: attributes add"}  # fmt: skip
        c = [x for x in c if x.name in keep]
    return c


def catalogue(quick: bool = False) -> list[Case]:
    cases = input_cases(quick) + numeric_cases(quick)
    names = [x.name for x in cases]
    dupes = {n for n in names if names.count(n) > 1}
    assert not dupes, dupes
    return cases


# -- the world: a tiny database, built once ----------------------------------------------------------


@dataclass
class World:
    root: Path
    data: Path
    db: Path  # the prepared database (one file, checkpointed)
    env: dict[str, str]
    dump: dict[str, list[str]] = field(default_factory=dict)


def limit_memory() -> None:
    """In the child: cap its address space, so that a huge allocation fails in the command
    instead of waking the kernel's OOM killer for every process on the machine."""
    import resource
    import signal

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    # a probe started in the background (`... &`, nohup) inherits SIGINT ignored, and Python
    # then never raises KeyboardInterrupt: give every command Ctrl-C back, as a terminal would
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen(command: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(command, preexec_fn=limit_memory, **kw)


def ddsem(world: World, db: str, args: list[str], cwd: Path, timeout: float = 300):
    """Run ``python -m ddsem --db DB --device cpu ARGS``; (code, stdout, stderr, seconds)."""
    command = [sys.executable, "-m", "ddsem", "--db", db, "--device", "cpu", *args]
    start = time.monotonic()
    try:
        p = subprocess.run(command, cwd=cwd, env=world.env, capture_output=True, timeout=timeout,
                           preexec_fn=limit_memory)  # fmt: skip
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace")
        err = (e.stderr or b"").decode(errors="replace")
        return None, out, err, time.monotonic() - start
    out = p.stdout.decode(errors="replace")
    return p.returncode, out, p.stderr.decode(errors="replace"), time.monotonic() - start


def checkpoint(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def build_world(root: Path) -> World:
    from ddsem.data.synthetic import synthetic_data, write_image_folder

    env = {**os.environ, "OMP_NUM_THREADS": "1", "DDSEM_CACHE": str(root / "cache")}
    env.pop("DDSEM_DB", None)
    env.pop("DDSEM_DATA", None)
    data = write_image_folder(
        synthetic_data(train_per_class=20, test_per_class=10, seed=0), root / "data"
    )
    build = root / "build"
    build.mkdir()
    world = World(root=root, data=data, db=build / DB, env=env)
    steps = [
        ["distill", "--method", "dm", "--ipc", "1", "--iterations", "20", "--width", "8",
         "--batch-real", "4", "--name", "s1", "--data", str(data)],
        ["influence", "--set", "s1", "--width", "8", "--steps", "20", "--test-limit", "40",
         "--data", str(data)],
        ["annotate", "--annotator", "color", "--limit", "40", "--data", str(data)],
        ["attributes", "extract", "--min-df", "1"],
        ["rank", "--set", "s1", "--draws", "100"],
    ]  # fmt: skip
    for args in steps:
        code, out, err, _ = ddsem(world, str(world.db), args, build)
        if code != 0:
            raise SystemExit(f"building the database failed: ddsem {' '.join(args)}\n{err}")
    checkpoint(world.db)
    for s in SIDE:
        with contextlib.suppress(FileNotFoundError):
            os.remove(str(world.db) + s)
    world.dump = dump(world.db)
    return world


def tiny_world(root: Path) -> World:
    """A smaller world built in-process in a second (for the test that keeps this script from
    rotting): set s1 only, from a few synthetic images; no influence run, no annotations."""
    from ddsem.data import normalize
    from ddsem.data.synthetic import synthetic_data, write_image_folder
    from ddsem.db import open_db
    from ddsem.db.sets import add_distilled_set

    env = {**os.environ, "OMP_NUM_THREADS": "1", "DDSEM_CACHE": str(root / "cache")}
    env.pop("DDSEM_DB", None)
    env.pop("DDSEM_DATA", None)
    images = synthetic_data(train_per_class=2, test_per_class=1, seed=0)
    data = write_image_folder(images, root / "data")
    (root / "build").mkdir()
    world = World(root=root, data=data, db=root / "build" / DB, env=env)
    db = open_db(str(world.db))
    idx = np.arange(10) * 2
    add_distilled_set(db, "s1", "dm", normalize(images.train_x[idx]).numpy(),
                      images.train_y[idx])  # fmt: skip
    db.close()
    checkpoint(world.db)
    for s in SIDE:
        with contextlib.suppress(FileNotFoundError):
            os.remove(str(world.db) + s)
    world.dump = dump(world.db)
    return world


# -- checking a case -------------------------------------------------------------------------------


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dump(path: Path) -> dict[str, list[str]]:
    """Every row of every table, read from a scratch copy (db and -wal), so that reading never
    creates side files beside the original."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "d.db"
        shutil.copyfile(path, copy)
        if os.path.exists(str(path) + "-wal"):
            shutil.copyfile(str(path) + "-wal", str(copy) + "-wal")
        try:
            con = sqlite3.connect(copy)
            try:
                names = [r[0] for r in con.execute("SELECT name FROM sqlite_master")]
                tables = [r[0] for r in con.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'")]  # fmt: skip
                rows = {t: sorted(map(repr, con.execute(f'SELECT * FROM "{t}"'))) for t in tables}
                rows["<schema>"] = sorted(names)
                return rows
            finally:
                con.close()
        except sqlite3.Error as e:
            return {"<unreadable>": [str(e)]}


def running(rows: dict[str, list[str]]) -> int:
    return sum(r.count("'running'") for t, rs in rows.items() if not t.startswith("<") for r in rs)


def files(folder: Path, skip: set[str]) -> dict[str, tuple[str, int]]:
    found = {}
    for p in folder.rglob("*"):
        rel = str(p.relative_to(folder))
        if rel in skip or not p.is_file():
            continue
        found[rel] = (sha(p), p.stat().st_mtime_ns)
    return found


@dataclass
class Outcome:
    name: str
    group: str
    command: str
    code: int | None
    last: str
    verdict: str  # handled, accepted, not handled
    problems: list[str]
    seconds: float
    traceback: bool = False
    notes: list[str] = field(default_factory=list)


def _shown(args: list[str]) -> str:
    shown = []
    for a in args:
        a = a if len(a) <= 60 else f"{a[:40]}...<{len(a)} chars>"
        shown.append(a if a and a.isprintable() and " " not in a else repr(a))
    return " ".join(shown)


def run_case(world: World, case: Case, folder: Path) -> Outcome:
    folder.mkdir(parents=True)
    shutil.copyfile(world.db, folder / DB)
    if case.setup is not None:
        case.setup(folder)
    fill = {"{data}": str(world.data), "{dir}": str(folder)}

    def filled(a: str) -> str:
        for k, v in fill.items():
            a = a.replace(k, v)
        return a

    args = [filled(a) for a in case.args]
    db_arg = filled(case.db) if case.db != DB else str(folder / DB)
    watched_db = folder / DB
    if db_arg.startswith(str(folder)) and os.path.isfile(db_arg):
        watched_db = Path(db_arg)
    db_side = {watched_db.name + s for s in ("", *SIDE)} | {DB + s for s in ("", *SIDE)}
    before_files = files(folder, db_side)
    before_sha = sha(watched_db) if watched_db.exists() else None
    before_rows = world.dump if case.setup is None and watched_db.name == DB else None
    if before_rows is None and watched_db.exists():
        before_rows = dump(watched_db)
    try:
        code, out, err, seconds = ddsem(world, db_arg, args, folder, timeout=case.timeout)
    finally:
        if case.cleanup is not None:
            case.cleanup(folder)
    lines = [x for x in err.splitlines() if x.strip()]
    last = lines[-1] if lines else ""
    command = f"ddsem --db {case.db} --device cpu {_shown(case.args)}"
    problems: list[str] = []
    notes: list[str] = []
    tb = "Traceback" in err
    if code is None:
        problems.append(f"timed out after {case.timeout:.0f} s")
    accepted = case.accept is not None and code == 0 and not tb
    if not accepted:
        if code != 2:
            problems.append(f"exit {code}")
        if not last.startswith("error:"):
            problems.append("last stderr line is not 'error: ...'")
        if tb:
            problems.append("traceback")
        if len(lines) > 3:
            problems.append(f"{len(lines)} stderr lines")
        if before_sha is not None and watched_db.exists() and sha(watched_db) != before_sha:
            if dump(watched_db) != before_rows:
                problems.append("database rows changed")
            else:
                notes.append("database bytes changed, rows equal")
        wal = Path(str(watched_db) + "-wal")
        if wal.exists() and wal.stat().st_size and dump(watched_db) != before_rows:
            problems.append("the -wal changes rows")
        if before_sha is not None and not watched_db.exists():
            problems.append("database removed")
        after_files = files(folder, db_side)
        changed = [f for f in before_files if after_files.get(f) != before_files[f]]
        created = [f for f in after_files if f not in before_files]
        if changed:
            problems.append(f"changed or removed {changed[:3]}")
        if created:
            problems.append(f"created {created[:3]}")
        if (folder / "pwned").exists():
            problems.append("a pickle ran code")
    if watched_db.exists() and before_rows is not None:
        after = dump(watched_db)
        if running(after) > running(before_rows):
            problems.append("left a 'running' row")
    if problems:
        verdict = "not handled"
    elif accepted:
        verdict = "accepted"
    else:
        verdict = "handled"
    return Outcome(case.name, case.group, command, code, last[:300], verdict, problems, seconds,
                   tb, notes)  # fmt: skip


STREAM: list[Path | None] = [None]


def run_catalogue(world: World, cases: list[Case], log) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(cases)
    done = [0]
    lock = threading.Lock()
    start = time.monotonic()

    def one(i: int) -> None:
        o = run_case(world, cases[i], world.root / "cases" / f"{i:04d}")
        outcomes[i] = o
        with lock:
            if STREAM[0] is not None:  # every outcome as it comes, for a run cut short
                with STREAM[0].open("a") as f:
                    f.write(json.dumps(o.__dict__, default=str) + "\n")
            done[0] += 1
            if o.verdict == "not handled":
                log(f"  NOT HANDLED {o.name}: exit {o.code}, {'; '.join(o.problems)}: {o.last}")
            if done[0] % 50 == 0 or done[0] == len(cases):
                log(f"  {done[0]}/{len(cases)} cases, {time.monotonic() - start:.0f} s")
        shutil.rmtree(world.root / "cases" / f"{i:04d}", ignore_errors=True)

    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(one, range(len(cases))))
    return [o for o in outcomes if o is not None]


# -- kills -----------------------------------------------------------------------------------------


@dataclass
class KillJob:
    name: str
    args: list[str]
    progress: str | None  # SQL counting progress; None: kill after a random delay
    result: str  # SQL whose rows must equal an uninterrupted run's
    moments: list[tuple[int | float, int]]  # (progress count or delay in s, signal)
    resume: list[str] = field(default_factory=list)  # added to the re-run


def kill_jobs(world: World, quick: bool) -> list[KillJob]:
    data = str(world.data)
    k, i, t = signal.SIGKILL, signal.SIGINT, signal.SIGTERM
    models = ("SELECT count(*) FROM influencemodel m JOIN influencerun r ON r.id = m.run_id "
              "WHERE r.seed = 1")  # fmt: skip
    jobs = [
        KillJob(
            "influence",
            ["influence", "--set", "s1", "--seeds", "1", "--width", "8", "--steps", "150",
             "--test-limit", "40", "--chunk", "1", "--data", data],
            models,
            "SELECT r.seed, r.status, m.model_index, m.losses, m.accuracy FROM influencemodel m "
            "JOIN influencerun r ON r.id = m.run_id ORDER BY 1, 3",
            [(1, k), (5, k), (9, k), (3, i), (6, t)],
        ),
        KillJob(
            "annotate",
            ["annotate", "--annotator", "color", "--split", "train", "--batch-size", "1",
             "--data", data],
            "SELECT count(*) FROM annotation",
            'SELECT i.split, i."index", a.prompt_name, a.response FROM annotation a '
            "JOIN image i ON i.id = a.image_id ORDER BY 1, 2, 3",
            [(100, k), (300, k), (200, i)],
        ),
        KillJob(
            "distill",
            ["distill", "--method", "dm", "--ipc", "1", "--iterations", "60", "--width", "8",
             "--batch-real", "4", "--checkpoint-every", "5", "--name", "k", "--data", data],
            "SELECT max(iteration) FROM distillrun WHERE checkpoint IS NOT NULL",
            'SELECT d."index", d.label, d.tensor FROM distilledimage d JOIN distilledset s '
            "ON s.id = d.set_id WHERE s.name = 'k' ORDER BY 1",
            [(10, k), (40, k), (25, t)],
            resume=["--resume"],
        ),
        KillJob(
            "curvature",
            ["curvature", "--set", "s1", "--real", "--real-samples", "60", "--iterations", "8",
             "--every", "1", "--probes", "6", "--width", "8", "--train-samples", "100",
             "--out", "figs", "--data", data],
            "SELECT count(*) FROM curvaturepoint",
            "SELECT source, iteration, trace, trace_stderr, probes, top_eigenvalue, density "
            "FROM curvaturepoint ORDER BY 1, 2",
            [(3, k), (10, i)],
        ),
        KillJob(
            "evaluate",
            ["evaluate", "--set", "s1", "--arch", "convnet", "--protocol", "paper,dc",
             "--runs", "2", "--width", "8", "--json", "--data", data],
            "SELECT count(*) FROM analysisrun WHERE kind = 'evaluate'",
            "SELECT params_json, result_json FROM analysisrun WHERE kind = 'evaluate' ORDER BY 1",
            [(1, k)],
        ),
        KillJob(
            "landscape",
            ["landscape", "--set", "s1", "--grid", "5", "--width", "8", "--train-samples",
             "100", "--test-samples", "50", "--distilled-steps", "50", "--data", data,
             "--out", "figs", "--json"],
            None,
            "SELECT params_json, result_json, data FROM analysisrun WHERE kind = 'landscape' "
            "ORDER BY 1",
            [(2.5, k)],
        ),
    ]  # fmt: skip
    if quick:
        jobs = [j for j in jobs if j.name in ("influence", "annotate", "distill")]
        for j in jobs:
            j.moments = j.moments[:1]
    return jobs


def _count(db: Path, sql: str) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute(sql).fetchone()[0] or 0)
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _fresh(world: World, folder: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copyfile(world.db, folder / DB)
    return folder / DB


def run_kills(world: World, quick: bool, log) -> dict:
    jobs = kill_jobs(world, quick)
    base = world.root / "kills"
    tasks: list[tuple[str, KillJob, int, tuple | None]] = []
    for job in jobs:
        tasks.append(("clean", job, 0, None))
        for n, moment in enumerate(job.moments):
            tasks.append(("kill", job, n, moment))
    results: dict[tuple[str, int], dict] = {}
    lock = threading.Lock()

    def task(kind: str, job: KillJob, n: int, moment) -> None:
        folder = base / f"{job.name}-{kind}-{n}"
        db = _fresh(world, folder)
        cmd = [sys.executable, "-m", "ddsem", "--db", str(db), "--device", "cpu", *job.args]
        record: dict = {"job": job.name, "kind": kind}
        if kind == "kill":
            at, sig = moment
            record.update(signal=signal.Signals(sig).name, at=at)
            proc = popen(cmd, cwd=folder, env=world.env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)  # fmt: skip
            start = time.monotonic()
            sent = False
            while proc.poll() is None and time.monotonic() - start < 300:
                if (job.progress is None and time.monotonic() - start >= at) or (
                    job.progress is not None and _count(db, job.progress) >= at
                ):
                    proc.send_signal(sig)
                    sent = True
                    break
                time.sleep(0.02)
            _, err = proc.communicate(timeout=300)
            err = err.decode(errors="replace")
            lines = [x for x in err.splitlines() if x.strip()]
            record.update(killed=sent, code=proc.returncode, last=lines[-1][:200] if lines else "",
                          traceback="Traceback" in err)  # fmt: skip
            if sig != signal.SIGKILL and sent:
                record["clean_exit"] = (
                    proc.returncode in (130, 143, -sig) and "Traceback" not in err
                    and (not lines or lines[-1].startswith(("interrupted", "error:")))
                )  # fmt: skip
            code, _, err2, _ = ddsem(world, str(db), [*job.args, *job.resume], folder)
            if code != 0 and job.resume:  # a run that was killed before its first checkpoint
                code, _, err2, _ = ddsem(world, str(db), job.args, folder)
            record.update(rerun_code=code, rerun_last=(err2.strip().splitlines() or [""])[-1][:200])
        else:
            code, _, err, secs = ddsem(world, str(db), job.args, folder)
            record.update(code=code, seconds=round(secs, 1), last=err.strip()[-200:])
        record["rows"] = _rows(db, job.result) if db.exists() else None
        running_rows = _count(db, "SELECT count(*) FROM distillrun WHERE status = 'running'")
        running_rows += _count(db, "SELECT count(*) FROM influencerun WHERE status = 'running'")
        running_rows += _count(db, "SELECT count(*) FROM analysisrun WHERE status = 'running'")
        record["running_rows"] = running_rows
        record["claims"] = _count(db, "SELECT count(*) FROM jobclaim")
        with lock:
            results[(job.name, -1 if kind == "clean" else n)] = record
            if kind == "kill":
                log(f"  {job.name} {record['signal']} at {moment[0]}: "
                    f"{'sent' if record['killed'] else 'finished first'}, exit "
                    f"{record['code']}, re-run exit {record['rerun_code']}")  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)

    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(lambda a: task(*a), tasks))

    kills = compared = equal = 0
    per_job, failures = {}, []
    for job in jobs:
        clean = results[(job.name, -1)]
        if clean["code"] != 0 or not clean["rows"]:
            failures.append(f"{job.name}: the uninterrupted run failed: {clean['last']}")
        done = eq = 0
        for n, _ in enumerate(job.moments):
            r = results[(job.name, n)]
            if not r["killed"]:
                continue
            kills += 1
            done += 1
            if r["rerun_code"] == 0 and clean["code"] == 0:
                compared += 1
                same = r["rows"] == clean["rows"] and r["running_rows"] == 0
                eq += same
                equal += same
                if not same:
                    failures.append(f"{job.name} {r['signal']} at {r['at']}: result differs "
                                    f"(running rows {r['running_rows']})")  # fmt: skip
            else:
                failures.append(f"{job.name} {r['signal']} at {r['at']}: re-run exit "
                                f"{r['rerun_code']}: {r['rerun_last']}")  # fmt: skip
            if r.get("traceback"):
                failures.append(f"{job.name} {r['signal']}: traceback: {r['last']}")
            if r.get("clean_exit") is False:
                failures.append(f"{job.name} {r['signal']}: exit {r['code']}, last: {r['last']}")
        per_job[job.name] = {"kills": done, "equal": eq, "attempts": len(job.moments)}
    signals = [
        {k: v for k, v in r.items() if k != "rows"} for key, r in sorted(results.items())
        if r["kind"] == "kill"
    ]  # fmt: skip
    return {"kills": kills, "compared": compared, "equal": equal, "per_job": per_job,
            "failures": failures, "attempts": signals}  # fmt: skip


# -- readers under writers -------------------------------------------------------------------------


def run_readers(world: World, quick: bool, log) -> dict:
    folder = world.root / "readers"
    db = _fresh(world, folder)
    data = str(world.data)
    writers = [
        ("influence", ["influence", "--set", "s1", "--seeds", "2", "--width", "8", "--steps",
                       "100" if quick else "400", "--test-limit", "40", "--chunk", "1",
                       "--data", data]),
        ("annotate", ["annotate", "--annotator", "color", "--split", "train", "--batch-size",
                      "1", "--data", data]),
    ]  # fmt: skip
    readers = [
        ["influence", "show", "--set", "s1"],
        ["influence", "show", "--set", "s1", "--image", "1", "--top", "3"],
        ["sets", "list", "--json"],
        ["db", "info"],
        ["query", "blue", "--set", "s1", "--draws", "100"],
        ["attributes", "list"],
    ]
    ran = failed = locked = 0
    failures = []
    writer_codes = {}
    # one writer at a time beside one reader at a time: the 2-process limit of this machine
    for name, args in writers:
        cmd = [sys.executable, "-m", "ddsem", "--db", str(db), "--device", "cpu", *args]
        proc = popen(cmd, cwd=folder, env=world.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)  # fmt: skip
        i = 0
        while proc.poll() is None:
            r = readers[i % len(readers)]
            i += 1
            code, out, err, _ = ddsem(world, str(db), r, folder, timeout=120)
            if proc.poll() is not None and i > 1:
                pass  # the reader may have finished after the writer: it still counts
            ran += 1
            if code != 0 or "locked" in err + out:
                failed += 1
                locked += "database is locked" in err + out
                failures.append(f"{' '.join(r)} (during {name}): exit {code}: "
                                f"{(err.strip().splitlines() or [''])[-1][:200]}")  # fmt: skip
        _, err = proc.communicate()
        writer_codes[name] = proc.returncode
        if proc.returncode != 0:
            failures.append(f"writer {name}: exit {proc.returncode}: {err.decode()[-200:]}")
        log(f"  {name} writing: {i} readers so far {ran}, failed {failed}")
    return {"readers": ran, "failed": failed, "locked": locked, "writers": writer_codes,
            "failures": failures}  # fmt: skip


# -- the same job twice, a set deleted under its job (defects 2, 3 and 6) ---------------------------


def run_contention(world: World, log) -> dict:
    data = str(world.data)
    out = []

    def both(name: str, a: list[str], b: list[str], check) -> None:
        folder = world.root / f"contend-{len(out)}"
        db = _fresh(world, folder)
        procs = []
        for args, delay in ((a, 0.0), (b, 0.0 if a == b else 2.0)):
            time.sleep(delay)
            cmd = [sys.executable, "-m", "ddsem", "--db", str(db), "--device", "cpu", *args]
            procs.append(
                popen(
                    cmd, cwd=folder, env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
            )
        res = []
        for p in procs:
            o, e = p.communicate(timeout=300)
            res.append((p.returncode, e.decode(errors="replace")))
        problems = check(db, res)
        for _, err in res:
            if "Traceback" in err:
                problems.append(f"traceback: {err.strip().splitlines()[-1][:200]}")
        out.append(
            {
                "name": name,
                "codes": [c for c, _ in res],
                "problems": problems,
                "last": [(e.strip().splitlines() or [""])[-1][:200] for _, e in res],
            }
        )
        log(f"  {name}: exits {[c for c, _ in res]}{' ' + '; '.join(problems) if problems else ''}")
        shutil.rmtree(folder, ignore_errors=True)

    inf = ["influence", "--set", "s1", "--seeds", "3", "--width", "8", "--steps", "150",
           "--test-limit", "40", "--chunk", "1", "--data", data]  # fmt: skip

    def one_run(db, res):
        p = [f"exit {c}" for c, _ in res if c != 0]
        n = _count(db, "SELECT count(*) FROM influencemodel m JOIN influencerun r "
                       "ON r.id = m.run_id WHERE r.seed = 3")  # fmt: skip
        if n != 11:
            p.append(f"{n} models stored, not 11")
        if _count(db, "SELECT count(*) FROM influencerun WHERE status = 'running'"):
            p.append("a 'running' run")
        return p

    both("influence twice at once", inf, inf, one_run)
    dm = ["distill", "--method", "dm", "--ipc", "1", "--iterations", "40", "--width", "8",
          "--batch-real", "4", "--name", "s3", "--data", data]  # fmt: skip

    def one_set(db, res):
        codes = sorted(c for c, _ in res)
        p = [] if codes == [0, 2] or codes == [0, 0] else [f"exits {codes}"]
        for c, e in res:
            lines = [x for x in e.splitlines() if x.strip()]
            if c == 2 and (len(lines) > 3 or not lines[-1].startswith("error:")):
                p.append(f"refusal is not one error line: {lines[-1:]}")
        if _count(db, "SELECT count(*) FROM distillrun WHERE status = 'running'"):
            p.append("a 'running' distill row is left")
        return p

    both("distill same --name twice at once", dm, dm, one_set)

    def deleted(db, res):
        (c1, e1), (c2, e2) = res
        p = []
        for c, e in res:
            lines = [x for x in e.splitlines() if x.strip()]
            if c not in (0, 2) or (c == 2 and not lines[-1].startswith("error:")):
                p.append(f"exit {c}: {lines[-1:]}")
        if _count(db, "SELECT count(*) FROM influencerun WHERE status = 'running'"):
            p.append("a 'running' run is left")
        return p

    both("sets delete s1 during influence on it", [*inf[:4], "4", *inf[5:]],
         ["sets", "delete", "s1"], deleted)  # fmt: skip
    return {"cases": out, "clean": sum(not c["problems"] for c in out), "tried": len(out)}


# -- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases, for a smoke run")
    parser.add_argument("--out", help="write the figures as JSON to this file")
    parser.add_argument("--only", default="inputs,kills,readers,contention",
                        help="comma-separated parts to run [default: all]")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--skip", type=int, default=0, help="skip the first N input cases (resume a cut run)"
    )
    parser.add_argument(
        "--no-numeric",
        action="store_true",
        help="skip the generated numeric-option cases (the slowest part)",
    )
    opts = parser.parse_args(argv)
    parts = set(opts.only.split(","))
    start = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {text}", flush=True)

    root = Path(tempfile.mkdtemp(prefix="ddsem-reliability-"))
    figures: dict = {"quick": opts.quick}

    def part_done(name: str) -> None:
        """Print a part's figures as soon as it ends, and save what there is so far."""
        report({name: figures[name]})
        if opts.out:
            so_far = {**figures, "seconds": round(time.monotonic() - start, 1)}
            Path(opts.out).write_text(json.dumps(so_far, indent=2, default=str))

    try:
        log(f"building a tiny database in {root}")
        world = build_world(root)
        log("built: set s1 (DM, 10 images), one influence run, 80 colour answers, attributes")
        if "inputs" in parts:
            cases = catalogue(opts.quick)
            if opts.no_numeric:
                cases = [c for c in cases if c.group != "numeric option"]
            cases = cases[opts.skip :]
            if opts.out:
                STREAM[0] = Path(opts.out).with_suffix(".cases.jsonl")
                if not opts.skip:
                    STREAM[0].write_text("")
            log(f"bad inputs: {len(cases)} cases, {PARALLEL} at a time")
            outcomes = run_catalogue(world, cases, log)
            bad = [o for o in outcomes if o.verdict == "not handled"]
            figures["inputs"] = {
                "tried": len(outcomes),
                "handled": sum(o.verdict == "handled" for o in outcomes),
                "accepted": sum(o.verdict == "accepted" for o in outcomes),
                "not_handled": len(bad),
                "tracebacks": sum(o.traceback for o in bad),
                "by_group": {
                    g: {
                        v: sum(o.group == g and o.verdict == v for o in outcomes)
                        for v in ("handled", "accepted", "not handled")
                    }
                    for g in sorted({o.group for o in outcomes})
                },  # fmt: skip
                "not_handled_cases": [o.__dict__ for o in bad],
                "accepted_cases": [
                    {"name": o.name, "reason": c.accept}
                    for o, c in zip(outcomes, cases, strict=True)
                    if o.verdict == "accepted"
                ],  # fmt: skip
                "bytes_changed_rows_equal": [o.name for o in outcomes if o.notes],
                "commands_without_a_base": UNCOVERED,
            }
            part_done("inputs")
        if "kills" in parts:
            log("kills: SIGKILL / SIGINT / SIGTERM mid-job, re-run, compare with a clean run")
            figures["kills"] = run_kills(world, opts.quick, log)
            part_done("kills")
        if "readers" in parts:
            log("readers under writers")
            figures["readers"] = run_readers(world, opts.quick, log)
            part_done("readers")
        if "contention" in parts and not opts.quick:
            log("the same job twice at once; a set deleted under its job")
            figures["contention"] = run_contention(world, log)
            part_done("contention")
    finally:
        if not opts.keep:
            for p in root.rglob("*"):  # undo any chattr +i a case left behind
                if p.is_dir():
                    _chattr("-i", p)
            shutil.rmtree(root, ignore_errors=True)
    figures["seconds"] = round(time.monotonic() - start, 1)
    print("\n== all parts ==", end="")
    report(figures)
    if opts.out:
        Path(opts.out).write_text(json.dumps(figures, indent=2, default=str))
    return 0


def report(f: dict) -> None:
    print()
    print("== issue 15 figures, re-measured ==")
    if "inputs" in f:
        i = f["inputs"]
        print(f"bad inputs: {i['tried']} tried, {i['handled']} handled cleanly, {i['accepted']} "
              f"accepted (valid input, exit 0), {i['not_handled']} not handled, of which "
              f"{i['tracebacks']} tracebacks")  # fmt: skip
        if i.get("commands_without_a_base"):
            print(
                f"  not covered (numeric options, no base command in BASES yet): "
                f"{', '.join(i['commands_without_a_base'])}"
            )
        for g, v in i["by_group"].items():
            print(f"  {g}: {v['handled']} handled, {v['accepted']} accepted, "
                  f"{v['not handled']} not handled")  # fmt: skip
        for o in i["not_handled_cases"]:
            print(f"  NOT HANDLED [{o['name']}] exit {o['code']}: {'; '.join(o['problems'])}")
            print(f"      $ {o['command']}")
            print(f"      last stderr line: {o['last']}")
    if "kills" in f:
        k = f["kills"]
        print(f"kills: {k['kills']} done, {k['compared']} results compared, {k['equal']} equal "
              f"to an uninterrupted run")  # fmt: skip
        for name, v in k["per_job"].items():
            print(f"  {name}: {v['kills']} of {v['attempts']} signals landed mid-run, "
                  f"{v['equal']} equal")  # fmt: skip
        for a in k["attempts"]:
            if a["signal"] != "SIGKILL" and a["killed"]:
                print(f"  {a['job']} {a['signal']}: exit {a['code']}, last line: {a['last']}")
        for x in k["failures"]:
            print(f"  FAILED {x}")
    if "readers" in f:
        r = f["readers"]
        print(f"readers under writers: {r['readers']} ran, {r['failed']} failed, {r['locked']} "
              f"said 'database is locked' (writers' exits {r['writers']})")  # fmt: skip
        for x in r["failures"]:
            print(f"  FAILED {x}")
    if "contention" in f:
        c = f["contention"]
        print(f"same job twice / delete under a job: {c['clean']} of {c['tried']} clean")
        for x in c["cases"]:
            print(
                f"  {x['name']}: exits {x['codes']}, last lines {x['last']}"
                f"{'; PROBLEMS: ' + '; '.join(x['problems']) if x['problems'] else ''}"
            )
    if "seconds" in f:
        print(f"took {f['seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
