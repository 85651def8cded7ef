"""ddsem annotate (colour palette, LLaVA) and ddsem attributes.

LLaVA runs for real, offline, on a tiny randomly initialised LLaVA saved to a folder
(tests/tiny_llava.py): the same classes and the same ``--model FOLDER`` path a user takes with
llava-1.5-7b-hf. The colour annotator is checked on real CIFAR-10 images picked by eye and on
drawn images of known colours; labels are checked against a plain regular-expression reading
of the stored answers.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ddsem.annotate.attributes import extract_candidates, label_pairs, phrase
from ddsem.annotate.color import PALETTE, ColorAnnotator, describe, pixel_names
from ddsem.annotate.prompts import Prompt
from ddsem.config import AttributeConfig
from ddsem.data import CIFAR10_CLASSES

sys.path.insert(0, str(Path(__file__).parent))
from tiny_llava import build_tiny_llava  # noqa: E402

# Colours of the drawn data set: (object RGB, background RGB) per class.
DRAWN = [
    ((250, 220, 20), (40, 110, 230)),  # yellow on blue
    ((220, 20, 20), (245, 245, 245)),  # red on white
    ((30, 160, 40), (10, 10, 10)),  # green on black
    ((250, 220, 20), (40, 160, 40)),  # yellow on green
    ((220, 20, 20), (40, 110, 230)),  # red on blue
    ((245, 245, 245), (10, 10, 10)),  # white on black
    ((30, 160, 40), (245, 245, 245)),  # green on white
    ((40, 110, 230), (40, 160, 40)),  # blue on green
    ((220, 20, 20), (10, 10, 10)),  # red on black
    ((250, 220, 20), (245, 245, 245)),  # yellow on white
]
TEST_PER_CLASS = 2


def drawn_image(obj: tuple[int, int, int], ground: tuple[int, int, int], seed: int) -> np.ndarray:
    """A 32x32 image: a square of one colour on a background of another, with a little noise."""
    rng = np.random.default_rng(seed)
    img = np.empty((32, 32, 3), dtype=np.float64)
    img[:] = ground
    img[8:24, 8:24] = obj
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def drawn_data(tmp_path_factory) -> Path:
    """A CIFAR-10-shaped image folder: 2 test and 1 train image per class, colours of DRAWN."""
    from PIL import Image

    root = tmp_path_factory.mktemp("drawn")
    for split, count in (("train", 1), ("test", TEST_PER_CLASS)):
        for label, name in enumerate(CIFAR10_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                obj, ground = DRAWN[label]
                pixels = drawn_image(obj, ground, seed=100 * label + k)
                Image.fromarray(pixels).save(folder / f"{k}.png")
    return root


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Decoded-pixel caches of the drawn data go to a temporary folder, not ~/.cache."""
    monkeypatch.setenv("DDSEM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


def table_counts(db_path: Path) -> dict[str, int]:
    """Rows per table: a refused command must leave every count (and the content) as it was."""
    if not db_path.exists():
        return {}
    con = sqlite3.connect(db_path)
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        return {t: con.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()


def annotations(db_path: Path) -> list[tuple]:
    con = sqlite3.connect(db_path)
    try:
        return con.execute(
            "select i.split, i.[index], a.prompt_name, a.annotator, a.model, a.response, a.id "
            "from annotation a join image i on i.id = a.image_id order by a.id"
        ).fetchall()
    finally:
        con.close()


def one_error_line(result) -> str:
    assert result.code == 2, (result.code, result.out, result.err)
    lines = [ln for ln in result.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    return lines[0]


# -- the colour annotator ------------------------------------------------------------------------


def test_palette_names_reference_colours():
    """Named web colours (CSS values) land on the palette name a person would use."""
    reference = {
        "red": (255, 0, 0),
        "orange": (255, 165, 0),
        "yellow": (255, 255, 0),
        "green": (0, 128, 0),
        "blue": (0, 0, 255),
        "purple": (128, 0, 128),
        "pink": (255, 192, 203),
        "brown": (139, 69, 19),
        "white": (255, 255, 255),
        "gray": (128, 128, 128),
        "black": (0, 0, 0),
    }
    pixels = np.array([list(reference.values())], dtype=np.uint8)
    assert [PALETTE[k] for k in pixel_names(pixels)[0]] == list(reference)


def test_color_drawn_images_and_scene_cues():
    sky_over_grass = np.zeros((32, 32, 3), dtype=np.uint8)
    sky_over_grass[:16] = (70, 130, 220)
    sky_over_grass[16:] = (40, 150, 40)
    sky_over_grass[9:23, 9:23] = (230, 30, 30)
    answers = describe(sky_over_grass)
    assert answers["object"] == "The object is red."
    assert "blue sky" in answers["background"] and "green grass" in answers["background"]
    dark = drawn_image((245, 245, 245), (10, 10, 10), seed=0)
    assert describe(dark) == {
        "object": "The object is white.",
        "background": "The background is black. It is a dark background.",
    }


# Real CIFAR-10 test images picked by eye (split index -> what a person sees).
CLEAR_OBJECTS = {
    1090: "yellow",  # yellow car, dark surroundings
    1119: "yellow",  # yellow taxi
    1162: "yellow",  # yellow sports car on white
    1016: "red",  # red hatchback on white
    1046: "red",  # red car, blue-grey background
    1118: "red",  # red roadster
    60: "yellow",  # yellow plane in a blue sky
    31: "red",  # red biplane over green
    6059: "brown",  # brown frog on green leaves
}
CLEAR_BACKGROUNDS = {
    22: "blue sky",  # airliner in a blue sky
    24: "blue sky",  # jet in a blue sky
    6000: "green grass",  # frog in grass
    6059: "green grass",
    48: "dark background",  # white plane on black
    6090: "dark background",  # frog on a dark ground
}


def test_color_names_clear_real_cifar_images(cifar):
    answers = ColorAnnotator().answer(
        cifar.test_x[list(CLEAR_OBJECTS)], [Prompt("object", "")] * len(CLEAR_OBJECTS)
    )
    for (index, colour), answer in zip(CLEAR_OBJECTS.items(), answers, strict=True):
        assert answer.startswith(f"The object is {colour}"), (index, answer)
    for index, cue in CLEAR_BACKGROUNDS.items():
        assert cue in describe(cifar.test_x[index])["background"], index


# -- LLaVA on a tiny random model ----------------------------------------------------------------


def reference_answers(
    folder: Path, images: np.ndarray, questions: list[str], tokens: int
) -> list[str]:
    """Each image and question alone, with plain transformers calls (no ddsem code)."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = LlavaForConditionalGeneration.from_pretrained(folder, local_files_only=True).eval()
    out = []
    for image, question in zip(images, questions, strict=True):
        inputs = processor(
            images=[Image.fromarray(image)],
            text=[f"USER: <image>\n{question} ASSISTANT:"],
            return_tensors="pt",
        )
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
        new = ids[0, inputs["input_ids"].shape[1] :]
        out.append(processor.tokenizer.decode(new, skip_special_tokens=True).strip())
    return out


def test_llava_batch_with_prompts_of_different_lengths_equals_alone(tiny_llava):
    import torch

    from ddsem.annotate.llava import load_llava

    annotator = load_llava(str(tiny_llava), torch.device("cpu"), max_new_tokens=8)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    prompts = [
        Prompt("object", "Describe the object."),
        Prompt("background", "Describe the background of this photograph in a few words."),
        Prompt("short", "Hi."),
    ]
    batched = annotator.answer(images, prompts)
    alone = [annotator.answer(images[k : k + 1], [p])[0] for k, p in enumerate(prompts)]
    reference = reference_answers(tiny_llava, images, [p.text for p in prompts], 8)
    assert batched == alone == reference
    assert len(set(batched)) == 3  # answers depend on the image and the prompt
    assert not any("ASSISTANT" in a or "Describe" in a for a in batched)  # new tokens only

    # A model that ships a chat template (llava-hf's do) gets its prompt from the template.
    assert annotator.prompt_text("Hi.") == "USER: <image>\nHi. ASSISTANT:"
    annotator.processor.chat_template = (
        "{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
        "<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
        "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
    )
    assert annotator.prompt_text("Hi.") == "USER: <image>\nHi. ASSISTANT:"
    annotator.processor.chat_template = "{{ 'Q: ' + messages[0]['content'][1]['text'] + ' A:' }}"
    assert annotator.prompt_text("Hi.") == "Q: Hi. A:"


def test_annotate_llava_cli_resumes_after_interruption(
    cli, tmp_path, tiny_llava, drawn_data, monkeypatch
):
    import ddsem.db.annotations as store

    args = [
        "annotate",
        "--annotator",
        "llava",
        "--model",
        str(tiny_llava),
        "--data",
        str(drawn_data),
    ]
    args += ["--limit", "10", "--batch-size", "6", "--max-new-tokens", "4"]
    images = 10

    # The reference: one uninterrupted run.
    clean = tmp_path / "clean.db"
    result = cli(*args, db=str(clean))
    assert result.code == 0, result.err
    assert "images/s" in result.out
    expected = {(r[1], r[2]): r[5] for r in annotations(clean)}
    assert len(expected) == 2 * images

    # Interrupted after the first committed batch (as Ctrl-C would), then resumed.
    real_add = store.add_annotations
    calls = []

    def add_then_interrupt(*a, **k):
        written = real_add(*a, **k)
        calls.append(written)
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "add_annotations", add_then_interrupt)
    resumed = tmp_path / "resumed.db"
    result = cli(*args, db=str(resumed))
    assert result.code == 130 and calls == [6]
    first = annotations(resumed)
    assert len(first) == 6

    monkeypatch.setattr(store, "add_annotations", real_add)
    result = cli(*args, db=str(resumed))
    assert result.code == 0, result.err
    assert "(6 already stored)" in result.out
    rows = annotations(resumed)
    assert rows[:6] == first  # finished batches kept as they were
    keys = [(r[1], r[2]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * images  # each (image, prompt) answered once
    assert {(r[1], r[2]): r[5] for r in rows} == expected
    assert {r[4] for r in rows} == {str(tiny_llava.resolve())}

    result = cli(*args, db=str(resumed))
    assert result.code == 0 and "nothing to do" in result.out
    assert len(annotations(resumed)) == 2 * images


def test_llava_model_that_cannot_be_loaded(cli, tmp_path, drawn_data, monkeypatch):
    from huggingface_hub import constants
    from transformers import LlamaConfig

    base = ["annotate", "--annotator", "llava", "--data", str(drawn_data), "--model"]
    db = tmp_path / "test.db"
    assert cli("annotate", "--data", str(drawn_data), "--limit", "10").code == 0
    before = table_counts(db)

    llama = tmp_path / "llama"
    LlamaConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1).save_pretrained(llama)
    line = one_error_line(cli(*base, str(llama)))
    assert "'llama' model, not LLaVA" in line

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no config.json" in one_error_line(cli(*base, str(empty)))
    assert "does not exist" in one_error_line(cli(*base, str(tmp_path / "missing")))

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no network, nothing cached
    line = one_error_line(cli(*base, "nobody-here/llava-none"))
    assert "Hugging Face cache" in line and "no network" in line and "--model DIR" in line
    assert table_counts(db) == before


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--annotator", "llava", "--prompt", "object="], "prompt 'object' is empty"),
        (["--annotator", "llava", "--prompt", "=Describe it."], "NAME=TEXT"),
        (["--split", "validation"], "unknown split 'validation'"),
        (["--classes", "spaceship"], "unknown class 'spaceship'"),
        (["--limit", "3", "--classes", "truck"], "no images selected"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--annotator", "gpt"], "unknown annotator"),
        (["--prompt", "color=What colour?"], "--prompt is for --annotator llava"),
    ],
)
def test_annotate_bad_input_changes_nothing(cli, tmp_path, drawn_data, args, message):
    db = tmp_path / "test.db"
    assert cli("annotate", "--data", str(drawn_data), "--limit", "10").code == 0
    before = table_counts(db)
    line = one_error_line(cli("annotate", "--data", str(drawn_data), *args))
    assert message in line
    assert table_counts(db) == before


def test_prompt_with_a_new_text_needs_a_new_name(cli, tmp_path, tiny_llava, drawn_data):
    base = [
        "annotate",
        "--annotator",
        "llava",
        "--model",
        str(tiny_llava),
        "--data",
        str(drawn_data),
    ]
    base += ["--limit", "10", "--max-new-tokens", "3"]
    assert cli(*base, "--prompt", "color=What colour is it?").code == 0
    before = table_counts(tmp_path / "test.db")
    line = one_error_line(cli(*base, "--prompt", "color=Which colours?"))
    assert "give the new question another NAME" in line
    assert table_counts(tmp_path / "test.db") == before


# -- the attribute vocabulary --------------------------------------------------------------------


def test_extract_candidates_by_hand():
    responses = {
        "object": ["A yellow car on a road.", "A yellow taxi.", "A red car.", "It is blue."],
        "background": ["A clear blue sky.", "Blue sky, with clouds.", "Blue. Sky is far."],
    }
    found = {
        (c.name, c.kind, c.document_frequency, tuple(c.synonyms))
        for c in extract_candidates(responses, AttributeConfig(min_df=2))
    }
    assert found == {
        ("yellow", "object", 2, ()),
        ("car", "object", 2, ()),
        ("blue", "background", 3, ()),  # "blue" is an object term only once: below min_df
        ("sky", "background", 3, ()),
        ("blue sky", "background", 2, ()),  # "Blue. Sky" is two clauses, not the bigram
    }
    both = {"object": ["blue car", "blue bus"], "background": ["blue wall", "blue sea"]}
    names = {
        c.name: (c.kind, c.synonyms) for c in extract_candidates(both, AttributeConfig(min_df=2))
    }
    assert names == {"blue": ("object", []), "blue background": ("background", ["blue"])}


def test_label_pairs_whole_words_in_the_attribute_prompt():
    responses = [
        (1, "background", "A clear blue sky over the sea."),
        (2, "background", "The bluesky logo; a skyline."),
        (3, "object", "A blue sky-coloured car."),
        (4, "background", "Blue, then sky."),
    ]
    vocabulary = [(10, "background", ["blue sky"]), (11, "object", ["blue"]), (12, "any", ["sky"])]
    assert label_pairs(responses, vocabulary) == {(1, 10), (3, 11), (1, 12), (3, 12), (4, 12)}
    assert phrase("the background") == "" and phrase("Parking  Lot") == "parking lot"


def regex_labels(rows: list[tuple], attribute: dict) -> set[int]:
    """Independent reference: images whose answer to the attribute's prompt contains its name
    or a synonym as a whole-word regular expression (colour answers have no stop words inside
    a phrase, so literal phrases suffice)."""
    found = set()
    for image_id, prompt_name, response in rows:
        if attribute["kind"] not in ("any", prompt_name):
            continue
        for term in [attribute["name"], *attribute["synonyms"]]:
            if re.search(rf"\b{re.escape(term)}\b", response.lower()):
                found.add(image_id)
    return found


def stored_labels(db_path: Path) -> tuple[list[tuple], dict[int, set[int]]]:
    con = sqlite3.connect(db_path)
    try:
        rows = con.execute("select image_id, prompt_name, response from annotation").fetchall()
        labels: dict[int, set[int]] = {}
        for image_id, attribute_id in con.execute(
            "select image_id, attribute_id from imageattribute"
        ):
            labels.setdefault(attribute_id, set()).add(image_id)
        return rows, labels
    finally:
        con.close()


def check_labels_against_regex(cli, db_path: Path) -> list[dict]:
    attrs = json.loads(cli("attributes", "list", "--json").out)
    rows, labels = stored_labels(db_path)
    for a in attrs:
        assert labels.get(a["id"], set()) == regex_labels(rows, a), a["name"]
        assert a["images"] == len(labels.get(a["id"], set()))
    return attrs


def test_attributes_extract_list_add_merge_remove(cli, tmp_path, drawn_data):
    db = tmp_path / "test.db"
    assert cli("annotate", "--data", str(drawn_data)).code == 0
    result = cli("attributes", "extract", "--min-df", "2")
    assert result.code == 0, result.err
    attrs = {a["name"]: a for a in check_labels_against_regex(cli, db)}
    # Drawn colours: yellow, red and green objects on blue, white, black and green grounds.
    assert {"yellow", "red", "green", "white"} <= {
        n for n, a in attrs.items() if a["kind"] == "object"
    }
    assert attrs["blue background"]["synonyms"] == ["blue"]
    assert attrs["sky"]["kind"] == "background" and attrs["sky"]["images"] == 2 * TEST_PER_CLASS
    assert attrs["dark"]["images"] == 3 * TEST_PER_CLASS

    assert cli("attributes", "merge", "sky", "blue sky").code == 0
    assert cli("attributes", "remove", "dark").code == 0
    assert cli("attributes", "add", "night", "--kind", "background", "--synonym", "dark").code == 0
    attrs = {a["name"]: a for a in check_labels_against_regex(cli, db)}
    assert attrs["sky"]["synonyms"] == ["blue sky"] and attrs["sky"]["source"] == "manual"
    assert "blue sky" not in attrs and "dark" not in attrs
    assert attrs["night"]["images"] == 3 * TEST_PER_CLASS

    # A re-extraction keeps what a user made and does not bring merged terms back.
    assert cli("attributes", "extract", "--min-df", "2").code == 0
    attrs = {a["name"]: a for a in check_labels_against_regex(cli, db)}
    assert attrs["sky"]["synonyms"] == ["blue sky"] and "blue sky" not in attrs
    assert "night" in attrs


def test_new_annotations_are_labelled_and_stale_scores_dropped(cli, tmp_path, drawn_data):
    from sqlmodel import select

    from ddsem.db import open_db
    from ddsem.db.sets import add_distilled_set
    from ddsem.db.tables import Attribute, AttributeScore

    db_path = tmp_path / "test.db"
    assert cli("annotate", "--data", str(drawn_data), "--classes", "airplane,automobile").code == 0
    assert cli("attributes", "extract", "--min-df", "1").code == 0
    db = open_db(db_path)
    summary = add_distilled_set(
        db, "s", "bptt", np.zeros((1, 3, 32, 32), np.float32), np.zeros(1, np.int64)
    )
    with db.session() as s:
        ids = {a.name: a.id for a in s.exec(select(Attribute)).all()}
        for name in ("yellow", "red"):
            s.add(
                AttributeScore(
                    set_id=summary.id,
                    scope="mean",
                    distilled_index=0,
                    attribute_id=ids[name],
                    ap=0.5,
                    positive_rate=0.1,
                    positives=1,
                    lift=5,
                )
            )
    # Annotating frogs (green on white) adds no yellow or red object: those scores stay valid.
    assert cli("annotate", "--data", str(drawn_data), "--classes", "frog").code == 0
    check_labels_against_regex(cli, db_path)
    assert cli("annotate", "--data", str(drawn_data), "--classes", "ship").code == 0  # red on black
    check_labels_against_regex(cli, db_path)
    con = sqlite3.connect(db_path)
    kept = {r[0] for r in con.execute("select attribute_id from attributescore")}
    con.close()
    assert kept == {ids["yellow"]}  # red gained images: its score was stale and is gone


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["remove", "nothing"], "no attribute named 'nothing'"),
        (["merge", "sky", "yellow"], "they are matched in different prompts"),
        (["merge", "sky", "sky"], "at least one other attribute"),
        (["add", "the"], "no word that matching can see"),
        (["add", "yellow"], "'yellow' is already in the vocabulary"),
        (["add", "night", "--kind", "roof"], "unknown kind 'roof'"),
        (["extract", "--min-df", "0"], "--min-df must be at least 1"),
        (["extract", "--min-df", "1000"], "lower --min-df"),
        (["extract", "--annotator", "llava"], "no annotations from that annotator"),
    ],
)
def test_attributes_bad_input_changes_nothing(cli, tmp_path, drawn_data, args, message):
    db = tmp_path / "test.db"
    assert cli("annotate", "--data", str(drawn_data)).code == 0
    assert cli("attributes", "extract", "--min-df", "2").code == 0
    before = table_counts(db)
    assert message in one_error_line(cli("attributes", *args))
    assert table_counts(db) == before


def test_extract_without_annotations(cli):
    assert "run `ddsem annotate` first" in one_error_line(cli("attributes", "extract"))


def test_compute_modules_stay_clear_of_storage_and_cli_stays_light():
    code = (
        "import sys, ddsem.annotate.llava, ddsem.annotate.color, ddsem.annotate.attributes;"
        "bad = [m for m in sys.modules if m.startswith(('ddsem.db', 'ddsem.cli', 'ddsem.tui'))];"
        "assert not bad, bad;"
        "import ddsem.cli;"
        "heavy = [m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
