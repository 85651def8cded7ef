"""`ddsem rank`, `query`, `report` and `db export` on a database built directly, with a planted
signal: distilled image 3's influence is high exactly on the yellow automobiles."""

from __future__ import annotations

import csv
import json
import sqlite3
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from ddsem.data import CIFAR10_CLASSES
from ddsem.db import SCHEMA_VERSION, open_db
from ddsem.db.admin import table_counts
from ddsem.db.codec import state_to_blob, to_blob
from ddsem.db.sets import add_distilled_set, ensure_dataset, ensure_images
from ddsem.db.tables import (
    Annotation,
    Attribute,
    AttributeScore,
    Image,
    ImageAttribute,
    InfluenceRow,
    InfluenceRun,
    InfluenceTopK,
)
from ddsem.errors import UserError
from ddsem.significance import chance_ap

N_DISTILLED = 12
T_TEST = 200  # 20 test images per class
ATTRIBUTES = ["yellow", "red", "blue sky", "parked", "grass"]
AUTOMOBILE = CIFAR10_CLASSES.index("automobile")
FROG = CIFAR10_CLASSES.index("frog")


# -- building database state directly ------------------------------------------------------------


def add_set(db, n=N_DISTILLED):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    labels = np.arange(n) // 2  # two per class: distilled image 3 is an automobile
    return add_distilled_set(db, "bptt", "bptt", images, labels)


def add_test_images(db, t=T_TEST):
    """Test images 0..t-1, class = index % 10; returns (dataset id, image ids, classes)."""
    rng = np.random.default_rng(1)
    ds = ensure_dataset(db, "cifar10", "test-fixture", CIFAR10_CLASSES, 50_000, 10_000)
    classes = np.arange(t) % 10
    pixels = rng.integers(0, 256, (t, 32, 32, 3), dtype=np.uint8)
    ensure_images(db, ds.id, "test", np.arange(t), pixels, classes)
    with db.session() as s:
        rows = s.exec(
            Image.__table__.select().where(Image.dataset_id == ds.id).order_by(Image.index)
        ).all()
    return ds.id, np.asarray([r.id for r in rows]), classes


def attribute_matrix(classes):
    """(T, A) labels: yellow on 5 of the 20 automobiles and on some others; nothing is red
    among frogs; the rest random."""
    rng = np.random.default_rng(2)
    labels = rng.random((len(classes), len(ATTRIBUTES))) < 0.25
    cars = np.flatnonzero(classes == AUTOMOBILE)
    labels[cars, 0] = False
    labels[cars[[1, 4, 7, 11, 16]], 0] = True
    labels[classes == FROG, 1] = False
    return labels


def annotate(db, image_ids, labels, annotated=None):
    """Annotation rows for the images (all, or the mask ``annotated``) and their attributes."""
    annotated = np.ones(len(image_ids), bool) if annotated is None else annotated
    with db.session() as s:
        attrs = [Attribute(name=n, kind="any", document_frequency=1) for n in ATTRIBUTES]
        s.add_all(attrs)
        s.flush()
        for i, image_id in enumerate(image_ids.tolist()):
            if not annotated[i]:
                continue
            s.add(
                Annotation(
                    image_id=image_id,
                    prompt_name="object",
                    prompt="describe the object",
                    annotator="color",
                    model="palette-v1",
                    response=", ".join(ATTRIBUTES[a] for a in np.flatnonzero(labels[i])),
                )
            )
            for a in np.flatnonzero(labels[i]).tolist():
                s.add(ImageAttribute(image_id=image_id, attribute_id=attrs[a].id))


def planted_influence(classes, labels, seed=0):
    """Small noise everywhere; distilled image 3 strongly helps exactly the yellow cars."""
    rng = np.random.default_rng(10 + seed)
    influence = rng.normal(0, 0.01, (N_DISTILLED, len(classes))).astype(np.float32)
    yellow_cars = (classes == AUTOMOBILE) & labels[:, 0]
    influence[3, yellow_cars] += 1.0
    return influence


def add_run(db, set_id, influence, test_indices, seed=0, status="complete", topk=3):
    with db.session() as s:
        run = InfluenceRun(
            set_id=set_id,
            seed=seed,
            status=status,
            config_json="{}",
            config_hash="x",
            test_indices=to_blob(np.asarray(test_indices, np.int64)),
            num_models=len(influence) + 1,
            init_state=state_to_blob({}),
        )
        s.add(run)
        s.flush()
        for i, row in enumerate(influence):
            s.add(InfluenceRow(run_id=run.id, distilled_index=i, values=to_blob(row)))
            for r, j in enumerate(np.argsort(-row)[:topk].tolist()):
                s.add(
                    InfluenceTopK(
                        run_id=run.id,
                        distilled_index=i,
                        rank=r,
                        test_index=int(test_indices[j]),
                        test_label=int(test_indices[j]) % 10,
                        value=float(row[j]),
                    )
                )
        return run.id


@pytest.fixture
def world(tmp_path):
    """The cli fixture's database with a set, test images, attributes and one complete run."""
    db = open_db(str(tmp_path / "test.db"))
    summary = add_set(db)
    _, image_ids, classes = add_test_images(db)
    labels = attribute_matrix(classes)
    annotate(db, image_ids, labels)
    influence = planted_influence(classes, labels)
    add_run(db, summary.id, influence, np.arange(T_TEST))
    yield {"db": db, "set_id": summary.id, "classes": classes, "labels": labels,
           "influence": influence, "image_ids": image_ids}  # fmt: skip
    db.close()


def sk_ap(y, s):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(average_precision_score(y, s))


def stored_scores(db):
    with db.session() as s:
        return s.exec(AttributeScore.__table__.select()).all()


# -- rank ----------------------------------------------------------------------------------------


def test_rank_stores_sklearn_average_precision_and_is_idempotent(cli, world):
    r = cli("rank", "--method", "bptt", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["scope"] == "seed:0" and out["estimator"] == "average_precision"
    assert out["class_filters"][0] == "all" and len(out["class_filters"]) == 11
    rows = stored_scores(world["db"])
    # every (distilled, attribute, filter) with positives: 5 all-class + 10 classes x 5 - 1
    # (no red frog): AP undefined there, reported and not stored
    assert out["undefined_no_positives"] == 1
    assert len(rows) == out["stored"] == N_DISTILLED * (5 + 10 * 5 - 1)
    names = {n: i for i, n in enumerate(ATTRIBUTES)}
    with world["db"].session() as s:
        attr_name = {a.id: a.name for a in s.exec(Attribute.__table__.select()).all()}
    classes, labels, influence = world["classes"], world["labels"], world["influence"]
    for row in rows[:: max(1, len(rows) // 60)]:  # a spread of rows against scikit-learn
        col = names[attr_name[row.attribute_id]]
        member = classes == row.class_filter if row.class_filter >= 0 else np.ones(T_TEST, bool)
        y = labels[member, col]
        assert row.ap == pytest.approx(sk_ap(y, influence[row.distilled_index, member]), abs=1e-9)
        assert row.positives == y.sum()
        assert row.positive_rate == pytest.approx(y.mean())
        assert row.chance_ap == pytest.approx(chance_ap(len(y), y.sum()))
        assert row.lift == pytest.approx(row.ap / row.chance_ap)
        assert 0 < row.p_value <= 1 and row.q_value >= row.p_value and row.draws >= 1000
    best = out["top"][0]
    assert (best["distilled_index"], best["attribute"], best["class_filter"]) == (
        3, "yellow", "automobile"
    )  # fmt: skip
    assert best["ap"] == pytest.approx(1.0)
    again = cli("rank", "--method", "bptt", "--json")
    assert again.code == 0 and len(stored_scores(world["db"])) == len(rows)


def test_rank_within_class_only_and_human_output(cli, world):
    r = cli("rank", "--method", "bptt", "--within-class")
    assert r.code == 0, r.err
    assert "scikit-learn" in r.out and "yellow" in r.out
    filters = {row.class_filter for row in stored_scores(world["db"])}
    assert filters == set(range(10))
    assert cli("rank", "--method", "bptt", "--within-class", "--all-classes").code == 2


def test_mean_over_seeds_averages_the_runs(cli, world):
    influence2 = planted_influence(world["classes"], world["labels"], seed=1)
    add_run(world["db"], world["set_id"], influence2, np.arange(T_TEST), seed=1)
    r = cli("rank", "--method", "bptt", "--mean-over-seeds", "--all-classes", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["scope"] == "mean"
    mean = (world["influence"].astype(np.float64) + influence2) / 2
    rows = [row for row in stored_scores(world["db"]) if row.scope == "mean"]
    yellow_id = next(
        a.id for a in stored_attribute_rows(world["db"]) if a.name == "yellow"
    )  # fmt: skip
    row = next(r for r in rows if r.distilled_index == 5 and r.attribute_id == yellow_id)
    assert row.ap == pytest.approx(sk_ap(world["labels"][:, 0], mean[5]), abs=1e-9)
    seed1 = cli("rank", "--method", "bptt", "--seed", "1", "--json")
    assert json.loads(seed1.out)["scope"] == "seed:1"
    missing = cli("rank", "--method", "bptt", "--seed", "7")
    assert missing.code == 2 and "complete seeds: 0, 1" in missing.err


def stored_attribute_rows(db):
    with db.session() as s:
        return s.exec(Attribute.__table__.select()).all()


def test_unannotated_test_images_are_left_out(cli, tmp_path):
    db = open_db(str(tmp_path / "test.db"))
    summary = add_set(db)
    _, image_ids, classes = add_test_images(db)
    labels = attribute_matrix(classes)
    annotated = np.arange(T_TEST) < 150
    annotate(db, image_ids, labels, annotated)
    influence = planted_influence(classes, labels)
    add_run(db, summary.id, influence, np.arange(T_TEST))
    r = cli("rank", "--method", "bptt", "--all-classes", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["test_images"] == 150 and out["unannotated_test_images_skipped"] == 50
    row = next(
        x for x in stored_scores(db) if x.distilled_index == 0 and x.attribute_id == 2
    )  # "red" (ids follow ATTRIBUTES)
    assert row.ap == pytest.approx(sk_ap(labels[:150, 1], influence[0, :150]), abs=1e-9)


# -- missing steps and bad input: one line, exit 2, database unchanged ---------------------------


def assert_refused(cli, db_path, args, *needles):
    db = open_db(db_path)
    before = table_counts(db)
    r = cli(*args)
    assert r.code == 2, (r.out, r.err)
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, r.err
    for needle in needles:
        assert needle in r.err, r.err
    assert table_counts(db) == before
    db.close()


def test_missing_steps_name_the_command_that_makes_them(cli, tmp_path):
    path = str(tmp_path / "test.db")
    assert_refused(cli, path, ["rank", "--method", "bptt"], "no distilled set")
    db = open_db(path)
    summary = add_set(db)
    assert_refused(cli, path, ["rank", "--method", "bptt"], "`ddsem influence --method bptt`")
    _, image_ids, classes = add_test_images(db)
    labels = attribute_matrix(classes)
    add_run(db, summary.id, planted_influence(classes, labels), np.arange(T_TEST), status="running")
    assert_refused(cli, path, ["rank", "--method", "bptt"], "unfinished", "ddsem influence")
    add_run(db, summary.id, planted_influence(classes, labels), np.arange(T_TEST), seed=1)
    assert_refused(
        cli, path, ["rank", "--method", "bptt"], "`ddsem annotate` then `ddsem attributes extract`"
    )
    assert_refused(cli, path, ["query", "yellow cars", "--method", "bptt"], "`ddsem annotate`")
    db.close()


def test_query_refusals(cli, world, tmp_path):
    path = str(tmp_path / "test.db")
    assert_refused(cli, path, ["query", "purple skies"], "no known attribute", "'purple'")
    assert_refused(cli, path, ["query", "cars"], "no attribute")
    # a class filter with no positive for the attribute: reported, not a crash
    assert_refused(cli, path, ["query", "red frogs"], "no frog test image has 'red'")
    assert_refused(cli, path, ["query", "yellow cars", "--top", "0"], "--top")
    assert_refused(cli, path, ["report", "--out", str(tmp_path / "r")], "`ddsem rank")


# -- query ---------------------------------------------------------------------------------------


def test_query_finds_the_planted_distilled_image(cli, world):
    r = cli("query", "yellow cars", "--method", "bptt", "--top", "3", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["query"] == "yellow cars"
    assert out["attribute"] == "yellow" and out["class"] == "automobile"
    assert out["positives"] == 5 and out["test_images"] == 20
    assert [k in out for k in ("scope", "estimator", "results")] == [True] * 3
    first = out["results"][0]
    assert first["distilled_index"] == 3 and first["ap"] == pytest.approx(1.0)
    assert first["lift"] == pytest.approx(1.0 / chance_ap(20, 5))  # AP / chance AP
    assert first["chance_ap"] == out["chance_ap"] == pytest.approx(chance_ap(20, 5))
    assert first["significant"] and first["q_value"] < 0.05 and out["total"] == 20
    assert len(out["results"]) == 3
    yellow_cars = {
        int(i) for i in np.flatnonzero((world["classes"] == AUTOMOBILE) & world["labels"][:, 0])
    }
    assert {h["test_index"] for h in first["top_test_images"]} == yellow_cars
    # the other results are ranked by AP, each checked against scikit-learn
    member = world["classes"] == AUTOMOBILE
    for res in out["results"]:
        ref = sk_ap(world["labels"][member, 0], world["influence"][res["distilled_index"], member])
        assert res["ap"] == pytest.approx(ref, abs=1e-9)
    aps = [res["ap"] for res in out["results"]]
    assert aps == sorted(aps, reverse=True)


def test_query_human_output_says_what_it_understood(cli, world):
    r = cli("query", "yelow automobiles", "--images", "2")
    assert r.code == 0, r.err
    assert '"yelow" -> yellow' in r.out and "class automobile" in r.out
    assert "5 of 20 annotated automobile test images have yellow" in r.out
    assert f"chance AP {chance_ap(20, 5):.3f}" in r.out
    assert "1 distilled image predicts yellow among automobile better than chance" in r.out
    for column in ("chance", "lift", "sig"):
        assert column in r.out
    none = cli("query", "grass cars")
    assert none.code == 0, none.err
    assert "no distilled image predicts grass among automobile better than chance" in none.out


def test_rank_human_output_counts_significant_answers(cli, world, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the whole table, as a wide terminal shows it
    r = cli("rank", "--method", "bptt", "--draws", "100", "--alpha", "0.1")
    assert r.code == 0, r.err
    assert "answers are better than chance at q < 0.1 (Benjamini-Hochberg over the 648" in r.out
    assert "lowest q then highest AP" in r.out and "chance" in r.out
    assert "<9.9e-03" in r.out  # AP 1 of #3: no null draw of 100 reaches it, p < 1/101
    rows = stored_scores(world["db"])
    assert max(row.draws for row in rows) == 100 and min(row.p_value for row in rows) == 1 / 101


def db_files(path) -> dict[str, bytes]:
    """The bytes of a SQLite database and its WAL (a refused command changes neither)."""
    return {p.name: p.read_bytes() for p in sorted(path.parent.glob(path.name + "*"))}


@pytest.mark.parametrize(
    "bad", [["--alpha", "0"], ["--alpha", "1"], ["--alpha", "nan"], ["--alpha", "2"],
            ["--draws", "0"], ["--draws", "-1"]],
)  # fmt: skip
@pytest.mark.parametrize("command", [["rank"], ["query", "yellow cars"], ["report", "--out", "r"]])
def test_bad_alpha_or_draws_is_refused_and_the_database_is_unchanged(
    cli, world, tmp_path, command, bad
):
    assert cli("rank", "--all-classes").code == 0  # scores for the report
    path = tmp_path / "test.db"
    before = db_files(path)
    r = cli(*command, *bad)
    assert r.code == 2, (r.out, r.err)
    assert r.err.startswith(f"error: {bad[0]} must be") and r.err.count("\n") == 1, r.err
    assert db_files(path) == before
    assert not (tmp_path / "r").exists()


def v1_database(path):
    """Downgrade a database to schema version 1: its attributescore table as version 1 wrote it
    (no chance_ap, p_value, q_value, draws), keeping the rows."""
    con = sqlite3.connect(path)
    with con:
        con.executescript(V1_ATTRIBUTESCORE)
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()


V1_ATTRIBUTESCORE = """
ALTER TABLE attributescore RENAME TO v2_scores;
DROP INDEX ix_attributescore_set_id;
DROP INDEX ix_attributescore_attribute_id;
CREATE TABLE attributescore (
    id INTEGER NOT NULL,
    set_id INTEGER NOT NULL,
    scope VARCHAR NOT NULL,
    context VARCHAR NOT NULL,
    distilled_index INTEGER NOT NULL,
    attribute_id INTEGER NOT NULL,
    class_filter INTEGER NOT NULL,
    estimator VARCHAR NOT NULL,
    ap FLOAT NOT NULL,
    positive_rate FLOAT NOT NULL,
    positives INTEGER NOT NULL,
    lift FLOAT NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (set_id, scope, distilled_index, attribute_id, class_filter),
    FOREIGN KEY(set_id) REFERENCES distilledset (id) ON DELETE CASCADE,
    FOREIGN KEY(attribute_id) REFERENCES attribute (id) ON DELETE CASCADE
);
CREATE INDEX ix_attributescore_set_id ON attributescore (set_id);
CREATE INDEX ix_attributescore_attribute_id ON attributescore (attribute_id);
INSERT INTO attributescore SELECT id, set_id, scope, context, distilled_index, attribute_id,
    class_filter, estimator, ap, positive_rate, positives, lift FROM v2_scores;
DROP TABLE v2_scores;
"""


def columns_and_version(path) -> tuple[list[str], str]:
    con = sqlite3.connect(path)
    columns = [r[1] for r in con.execute("PRAGMA table_info(attributescore)")]
    version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    con.close()
    return columns, version


def test_a_version_1_database_is_migrated_keeping_its_scores(cli, world, tmp_path, monkeypatch):
    from ddsem.db import engine

    assert cli("rank", "--all-classes").code == 0
    world["db"].close()
    path = tmp_path / "test.db"
    v1_database(path)
    columns, version = columns_and_version(path)
    assert version == "1" and "chance_ap" not in columns and columns[-1] == "lift"
    con = sqlite3.connect(path)
    old = con.execute("SELECT * FROM attributescore ORDER BY id").fetchall()
    con.close()

    # a migration that fails half-way changes nothing: one transaction
    broken = {2: [*engine.ADDED_COLUMNS[2], ("nosuchtable", "x", "FLOAT")]}
    monkeypatch.setattr(engine, "ADDED_COLUMNS", broken)
    with pytest.raises(UserError, match="cannot open database"):
        open_db(str(path))
    assert columns_and_version(path) == (columns, "1")
    monkeypatch.undo()

    db = open_db(str(path))
    columns2, version2 = columns_and_version(path)
    assert version2 == str(SCHEMA_VERSION) and columns2 == [
        *columns,
        "chance_ap",
        "p_value",
        "q_value",
        "draws",
    ]
    con = sqlite3.connect(path)
    kept = con.execute(f"SELECT {', '.join(columns)} FROM attributescore ORDER BY id").fetchall()
    new = con.execute("SELECT chance_ap, p_value, q_value, draws FROM attributescore").fetchall()
    con.close()
    assert kept == old and len(old) == N_DISTILLED * len(ATTRIBUTES)
    assert set(new) == {(None, None, None, None)}  # unknown until ranked again
    db.close()
    # the old scores still read, report and export; the table says to rank again
    out = tmp_path / "report"
    r = cli("report", "--out", str(out), "--query", "yellow")
    assert r.code == 0, r.err
    assert "No significance is stored" in (out / "table1.md").read_text()
    assert cli("db", "export", "--what", "scores", "--out", str(tmp_path / "s.json")).code == 0
    rows = json.loads((tmp_path / "s.json").read_text())
    assert rows[0]["p_value"] is None and rows[0]["draws"] is None
    assert cli("rank", "--all-classes").code == 0  # ranking again fills them
    assert all(row.p_value is not None for row in stored_scores(open_db(str(path))))
    assert open_db(str(path)) and columns_and_version(path)[1] == str(SCHEMA_VERSION)


def test_a_newer_schema_stays_refused(cli, tmp_path):
    path = tmp_path / "newer.db"
    newer = SCHEMA_VERSION + 1
    open_db(str(path)).close()
    con = sqlite3.connect(path)
    with con:
        con.execute(f"UPDATE meta SET value = '{newer}' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(UserError, match=f"schema version {newer}, newer than this ddsem under"):
        open_db(str(path))
    assert columns_and_version(path)[1] == str(newer)


# -- report and export ---------------------------------------------------------------------------


def test_report_writes_figures_and_table(cli, world, tmp_path):
    assert cli("rank", "--method", "bptt").code == 0
    out_dir = tmp_path / "report"
    r = cli("report", "--method", "bptt", "--out", str(out_dir), "--query", "yellow cars")
    assert r.code == 0, r.err
    pr = out_dir / "pr_yellow_automobile.png"
    assert pr.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    grids = sorted((out_dir / "influence").glob("distilled_*.png"))
    assert len(grids) == N_DISTILLED
    with open(out_dir / "table1.csv", newline="") as f:
        table = list(csv.DictReader(f))
    first_of_3 = next(row for row in table if row["distilled_index"] == "3" and row["rank"] == "1")
    assert first_of_3["attribute"] == "yellow" and first_of_3["among"] == "automobile"
    assert float(first_of_3["ap"]) == pytest.approx(1.0)
    md = (out_dir / "table1.md").read_text()
    assert f"| 3 | automobile | yellow (1.00, {1.0 / chance_ap(20, 5):.1f}x)" in md
    assert "`*` q < 0.05" in md
    assert {"chance_ap", "p_value", "q_value", "significant"} <= set(table[0])
    default = cli("report", "--method", "bptt", "--out", str(tmp_path / "auto"))
    assert default.code == 0, default.err
    assert (tmp_path / "auto" / "pr_yellow_automobile.png").exists()  # highest-lift pair


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_db_export(cli, world, tmp_path, fmt):
    assert cli("rank", "--method", "bptt", "--all-classes").code == 0
    path = tmp_path / f"scores.{fmt}"
    r = cli("db", "export", "--what", "scores", "--out", str(path))
    assert r.code == 0, r.err
    if fmt == "csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    elif fmt == "json":
        rows = json.loads(path.read_text())
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    assert len(rows) == N_DISTILLED * len(ATTRIBUTES)
    row = next(x for x in rows if int(x["distilled_index"]) == 3 and x["attribute"] == "yellow")
    assert row["set"] == "bptt" and row["class"] == "all" and row["scope"] == "seed:0"
    assert float(row["ap"]) == pytest.approx(sk_ap(world["labels"][:, 0], world["influence"][3]))
    assert list(rows[0])[-4:] == ["chance_ap", "p_value", "q_value", "draws"]
    stored = next(
        x for x in stored_scores(world["db"]) if x.distilled_index == 3 and x.attribute_id == 1
    )  # yellow (ids follow ATTRIBUTES)
    assert float(row["chance_ap"]) == pytest.approx(stored.chance_ap, rel=1e-12)
    assert float(row["p_value"]) == pytest.approx(stored.p_value, rel=1e-12)
    assert float(row["q_value"]) == pytest.approx(stored.q_value, rel=1e-12)
    assert int(row["draws"]) == stored.draws >= 1000
    topk = tmp_path / f"topk.{fmt}"
    assert cli("db", "export", "--what", "influence-topk", "--out", str(topk)).code == 0
    ann = tmp_path / f"ann.{fmt}"
    assert (
        cli("db", "export", "--what", "annotations", "--out", str(ann), "--format", fmt).code == 0
    )


def test_db_export_json_contents_and_refusals(cli, world, tmp_path):
    topk = tmp_path / "topk.json"
    assert cli("db", "export", "--what", "influence-topk", "--out", str(topk)).code == 0
    rows = json.loads(topk.read_text())
    assert len(rows) == N_DISTILLED * 3
    first = next(x for x in rows if x["distilled_index"] == 3 and x["rank"] == 0)
    assert first["class"] == "automobile" and first["influence"] > 0.9
    ann = tmp_path / "ann.json"
    assert cli("db", "export", "--what", "annotations", "--out", str(ann)).code == 0
    ann_rows = json.loads(ann.read_text())
    assert len(ann_rows) == T_TEST
    car = next(x for x in ann_rows if x["index"] == 11)  # automobile, yellow (cars[1])
    assert "yellow" in car["attributes"].split(";") and car["class"] == "automobile"
    path = str(tmp_path / "test.db")
    assert_refused(cli, path, ["db", "export", "--what", "scores", "--out", str(tmp_path / "s.csv")],
                   "`ddsem rank`")  # fmt: skip
    assert_refused(cli, path, ["db", "export", "--what", "nope", "--out", "x.csv"], "--what")
    assert_refused(
        cli, path, ["db", "export", "--what", "scores", "--out", "x.xlsx"], "unknown export format"
    )
    assert_refused(
        cli, path, ["db", "export", "--what", "scores", "--out", str(tmp_path / "no" / "x.csv")],
        "output folder does not exist",
    )  # fmt: skip
