"""Issue 15, numeric options: NaN, inf, out-of-range numbers, too deep ConvNets, empty list
items, unknown kinds and very long questions are refused where the request is built, with one
`error:` line, exit 2 and the database unchanged; Ctrl-C says that finished work is kept.

The property tests build every job's request from random numbers: construction either succeeds
with finite, in-range values or raises UserError, never another exception."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddsem.errors import UserError

# -- the database before and after ----------------------------------------------------------------


def dump(path) -> dict[str, list[tuple]]:
    """Every row of every table (sorted), to compare a database before and after a command."""
    with sqlite3.connect(path) as con:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        return {t: sorted(map(repr, con.execute(f'select * from "{t}"'))) for t in tables}


def running_rows(path) -> list[tuple[str, int]]:
    """(table, id) of every row whose status is 'running' (an orphaned claim)."""
    found = []
    with sqlite3.connect(path) as con:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        for t in tables:
            columns = [r[1] for r in con.execute(f'pragma table_info("{t}")')]
            if "status" in columns:
                rows = con.execute(f'select rowid from "{t}" where status = ?', ("running",))
                found += [(t, r[0]) for r in rows]
    return found


def add_set(tmp_path, synthetic, n: int = 10) -> None:
    """A 10-image 'bptt' set of real synthetic images in the cli fixture's database."""
    from ddsem.data import normalize, stratified_indices
    from ddsem.db import open_db
    from ddsem.db.sets import add_distilled_set

    idx = stratified_indices(synthetic.train_y, n, 7)[:n]
    db = open_db(tmp_path / "test.db")
    add_distilled_set(db, "tiny", "bptt", normalize(synthetic.train_x[idx]).numpy(),
                      synthetic.train_y[idx])  # fmt: skip
    db.close()


def refused(cli, tmp_path, args: list[str], message: str) -> str:
    """Run ``ddsem ARGS``: exit 2, one short `error:` line with ``message``, nothing written."""
    db = tmp_path / "test.db"
    before = dump(db)
    result = cli(*args)
    assert result.code == 2, (args, result.code, result.out, result.err)
    assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.err and len(result.err) < 600, result.err[:600]
    assert message in result.err, (message, result.err)
    assert dump(db) == before, args
    assert running_rows(db) == [], args
    return result.err


# -- defects 5, 6 and 9 through the command line ---------------------------------------------------

DM = ["distill", "--method", "dm", "--ipc", "1", "--width", "8", "--iterations", "2"]
INFLUENCE = ["influence", "--method", "bptt", "--width", "8", "--steps", "2", "--test-limit", "20"]
LANDSCAPE = ["landscape", "--method", "bptt", "--grid", "2", "--width", "4", "--depth", "2",
             "--train-samples", "20", "--test-samples", "10", "--distilled-steps", "2"]  # fmt: skip
CURVATURE = ["curvature", "--method", "bptt", "--width", "4", "--iterations", "2", "--every", "1"]
TOO_DEEP = "is too deep for 32x32 images: each ConvNet block halves the image, so --depth must be"

CASES = [
    # defect 5: non-finite numbers
    ([*DM, "--lr-img", "nan"], "--lr-img must be a finite number, got nan"),
    ([*DM, "--lr-img", "inf"], "--lr-img must be a finite number, got inf"),
    ([*DM, "--lr-img", "-1"], "--lr-img must be positive"),
    ([*DM, "--param", "momentum_img=nan"], "--param momentum_img must be a finite number"),
    ([*DM, "--param", "lr_img=-inf"], "--param lr_img must be a finite number"),
    ([*INFLUENCE, "--lr", "nan"], "--lr must be a finite number, got nan"),
    ([*INFLUENCE, "--lr", "inf"], "--lr must be a finite number, got inf"),
    ([*INFLUENCE, "--momentum", "nan"], "--momentum must be a finite number"),
    ([*INFLUENCE, "--momentum", "1"], "--momentum must lie in [0, 1), got 1.0"),
    ([*LANDSCAPE, "--margin", "nan"], "--margin must be a finite number, got nan"),
    ([*LANDSCAPE, "--margin", "inf"], "--margin must be a finite number, got inf"),
    ([*LANDSCAPE, "--margin", "1e300"], "--margin must be at most"),
    ([*CURVATURE, "--rel-err", "nan"], "--rel-err must be a finite number"),
    # defect 6 (--depth): a ConvNet of depth d needs 32 / 2**d >= 1
    ([*DM, "--depth", "99"], f"--depth 99 {TOO_DEEP} at most 5"),
    ([*DM, "--depth", "6"], f"--depth 6 {TOO_DEEP}"),
    (["distill", "experts", "--width", "8", "--depth", "6"], f"--depth 6 {TOO_DEEP}"),
    ([*INFLUENCE, "--depth", "6"], f"--depth 6 {TOO_DEEP}"),
    ([*LANDSCAPE[:7], "--depth", "9"], f"--depth 9 {TOO_DEEP}"),
    ([*CURVATURE, "--depth", "6"], f"--depth 6 {TOO_DEEP}"),
    # seeds numpy and torch cannot take
    (
        ["--seed", "-1", *CURVATURE],
        "--seed must be a non-negative integer below 4294967296, got -1",
    ),
    ([*INFLUENCE, "--seeds", "0,4294967296"], "--seeds must be a non-negative integer below"),
    # defect 9: empty list items
    ([*INFLUENCE, "--seeds", "5,,6"], "--seeds has an empty item in '5,,6'"),
    ([*INFLUENCE, "--seeds", ","], "--seeds is empty"),
    ([*CURVATURE, "--density-at", "0,,1"], "--density-at has an empty item"),
    # found by benchmarks/reliability.py: zero counts through --param, empty names, sizes that
    # overflow inside torch, a mistyped device on a command that never computes
    (
        [*DM, "--batch-real", "4", "--param", "batch_real=0"],
        "--param batch_real must be at least 1",
    ),
    ([*DM, "--name", ""], "--name is empty"),
    ([*DM, "--width", str(10**30)], "--width must be at most 2147483647 in size"),
    ([*DM, "--width", "100000"], "--width must be at most 8192"),
    ([*DM, "--lr-img", "1e300"], "--lr-img must be at most 3.4e+38 in size"),
    ([*DM, "--iterations", str(10**30)], "--iterations must be at most 2147483647 in size"),
    ([*LANDSCAPE, "--grid", str(10**6)], "--grid must be at most 1001"),
    (["influence", "--method", "", "--width", "8"], "--method is empty"),
    (["evaluate", "--method", "", "--runs", "1"], "--method is empty"),
    (["analyze", "recognition", "--method", ""], "--method is empty"),
    (["analyze", "agreement", "--window", "0"], "--window must lie in (0, 100]"),
    (["analyze", "clipping", "--set", " , "], "--set is empty"),
    (
        ["sets", "import", "x.npz", "--method", "dm", "--labels", "missing.pt"],
        "--labels missing.pt: no such file",
    ),
]


NO_DATA = [  # commands that read stored work only (no --data)
    (["rank", "--method", ""], "--method is empty"),
    (["rank", "--set", "tiny", "--device", "bogus"], "unknown device 'bogus'"),
    (["report", "--set", "tiny", "--out", "rep", "--min-positives", "-1"],
     "--min-positives must be at least 1"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), NO_DATA, ids=[" ".join(c[0][-2:]) for c in NO_DATA])
def test_bad_options_of_reading_commands(cli, tmp_path, synthetic, args, message):
    add_set(tmp_path, synthetic)
    refused(cli, tmp_path, args, message)


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(c[0][-2:]) for c in CASES])
def test_bad_numbers_are_one_line_exit_2_and_change_nothing(
    cli, tmp_path, synthetic, synthetic_path, args, message
):
    add_set(tmp_path, synthetic)
    refused(cli, tmp_path, [*args, "--data", str(synthetic_path)], message)


def test_an_unknown_attribute_kind_is_named_with_the_kinds(cli, tmp_path, synthetic):
    add_set(tmp_path, synthetic)
    assert cli("attributes", "add", "yellow", "--kind", "object").code == 0
    err = refused(cli, tmp_path, ["attributes", "list", "--kind", "bogus"], "unknown kind 'bogus'")
    assert "use any, background, object" in err
    listed = cli("attributes", "list", "--kind", "object")
    assert listed.code == 0 and "yellow" in listed.out
    assert cli("attributes", "list", "--kind", "background").code == 0  # known, nothing of it


def test_a_long_question_is_not_echoed_whole(cli, tmp_path, synthetic):
    add_set(tmp_path, synthetic)
    assert cli("attributes", "add", "yellow").code == 0
    words = " ".join(f"qz{i}" for i in range(20_000))  # ~130k characters, none of them known
    err = refused(cli, tmp_path, ["query", words, "--method", "bptt"], "no known attribute in")
    assert "'qz0 qz1 qz2" in err and "...'" in err and "more unknown words" in err
    err = refused(cli, tmp_path, ["query", "x" * 100_000, "--method", "bptt"], "no known attr")
    assert len(err) < 400


def test_parse_query_clips_what_it_echoes():
    from ddsem.data import CIFAR10_CLASSES
    from ddsem.semantics import Vocabulary, clip, parse_query

    assert (
        clip("short") == "short"
        and clip("y" * 81) == "y" * 77 + "..."
        and len(clip("y" * 81)) == 80
    )
    vocabulary = Vocabulary(["yellow", "red"], CIFAR10_CLASSES)
    with pytest.raises(UserError) as e:
        parse_query("the cars " * 20_000, vocabulary)
    assert len(str(e.value)) < 300
    with pytest.raises(UserError, match="'purple': "):
        parse_query("purple", vocabulary)  # short words are shown as before


def test_parse_int_list_refuses_empty_items():
    from ddsem.cli.common import parse_int_list

    assert parse_int_list("0, 1,2", "--seeds") == (0, 1, 2)
    for text, message in [("5,,6", "has an empty item"), ("5,", "has an empty item"),
                          ("", "is empty"), (" , ", "is empty"), ("a,b", "comma-separated"),
                          ("1,1", "lists 1 more than once")]:  # fmt: skip
        with pytest.raises(UserError, match=message):
            parse_int_list(text, "--seeds")
    with pytest.raises(UserError) as e:
        parse_int_list("z" * 10_000, "--seeds")
    assert len(str(e.value)) < 150


# -- Ctrl-C -------------------------------------------------------------------------------------

INTERRUPTED = "interrupted; finished work is kept and a re-run resumes\n"


def test_a_keyboard_interrupt_in_a_job_says_work_is_kept(cli, tmp_path, synthetic, synthetic_path,
                                                          monkeypatch):  # fmt: skip
    from ddsem.jobs import influence

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    add_set(tmp_path, synthetic)
    monkeypatch.setattr(influence, "run", interrupted)
    result = cli(*INFLUENCE, "--data", str(synthetic_path))
    assert result.code == 130 and result.err.endswith(INTERRUPTED), result.err


@pytest.mark.slow  # a real signal to a subprocess: torch's start-up dominates (~10 s)
def test_sigint_to_a_running_influence_job_says_work_is_kept(tmp_path, synthetic, synthetic_path):
    add_set(tmp_path, synthetic)
    db = tmp_path / "test.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*INFLUENCE[:5], "--steps", "3000", "--data", str(synthetic_path), "--db", str(db)]
    code = "import sys; from ddsem.cli import main; sys.argv[0] = 'ddsem'; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not running_rows(db):
            time.sleep(0.2)  # until the job has claimed its run and is training
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert err.endswith(INTERRUPTED) and "Traceback" not in err, err


# -- every request, random numbers ---------------------------------------------------------------

FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.0, 1e-12, 0.5, 0.999, 1.0, 1.5, 1e300, -1e300]),
)
INTS = st.one_of(st.integers(-3, 40), st.sampled_from([0, -1, 2**31, 2**32, 2**63, 10**30]))
OPTIONAL_INTS = st.one_of(st.none(), INTS)


def _finite_number(v) -> bool:
    return isinstance(v, int) or (isinstance(v, float) and math.isfinite(v))


def _requests():
    """(request class, fixed arguments, {numeric field: (strategy, in range when accepted)})."""
    from ddsem.jobs.annotate import AnnotateRequest
    from ddsem.jobs.attributes import ExtractRequest
    from ddsem.jobs.curvature import CurvatureRequest
    from ddsem.jobs.distill import DistillRequest
    from ddsem.jobs.evaluate import EvaluateRequest
    from ddsem.jobs.experts import ExpertsRequest
    from ddsem.jobs.influence import InfluenceRequest
    from ddsem.jobs.landscape import LandscapeRequest
    from ddsem.jobs.query import QueryRequest
    from ddsem.jobs.rank import RankRequest
    from ddsem.jobs.report import ReportRequest

    def at_least(n):
        return lambda v: v is not None and _finite_number(v) and v >= n

    def none_or_at_least(n):
        return lambda v: v is None or at_least(n)(v)

    def seed(v):
        return isinstance(v, int) and 0 <= v < 2**32

    def depth(v):
        return isinstance(v, int) and 1 <= v <= 5

    positive = (FLOATS, lambda v: _finite_number(v) and v > 0)
    fraction = (FLOATS, lambda v: _finite_number(v) and 0 < v < 1)
    count = (INTS, at_least(1))
    optional_count = (OPTIONAL_INTS, none_or_at_least(1))
    any_int = (INTS, lambda v: isinstance(v, int))
    optional_int = (OPTIONAL_INTS, lambda v: v is None or isinstance(v, int))
    return [
        (InfluenceRequest, {}, {
            "seeds": (st.lists(INTS, max_size=4).map(tuple),
                      lambda v: len(v) > 0 and all(seed(s) for s in v)),
            "test_limit": optional_count, "width": count, "depth": (INTS, depth),
            "steps": count, "lr": positive,
            "momentum": (FLOATS, lambda v: _finite_number(v) and 0 <= v < 1),
            "real_images": count, "top_k": count, "chunk": (INTS, at_least(0)),
            "selection_seed": (INTS, seed),
        }),
        (DistillRequest, {"method": "dm"}, {
            "ipc": count, "iterations": optional_count, "seed": (INTS, seed), "width": count,
            "depth": (INTS, depth), "lr_img": (st.one_of(st.none(), FLOATS),
                                               lambda v: v is None or positive[1](v)),
            "batch_real": optional_count, "real_limit": optional_count,
            "checkpoint_every": count, "stop_after": optional_count,
        }),
        (CurvatureRequest, {"methods": ("dm",)}, {
            "iterations": (INTS, at_least(0)), "every": count, "probes": (INTS, at_least(2)),
            "rel_err": fraction, "real_samples": count, "lanczos_steps": count,
            "lanczos_runs": count, "probe_block": count, "chunk_size": count,
            "train_samples": optional_count, "width": count, "depth": (INTS, depth),
            "seed": (INTS, seed),
        }),
        (LandscapeRequest, {}, {
            "grid": (INTS, at_least(2)),
            "margin": (FLOATS, lambda v: _finite_number(v) and 0 <= v <= 100),
            "distilled_steps": count, "test_samples": optional_count,
            "train_samples": optional_count, "width": count, "depth": (INTS, depth),
            "seed": (INTS, seed),
        }),
        (EvaluateRequest, {}, {
            "runs": count, "width": count, "test_limit": optional_count, "seed": (INTS, seed),
        }),
        (ExpertsRequest, {}, {
            "num_experts": count, "epochs": count, "width": count, "depth": (INTS, depth),
            "real_limit": optional_count, "lr": positive, "batch_size": count,
            "test_limit": optional_count, "seed": (INTS, seed),
        }),
        (AnnotateRequest, {}, {
            "limit": optional_count, "batch_size": optional_count, "max_new_tokens": count,
        }),
        (ExtractRequest, {}, {"min_df": count, "max_terms": count}),
        (RankRequest, {}, {
            "seed": optional_int, "top": (INTS, at_least(0)),
            "min_positives": (INTS, at_least(0)), "alpha": fraction, "draws": count,
        }),
        (QueryRequest, {"text": "yellow cars"}, {
            "seed": optional_int, "top": count, "images": (INTS, at_least(0)), "alpha": fraction,
            "draws": count,
        }),
        (ReportRequest, {"out": "report"}, {
            "seed": optional_int, "top": count, "attributes_per_image": count,
            "min_positives": any_int, "alpha": fraction, "draws": count,
        }),
    ]  # fmt: skip


REQUESTS = _requests()


@pytest.mark.parametrize(
    ("cls", "fixed", "fields"), REQUESTS, ids=[r[0].__name__ for r in REQUESTS]
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_request_is_built_or_refused_with_one_user_error(cls, fixed, fields, data):
    chosen = {
        name: data.draw(strategy, label=name)
        for name, (strategy, _) in fields.items()
        if data.draw(st.booleans(), label=f"give {name}")  # the rest keep their defaults
    }
    try:
        request = cls(**fixed, **chosen)
    except UserError as e:
        assert str(e) and "\n" not in str(e) and len(str(e)) < 400
        return
    for name, (_, in_range) in fields.items():
        value = getattr(request, name)
        assert in_range(value), (cls.__name__, name, value)
        if isinstance(value, float):
            assert math.isfinite(value)


def test_the_validators_refuse_non_finite_and_out_of_range_numbers():
    from ddsem.jobs.common import at_least, convnet_fits, finite, in_range, positive

    for bad in (float("nan"), float("inf"), -float("inf"), np.float32("nan")):
        for check in (lambda v: finite(v, "--x"), lambda v: positive(v, "--x"),
                      lambda v: at_least(v, 0, "--x"), lambda v: in_range(v, 0, 1, "--x")):  # fmt: skip
            with pytest.raises(UserError, match="--x must be a finite number"):
                check(bad)
    for bad in ("1", True, [1]):
        with pytest.raises(UserError, match="--x must be a number"):
            positive(bad, "--x")  # type: ignore[arg-type]
    positive(2**31 - 1, "--x")
    for big in (2**31, 10**400):  # would overflow inside torch (int64 sizes, int32 draws)
        with pytest.raises(UserError, match="--x must be at most 2147483647 in size"):
            positive(big, "--x")
    with pytest.raises(UserError, match="--x must be at most 3.4e"):
        positive(1e39, "--x")  # past float32, where learning rates and pixels end up
    finite(None, "--x")
    convnet_fits(8, 5)
    convnet_fits(8, 4, 16)
    with pytest.raises(UserError, match="--depth must be at most 5"):
        convnet_fits(8, 6)
    with pytest.raises(UserError, match="--depth must be at most 4"):
        convnet_fits(8, 5, 16)
