"""The layout promises that a test can check: light faces, global options anywhere."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ddsem.cli import hoist_global_options, run

HEAVY = ("torch", "transformers", "faiss", "textual")


def _loaded_after(statement: str) -> set[str]:
    code = (
        f"import sys; {statement}; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_cli_starts_without_torch_transformers_faiss_or_textual():
    assert not _loaded_after("import ddsem.cli") & set(HEAVY)


def test_the_tui_starts_without_torch_transformers_or_faiss():
    assert not _loaded_after("import ddsem.tui") & {"torch", "transformers", "faiss"}


def test_job_modules_import_without_torch():
    """Requests are built and validated before any heavy import (``--help``, bad input)."""
    import pkgutil

    import ddsem.jobs

    names = [f"ddsem.jobs.{m.name}" for m in pkgutil.iter_modules(ddsem.jobs.__path__)]
    assert len(names) >= 5
    loaded = _loaded_after("; ".join(f"import {n}" for n in names))
    assert not loaded & set(HEAVY)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sets", "list", "--db", "x.db"], ["--db", "x.db", "sets", "list"]),
        (
            ["distill", "--device=cpu", "--method", "dm"],
            ["--device=cpu", "distill", "--method", "dm"],
        ),
        (["rank", "--seed", "1", "-q"], ["--seed", "1", "-q", "rank"]),
        (["influence", "--seeds", "0,1"], ["influence", "--seeds", "0,1"]),  # not --seed
        (["query", "--", "--seed"], ["query", "--", "--seed"]),  # after -- nothing moves
        (["--db", "a.db", "tui"], ["--db", "a.db", "tui"]),
    ],
)
def test_global_options_are_moved_to_the_front(argv, expected):
    assert hoist_global_options(argv) == expected


def test_global_options_work_after_every_kind_of_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DDSEM_DB", raising=False)
    db = str(tmp_path / "after.db")
    assert run(["attributes", "add", "yellow", "--db", db]) == 0  # a writing command creates it
    for argv in (
        ["sets", "list", "--json", "--db", db],
        ["db", "info", "--json", "--db", db, "--quiet"],
        ["attributes", "list", "--json", "--seed", "3", "--db", db, "--device", "cpu"],
    ):
        capsys.readouterr()
        assert run(argv) == 0, argv
        out = capsys.readouterr().out
        json.loads(out)
    assert (tmp_path / "after.db").is_file()
    assert not (tmp_path / "ddsem.db").exists()  # --db after the command was honoured


def test_a_bad_global_value_after_the_command_is_one_line_and_exit_2(tmp_path, capsys):
    code = run(["sets", "list", "--db", str(tmp_path / "d.db"), "--seed", "x"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1
