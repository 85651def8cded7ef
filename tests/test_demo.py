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


def test_demo_on_synthetic_data_and_its_next_steps_run_as_printed(
    tmp_path, synthetic_path, capsys, monkeypatch
):
    """The same demo on the procedural stand-in: every step runs, questions that the colours
    cannot answer say so and the demo goes on, and each printed next step runs as printed."""
    import shlex

    from ddsem.cli import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DDSEM_DATA", raising=False)
    db = str(tmp_path / "demo.db")
    assert run(["--db", db, "demo", "--small", "--data", str(synthetic_path)]) == 0
    out = capsys.readouterr().out
    for step in range(1, 8):
        assert f"[{step}/7]" in out
    assert f"--data {synthetic_path}" in out  # the printed commands name the data
    assert (tmp_path / "ddsem-demo" / "table1.md").is_file()
    next_steps = out.split("next:\n", 1)[1].splitlines()
    commands = [line.split("  #")[0].strip() for line in next_steps if line.strip()]
    assert any(" influence check " in c for c in commands)
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "ddsem"
        if "tui" in argv:
            continue
        code = run(argv[1:])
        captured = capsys.readouterr()
        assert code in (0, 2), command
        if code == 2:  # "red trucks" may have no positive in the stand-in's colours
            assert "query" in argv and captured.err.startswith("error: no"), captured.err


def test_demo_job_steps_on_an_in_memory_data_set(workspace, synthetic, tmp_path):
    from ddsem.jobs import demo

    request = demo.DemoRequest(data=synthetic, out=str(tmp_path / "figs"), small=True)
    steps = demo.plan(workspace, request)
    assert [s.number for s in steps] == [1, 2, 3, 4, 5, 6, 6, 6, 7]
    assert all("--data" not in s.command for s in steps)  # an ImageData has no path to print
    seen, results = [], {}
    summary = demo.run(
        workspace,
        request,
        on_step=seen.append,
        on_result=lambda s, r: results.setdefault(s.kind, r),
    )
    assert [s.kind for s in seen][:5] == ["distill", "influence", "annotate", "attributes", "rank"]
    assert results["distill"].finished and results["influence"].as_json()[0]["num_models"] == 21
    assert summary.figures and (tmp_path / "figs" / "table1.md").is_file()
    again = demo.plan(workspace, request)
    assert again[0].reused and not again[1].reused
    assert demo.run_step(workspace, again[1]).as_json()[0]["skipped"] is True
