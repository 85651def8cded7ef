"""A small, deterministic ddsem database for the TUI tests (rows written directly).

Set "bptt": 10 distilled images (one per CIFAR-10 class) with one complete influence run
(seed 0) over 100 annotated test images, four attributes and scores computed with scikit-learn,
with their chance AP, permutation p- and Benjamini-Hochberg q-values (``ddsem.significance``).
Distilled image #1 (automobile) is built to drive yellow test images, so "yellow cars" ranks it
first (3 yellow cars of 10 are too few to beat chance among 10 distilled images), and "yellow"
over all 100 test images finds it significant. Set "dm-raw": 3 images and nothing else, for the
empty states.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
PER_CLASS = 10
ATTRIBUTES = {  # name -> (synonyms, rule on the test index)
    "yellow": (["golden"], lambda i: i % 3 == 0),
    "blue sky": (["clear sky"], lambda i: i % 4 == 1),
    "red": ([], lambda i: i % 5 == 2),
    "green grass": (["grass"], lambda i: i % 7 == 3),
}
TOP_K = 8
MEAN = np.asarray((0.4914, 0.4822, 0.4465), dtype=np.float32)
STD = np.asarray((0.2023, 0.1994, 0.2010), dtype=np.float32)


class Judged(NamedTuple):
    """A stored score as the TUI shows it."""

    ap: float
    chance_ap: float
    p_value: float
    q_value: float
    draws: int


def real_pixels(index: int) -> np.ndarray:
    """A 32 x 32 test image whose colours show its attributes."""
    rng = np.random.default_rng(index)
    img = rng.integers(70, 130, size=(32, 32, 3)).astype(np.uint8)
    if ATTRIBUTES["yellow"][1](index):
        img[8:24, 8:24] = (230, 200, 30)
    if ATTRIBUTES["blue sky"][1](index):
        img[:10] = (90, 150, 235)
    if ATTRIBUTES["red"][1](index):
        img[12:20, :] = (210, 40, 40)
    if ATTRIBUTES["green grass"][1](index):
        img[24:] = (60, 170, 60)
    return img


def distilled_pixels(label: int) -> np.ndarray:
    """A display image in [0, 1]: a class-coloured disc on a gradient."""
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    hue = np.asarray([(label * 37 % 256) / 255, (label * 91 % 256) / 255, (label * 53 % 256) / 255])
    img = np.stack([xx, yy, 1 - xx], axis=-1) * 0.5
    disc = (xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1
    img[disc] = hue
    return img.astype(np.float32)


def influence_matrix(test_labels: np.ndarray, attrs: dict[str, np.ndarray]) -> np.ndarray:
    rng = np.random.default_rng(7)
    matrix = rng.normal(0.0, 0.01, size=(len(CLASSES), len(test_labels)))
    for i in range(len(CLASSES)):
        matrix[i, test_labels == i] += 0.05
    matrix[1] += 0.02 * attrs["yellow"]
    matrix[3] += 0.015 * attrs["blue sky"]
    return matrix.astype(np.float32)


def build(path: Path) -> dict:
    """Write the database at ``path``; returns facts the tests compare against."""
    from sklearn.metrics import average_precision_score
    from sqlmodel import select

    from ddsem.config import SignificanceConfig
    from ddsem.db import open_db
    from ddsem.db.codec import png_bytes, state_to_blob, to_blob
    from ddsem.db.sets import add_distilled_set, ensure_dataset
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
    from ddsem.significance import chance_ap, permutation_p_values, q_values

    db = open_db(path)
    dataset = ensure_dataset(db, "cifar10", "test fixture", CLASSES, 50000, 10000)
    test_indices = np.arange(len(CLASSES) * PER_CLASS, dtype=np.int64)
    test_labels = test_indices // PER_CLASS
    attrs = {
        name: np.asarray([rule(int(i)) for i in test_indices])
        for name, (_, rule) in ATTRIBUTES.items()
    }

    labels = np.arange(len(CLASSES))
    images = np.stack([(distilled_pixels(int(c)) - MEAN) / STD for c in labels]).transpose(
        0, 3, 1, 2
    )
    bptt = add_distilled_set(db, "bptt", "bptt", images, labels, provenance={"fixture": True})
    raw_labels = np.asarray([0, 1, 2])
    raw = np.stack([(distilled_pixels(int(c) + 3) - MEAN) / STD for c in raw_labels]).transpose(
        0, 3, 1, 2
    )
    add_distilled_set(db, "dm-raw", "dm", raw, raw_labels)

    matrix = influence_matrix(test_labels, attrs)
    with db.session() as s:
        image_ids = []
        for i, label in zip(test_indices, test_labels, strict=True):
            row = Image(
                dataset_id=dataset.id,
                split="test",
                index=int(i),
                label=int(label),
                png=png_bytes(real_pixels(int(i))),
            )
            s.add(row)
            s.flush()
            image_ids.append(row.id)
        attribute_rows = {}
        for name, (synonyms, _) in ATTRIBUTES.items():
            a = Attribute(
                name=name,
                synonyms_json=json.dumps(synonyms),
                document_frequency=int(attrs[name].sum()),
            )
            s.add(a)
            s.flush()
            attribute_rows[name] = a.id
        for k, image_id in enumerate(image_ids):
            said = [n for n in ATTRIBUTES if attrs[n][k]]
            s.add(
                Annotation(
                    image_id=image_id,
                    prompt_name="object",
                    prompt="describe the object",
                    annotator="color",
                    model="palette-v1",
                    response=", ".join(said) or "grey",
                )
            )
            for name in said:
                s.add(ImageAttribute(image_id=image_id, attribute_id=attribute_rows[name]))
        run = InfluenceRun(
            set_id=bptt.id, seed=0, status="complete", config_json="{}", config_hash="fixture",
            test_indices=to_blob(test_indices), num_models=len(CLASSES) + 1,
            init_state=state_to_blob({}), full_accuracy=0.3125,
        )  # fmt: skip
        s.add(run)
        s.flush()
        for i, values in enumerate(matrix):
            s.add(InfluenceRow(run_id=run.id, distilled_index=i, values=to_blob(values)))
            for rank, j in enumerate(np.argsort(-values, kind="stable")[:TOP_K]):
                s.add(
                    InfluenceTopK(
                        run_id=run.id,
                        distilled_index=i,
                        rank=rank,
                        test_index=int(test_indices[j]),
                        test_label=int(test_labels[j]),
                        value=float(values[j]),
                    )
                )
        expected_ap, expected = {}, {}
        filters = [-1, *range(len(CLASSES))]
        ap = np.full((len(CLASSES), len(filters), len(attrs)), np.nan)
        totals = np.zeros(len(filters), np.int64)
        positives = np.zeros((len(filters), len(attrs)), np.int64)
        for f, class_filter in enumerate(filters):
            members = (
                np.ones(len(test_labels), bool) if class_filter < 0 else test_labels == class_filter
            )
            totals[f] = members.sum()
            for a, has in enumerate(attrs.values()):
                positives[f, a] = has[members].sum()
                if positives[f, a]:
                    for i in range(len(CLASSES)):
                        ap[i, f, a] = average_precision_score(has[members], matrix[i, members])
        # Chance, p and q as `ddsem rank` stores them: one null per (T, P), the config's draws,
        # Benjamini-Hochberg over every score of the set and scope.
        config = SignificanceConfig()
        chance = chance_ap(totals[:, None], positives)
        judged = permutation_p_values(
            ap, totals, positives, min_draws=config.min_draws, max_draws=config.max_draws,
            seed=config.seed,
        )  # fmt: skip
        q = q_values(judged.p)
        for f, class_filter in enumerate(filters):
            for a, name in enumerate(attrs):
                if not positives[f, a]:
                    continue
                for i in range(len(CLASSES)):
                    expected_ap[(i, name, class_filter)] = float(ap[i, f, a])
                    expected[(i, name, class_filter)] = Judged(
                        float(ap[i, f, a]), float(chance[f, a]), float(judged.p[i, f, a]),
                        float(q[i, f, a]), int(judged.draws[f, a]),
                    )  # fmt: skip
                    s.add(
                        AttributeScore(
                            set_id=bptt.id,
                            scope="seed:0",
                            distilled_index=i,
                            attribute_id=attribute_rows[name],
                            class_filter=class_filter,
                            ap=float(ap[i, f, a]),
                            positive_rate=float(positives[f, a] / totals[f]),
                            positives=int(positives[f, a]),
                            lift=float(ap[i, f, a] / chance[f, a]),
                            chance_ap=float(chance[f, a]),
                            p_value=float(judged.p[i, f, a]),
                            q_value=float(q[i, f, a]),
                            draws=int(judged.draws[f, a]),
                        )
                    )
        run_id = run.id
    with db.session() as s:
        assert s.exec(select(InfluenceRun)).first() is not None
    db.close()
    return {
        "run_id": run_id,
        "matrix": matrix,
        "attrs": attrs,
        "test_labels": test_labels,
        "expected_ap": expected_ap,
        "expected": expected,  # (index, attribute, class filter) -> Judged
        "attribute_ids": attribute_rows,
    }
