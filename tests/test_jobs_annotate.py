"""The jobs behind `ddsem annotate`, `attributes`, `sets` and `db`, driven directly (no argv) on
the synthetic data set: what a run stores, idempotence, resume after an interruption, refusals
that leave the database as it was, and requests refused where they are built."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest

from ddsem.db.admin import table_counts
from ddsem.errors import UserError
from ddsem.jobs import Recorder, Workspace
from ddsem.jobs import annotate as annotate_job
from ddsem.jobs import attributes as attributes_job
from ddsem.jobs import database as database_job
from ddsem.jobs import sets as sets_job
from ddsem.jobs.annotate import AnnotateRequest


def stored(ws: Workspace) -> list[tuple]:
    """(split, index, prompt, annotator, model, response, image id) of every answer, in order."""
    from ddsem.db.annotations import read_annotations

    rows = read_annotations(ws.db)
    return sorted(
        (r.split, r.index, r.prompt_name, r.annotator, r.model, r.response, r.image_id)
        for r in rows
    )


def without_ids(rows: list[tuple]) -> set[tuple]:
    return {r[:-1] for r in rows}


class InterruptAfter(Recorder):
    """Progress that raises KeyboardInterrupt (as Ctrl-C would) after ``steps`` advances."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    @contextmanager
    def phase(self, description: str, total: int):
        with super().phase(description, total) as advance:

            def interrupting(n: int = 1) -> None:
                advance(n)
                self.steps -= 1
                if self.steps <= 0:
                    raise KeyboardInterrupt

            yield interrupting


# -- annotate -------------------------------------------------------------------------------------


def test_color_annotation_stores_answers_for_the_selected_images(workspace, synthetic):
    from ddsem.annotate.color import describe
    from ddsem.data import stratified_indices

    request = AnnotateRequest(limit=20, classes="automobile, 6", data=synthetic)
    result = annotate_job.run(workspace, request)

    chosen = stratified_indices(synthetic.test_y, 20, seed=0)
    chosen = [int(i) for i in chosen if synthetic.test_y[i] in (1, 6)]
    assert len(chosen) == 4
    rows = stored(workspace)
    expected = {
        ("test", i, name, "color", "palette-v1", answer)
        for i in chosen
        for name, answer in describe(synthetic.test_x[i]).items()
    }
    assert without_ids(rows) == expected
    assert (result.images, result.todo, result.written, result.already_stored) == (4, 8, 8, 0)
    assert result.prompts == ["object", "background"] and not result.nothing_to_do
    assert {(i, name) for i, name, _ in result.samples} == {
        (chosen[0], "object"),
        (chosen[0], "background"),
    }
    assert result.relabelled is None  # no vocabulary yet
    assert result.as_json()["written"] == 8
    assert workspace.progress.phases == [("color answers", 8, 8)]
    assert workspace.progress.notes == [
        "color (palette-v1): 8 answers to give for 4 test images (0 already stored), batch 1000"
    ]


def test_a_second_run_has_nothing_to_do(workspace, synthetic):
    request = AnnotateRequest(limit=10, data=synthetic)
    annotate_job.run(workspace, request)
    before, rows = table_counts(workspace.db), stored(workspace)
    assert annotate_job.plan(workspace, request).todo == []

    again = annotate_job.run(workspace, request)
    assert again.nothing_to_do and again.written == 0 and again.already_stored == 20
    assert table_counts(workspace.db) == before and stored(workspace) == rows
    assert len(workspace.progress.phases) == 1  # no second phase: no engine, no writes


def test_an_interrupted_run_keeps_its_batches_and_resumes_to_the_same_rows(tmp_path, synthetic):
    request = AnnotateRequest(limit=10, batch_size=3, data=synthetic)  # 20 answers, 7 batches
    clean = Workspace.open(str(tmp_path / "clean.db"), device="cpu", progress=Recorder())
    annotate_job.run(clean, request)

    ws = Workspace.open(str(tmp_path / "resumed.db"), device="cpu", progress=InterruptAfter(1))
    with pytest.raises(KeyboardInterrupt):
        annotate_job.run(ws, request)
    first = stored(ws)
    assert len(first) == 3  # the first batch was committed before the interruption

    ws.progress = Recorder()
    result = annotate_job.run(ws, request)
    assert (result.todo, result.already_stored, result.written) == (17, 3, 17)
    rows = stored(ws)
    assert set(first) <= set(rows)  # finished answers kept as they were (ids too)
    assert without_ids(rows) == without_ids(stored(clean))
    assert annotate_job.run(ws, request).nothing_to_do
    clean.db.close()
    ws.db.close()


def test_a_new_prompt_text_under_an_old_name_is_refused_and_nothing_is_written(
    workspace, synthetic
):
    from ddsem.config import AnnotateConfig
    from ddsem.db import annotations as store

    annotate_job.run(workspace, AnnotateRequest(limit=10, data=synthetic))
    ids = store.image_ids(workspace.db, "cifar10", "test")
    model = AnnotateConfig.model  # a hub name: planning needs neither the model nor a network
    first = sorted(ids)[0]
    store.add_annotations(
        workspace.db, "llava", model, [(ids[first], "object", "Describe the object.", "A car.")]
    )
    before = table_counts(workspace.db)

    asked = AnnotateRequest(
        annotator="llava", prompts=("object=What is it?",), limit=10, data=synthetic
    )
    with pytest.raises(UserError, match="give the new question another NAME"):
        annotate_job.plan(workspace, asked)
    with pytest.raises(UserError, match="'object' was answered by llava"):
        annotate_job.run(workspace, asked)
    assert table_counts(workspace.db) == before

    # The same text, or a new name, is fine: only the missing answers are planned.
    same = replace(asked, prompts=(("object", "Describe the object."),))
    assert len(annotate_job.plan(workspace, same).todo) == 9
    renamed = replace(asked, prompts=("what=What is it?",))
    assert len(annotate_job.plan(workspace, renamed).todo) == 10
    assert table_counts(workspace.db) == before


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
        ({"annotator": "gpt"}, "unknown annotator 'gpt': use color or llava"),
        ({"prompts": ("color=What colour?",)}, "--prompt is for --annotator llava"),
        ({"model": "x"}, "--model is for --annotator llava"),
        ({"limit": 0}, "--limit must be a positive number of images, got 0"),
        ({"max_new_tokens": 0}, "--max-new-tokens must be at least 1, got 0"),
        ({"split": "validation"}, "unknown split 'validation'"),
        ({"classes": " , "}, "--classes is empty"),
        ({"dataset": "mnist"}, "unknown dataset 'mnist'"),
        ({"annotator": "llava", "prompts": ("object=",)}, "prompt 'object' is empty"),
        ({"annotator": "llava", "prompts": ("=Describe it.",)}, "NAME=TEXT"),
    ],
)
def test_bad_annotate_requests_are_refused_where_they_are_built(fields, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        AnnotateRequest(**fields)


def test_a_selection_the_data_does_not_have_is_refused_before_any_write(workspace, synthetic):
    before = table_counts(workspace.db)
    with pytest.raises(UserError, match="unknown class 'spaceship'"):
        annotate_job.run(workspace, AnnotateRequest(classes="spaceship", data=synthetic))
    with pytest.raises(UserError, match="no images selected"):
        annotate_job.run(workspace, AnnotateRequest(limit=3, classes="truck", data=synthetic))
    assert table_counts(workspace.db) == before
    assert annotate_job.parse_classes(("Frog", 1, "frog"), synthetic.classes) == [6, 1]


# -- attributes -----------------------------------------------------------------------------------


def answers_mentioning(ws: Workspace, prompt: str, terms: list[str]) -> set[int]:
    from ddsem.db.annotations import read_annotations

    return {
        r.image_id
        for r in read_annotations(ws.db)
        if r.prompt_name == prompt and any(t in r.response.lower() for t in terms)
    }


def test_attributes_extract_add_merge_remove(workspace, synthetic):
    with pytest.raises(UserError, match="run `ddsem annotate` first"):
        attributes_job.extract(workspace, attributes_job.ExtractRequest())
    annotate_job.run(workspace, AnnotateRequest(data=synthetic))

    result = attributes_job.extract(workspace, attributes_job.ExtractRequest(min_df=2))
    assert (result.annotator, result.model, result.answers) == ("color", "palette-v1", 200)
    assert result.added == result.candidates == len(result.attributes) and result.removed == 0
    attrs = {a.name: a for a in result.attributes}
    assert attrs["sky"].kind == "background" and attrs["blue sky"].source == "extracted"
    grass = answers_mentioning(workspace, "background", ["grass"])
    assert attrs["grass"].document_frequency == len(grass) > 0
    listing = attributes_job.list_attributes(workspace, kind="object")
    assert listing.source == ("color", "palette-v1")
    assert {a["kind"] for a in listing.as_json()} == {"object"}

    sky = attributes_job.merge(workspace, attributes_job.MergeRequest("sky", ("blue sky", "sky")))
    assert sky.synonyms == ["blue sky"] and sky.source == "manual"
    assert attributes_job.remove(workspace, ("grass", "grass")) == 1
    field = attributes_job.add(
        workspace, attributes_job.AddRequest(" field ", "background", ("grass",))
    )
    assert field.name == "field" and field.document_frequency == len(grass)
    names = {a.name for a in attributes_job.list_attributes(workspace).attributes}
    assert "field" in names and "grass" not in names and "blue sky" not in names

    before = table_counts(workspace.db)
    with pytest.raises(UserError, match="'green' is already in the vocabulary"):
        attributes_job.add(workspace, attributes_job.AddRequest("green"))
    with pytest.raises(UserError, match="unknown kind 'roof'"):
        attributes_job.add(workspace, attributes_job.AddRequest("roof", "roof"))
    with pytest.raises(UserError, match="no attribute named 'nothing'"):
        attributes_job.remove(workspace, ["nothing"])
    with pytest.raises(UserError, match="lower --min-df"):
        attributes_job.extract(workspace, attributes_job.ExtractRequest(min_df=1000))
    assert table_counts(workspace.db) == before

    # A re-extraction keeps what a user made and does not bring merged terms back.
    again = attributes_job.extract(workspace, attributes_job.ExtractRequest(min_df=2))
    names = {a.name for a in again.attributes}
    assert {"sky", "field"} <= names and "blue sky" not in names and "grass" not in names
    assert again.added == 0 and again.kept == len(names) - 2


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: attributes_job.ExtractRequest(min_df=0), "--min-df must be at least 1, got 0"),
        (lambda: attributes_job.ExtractRequest(max_terms=0), "--max-terms must be at least 1"),
        (lambda: attributes_job.AddRequest("the"), "no word that matching can see"),
        (lambda: attributes_job.AddRequest("car", synonyms=("object",)), "'object' has no word"),
        (lambda: attributes_job.MergeRequest("sky", ("sky",)), "at least one other attribute"),
    ],
)
def test_bad_attribute_requests_are_refused_where_they_are_built(build, message):
    with pytest.raises(UserError, match=message):
        build()


# -- sets and the database ------------------------------------------------------------------------


def test_sets_import_list_show_export_delete(workspace, tmp_path):
    import torch

    images = np.random.default_rng(0).standard_normal((20, 3, 32, 32)).astype(np.float32) * 3
    labels = np.arange(20) % 10
    np.savez(tmp_path / "s.npz", images=images, labels=labels)
    torch.save(
        {"data": torch.from_numpy(images), "label": torch.from_numpy(labels)}, tmp_path / "p.pt"
    )

    imported = sets_job.import_set(workspace, sets_job.ImportRequest(tmp_path / "p.pt", "BPTT"))
    assert (imported.fmt, imported.summary.name, imported.summary.method) == (
        "paper",
        "bptt",
        "bptt",
    )
    assert (imported.summary.num_images, imported.summary.ipc) == (20, 2)
    other = sets_job.ImportRequest(str(tmp_path / "s.npz"), "dm", name="mine")
    assert sets_job.import_set(workspace, other).fmt == "npz"
    listing = sets_job.list_sets(workspace)
    assert [(s["name"], s["method"]) for s in listing.as_json()] == [
        ("bptt", "bptt"),
        ("mine", "dm"),
    ]

    details = sets_job.show(workspace, method="bptt")
    assert details.per_class == [2] * 10
    assert details.pixel_max == pytest.approx(float(images.max()))
    assert details.as_json()["name"] == "bptt" and details.as_json()["per_class"] == [2] * 10

    before = table_counts(workspace.db)
    with pytest.raises(UserError, match="a distilled set named 'bptt' exists"):
        sets_job.import_set(workspace, sets_job.ImportRequest(tmp_path / "p.pt", "bptt"))
    with pytest.raises(UserError, match="file does not exist"):
        sets_job.import_set(workspace, sets_job.ImportRequest(tmp_path / "none.pt", "gm"))
    with pytest.raises(UserError, match="output folder does not exist"):
        sets_job.export(workspace, sets_job.SetExportRequest(tmp_path / "no" / "x.pt", "bptt"))
    assert table_counts(workspace.db) == before

    out = tmp_path / "out.pt"
    result = sets_job.export(workspace, sets_job.SetExportRequest(out, "bptt"))
    assert result.out == out and result.png == tmp_path / "out.png" and result.png.stat().st_size
    back = torch.load(out, weights_only=True)
    assert np.array_equal(back["data"].numpy(), images)
    # Onto an existing file: refused, unless force (then replaced).
    with pytest.raises(UserError, match="exists; pass --force"):
        sets_job.export(workspace, sets_job.SetExportRequest(out, method="dm"))
    sets_job.export(workspace, sets_job.SetExportRequest(out, method="dm", force=True))
    assert np.array_equal(torch.load(out, weights_only=True)["data"].numpy(), images)

    sets_job.delete(workspace, "mine")
    assert [s.name for s in sets_job.list_sets(workspace).sets] == ["bptt"]
    with pytest.raises(UserError, match="no distilled set named 'mine'"):
        sets_job.delete(workspace, "mine")
    with pytest.raises(UserError, match="unknown dataset 'mnist'"):
        sets_job.ImportRequest(tmp_path / "p.pt", "bptt", dataset="mnist")


def test_database_info_and_export(workspace, synthetic, tmp_path):
    import csv

    annotate_job.run(workspace, AnnotateRequest(limit=10, data=synthetic))
    info = database_job.info(workspace)
    assert info.as_json()["tables"]["annotation"] == 20 and info.url.startswith("sqlite")

    out = tmp_path / "ann.csv"
    result = database_job.export(workspace, database_job.TableExportRequest("annotations", out))
    assert (result.rows, result.fmt, result.path) == (20, "csv", out)
    with open(out, newline="") as f:
        assert len(list(csv.DictReader(f))) == 20
    with pytest.raises(UserError, match=r"no scores to export yet: `ddsem rank` makes them"):
        database_job.export(
            workspace, database_job.TableExportRequest("scores", tmp_path / "s.json")
        )
    for fields, message in [
        (("nope", "x.csv"), "unknown --what 'nope'"),
        (("scores", "x.xlsx"), "unknown export format 'xlsx'"),
        (("annotations", "x.csv", None, "bptt"), "--set applies to scores"),
    ]:
        with pytest.raises(UserError, match=message):
            database_job.TableExportRequest(*fields)
