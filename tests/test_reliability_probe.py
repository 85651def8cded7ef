"""benchmarks/reliability.py (issue 15's probe) cannot rot: its catalogue still covers issue 15's
cases and every numeric option the CLI has, and a handful of its cases still run end to end and
are handled cleanly."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reliability.py"


def _probe():
    spec = importlib.util.spec_from_file_location("ddsem_reliability_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_the_catalogue_covers_issue_15_and_a_few_cases_are_handled(tmp_path):
    probe = _probe()
    cases = probe.catalogue()
    names = {c.name for c in cases}
    for needed in [
        "sets export --out db",  # defect 1
        "db export scores --out db",
        "sets export --out db-wal",
        "sets export --out existing.pt",
        "sets import empty.pt",  # defect 4
        "sets import text.pt",
        "sets import truncated.npz",
        "sets import zero.npz",
        "sets import string-labels.npz",
        "sets import labels-n-by-2.npz",
        "sets import complex.npz",
        "sets import plain-pickle.pt",
        "distill --lr-img nan",  # defect 5
        "influence --lr nan",
        "landscape --margin nan",
        "distill --depth 99",  # defect 6
        "sets export --out folder",  # defect 7
        "--db foo://bar",  # defect 8
        "--db postgresql (no driver / no server)",
        "foreign sqlite: sets list",
        "missing column: sets list",
        "version-0 (no version row): sets list",
        "read-only db: attributes add",
        "influence --seeds '5,,6'",  # defect 9
        'sets import method ""',
        "attributes list --kind bogus",
        "query 100k chars",
    ]:
        assert needed in names, needed
    # every numeric option of every command that has a base command, with every value
    options = probe._command_options()
    for command in probe.BASES:
        for option, kind in options[command]:
            if kind in (int, float):
                values = probe.FLOAT_VALUES if kind is float else probe.INT_VALUES
                for v in values:
                    assert f"{command} {option} {v[:12]}" in names, (command, option, v)
    assert all(c.accept is None or c.accept.strip() for c in cases)

    world = probe.tiny_world(tmp_path)
    chosen = [
        "sets export --out db",
        "sets import empty.pt",
        "influence --seeds '5,,6'",
        "--db foo://bar",
        "foreign sqlite: sets list",
        "rank --alpha nan",
    ]
    picked = [c for c in cases if c.name in chosen]
    assert len(picked) == len(chosen)
    outcomes = probe.run_catalogue(world, picked, log=lambda text: None)
    assert [o.verdict for o in outcomes] == ["handled"] * len(chosen), [
        (o.name, o.code, o.problems, o.last) for o in outcomes if o.verdict != "handled"
    ]
