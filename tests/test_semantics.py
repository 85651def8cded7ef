"""Vectorised average precision against scikit-learn, score tables, and question parsing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import average_precision_score

from ddsem.data import CIFAR10_CLASSES
from ddsem.errors import UserError
from ddsem.semantics import (
    Vocabulary,
    average_precision,
    parse_query,
    precision_recall_curve,
    score_attributes,
    singular,
)
from ddsem.significance import chance_ap


def sklearn_ap(labels: np.ndarray, scores: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-negative columns warn
        return float(average_precision_score(labels, scores))


@st.composite
def ranking_problems(draw):
    n = draw(st.integers(1, 3))
    t = draw(st.integers(1, 40))
    a = draw(st.integers(1, 4))
    g = draw(st.integers(1, 3))
    # few distinct values: many ties; sometimes continuous values
    values = st.one_of(
        st.sampled_from([-1.0, 0.0, 0.25, 2.0]),
        st.floats(-3, 3, allow_nan=False, width=32),
    )
    scores = draw(hnp.arrays(np.float32, (n, t), elements=values))
    labels = draw(hnp.arrays(np.bool_, (t, a)))
    groups = draw(hnp.arrays(np.int64, t, elements=st.integers(0, g - 1)))
    return scores, labels, groups, g


@settings(max_examples=150, deadline=None)
@given(ranking_problems())
def test_vectorised_ap_equals_sklearn_with_ties_and_groups(problem):
    scores, labels, groups, g = problem
    grouped = average_precision(scores, labels, groups, g)
    plain = average_precision(scores, labels)
    assert grouped.shape == (len(scores), g, labels.shape[1])
    assert plain.shape == (len(scores), 1, labels.shape[1])
    for k in range(len(scores)):
        for col in range(labels.shape[1]):
            if labels[:, col].any():
                assert plain[k, 0, col] == pytest.approx(
                    sklearn_ap(labels[:, col], scores[k]), abs=1e-12
                )
            else:  # AP undefined: reported as NaN, never a crash or a silent 0
                assert np.isnan(plain[k, 0, col])
            for c in range(g):
                member = groups == c
                y = labels[member, col]
                if y.any():
                    assert grouped[k, c, col] == pytest.approx(
                        sklearn_ap(y, scores[k, member]), abs=1e-12
                    )
                else:
                    assert np.isnan(grouped[k, c, col])


def test_ap_on_a_realistic_size_matches_sklearn():
    rng = np.random.default_rng(1)
    scores = np.round(rng.standard_normal((4, 3000)), 2).astype(np.float32)  # many ties
    labels = rng.random((3000, 6)) < rng.uniform(0.01, 0.4, 6)
    ap = average_precision(scores, labels)[:, 0]
    ref = [[sklearn_ap(labels[:, a], scores[k]) for a in range(6)] for k in range(4)]
    np.testing.assert_allclose(ap, ref, rtol=0, atol=1e-12)


def test_pr_curve_area_is_the_average_precision():
    rng = np.random.default_rng(2)
    scores = np.round(rng.standard_normal(300), 1)
    positives = rng.random(300) < 0.2
    recall, precision = precision_recall_curve(scores, positives)
    area = float(np.sum(np.diff(recall) * precision[1:]))
    assert area == pytest.approx(sklearn_ap(positives, scores), abs=1e-12)
    assert recall[0] == 0 and recall[-1] == 1 and precision[0] == 1


def test_score_attributes_within_class_ranks_among_the_class_only():
    rng = np.random.default_rng(3)
    t, a = 120, 3
    classes = np.repeat(np.arange(3), 40)
    labels = rng.random((t, a)) < 0.3
    labels[classes == 2, 1] = False  # attribute 1 never occurs in class 2
    influence = rng.standard_normal((5, t))
    scores = score_attributes(influence, classes, labels, 3)
    assert scores.class_filters == [-1, 0, 1, 2]
    np.testing.assert_array_equal(scores.totals, [120, 40, 40, 40])
    assert scores.positives[3, 1] == 0 and np.isnan(scores.ap[:, 3, 1]).all()
    members = classes == 1
    assert scores.ap[2, 2, 0] == pytest.approx(
        sklearn_ap(labels[members, 0], influence[2, members]), abs=1e-12
    )
    chance = chance_ap(40, labels[members, 0].sum())  # AP of a random ranking, exactly
    assert scores.chance_ap[2, 0] == pytest.approx(chance)
    assert scores.lift[2, 2, 0] == pytest.approx(scores.ap[2, 2, 0] / chance)
    only_within = score_attributes(influence, classes, labels, 3, all_classes=False)
    assert only_within.class_filters == [0, 1, 2]
    np.testing.assert_array_equal(only_within.ap, scores.ap[:, 1:])


# -- question parsing ----------------------------------------------------------------------------

VOCAB = Vocabulary(
    ["yellow", "red", "blue sky", "parked", "runway", "grass", "white background"],
    CIFAR10_CLASSES,
)


@pytest.mark.parametrize(
    ("text", "attributes", "class_name"),
    [
        ("yellow cars", ["yellow"], "automobile"),
        ("Yellow car", ["yellow"], "automobile"),
        ("which distilled images drive yellow automobiles?", ["yellow"], "automobile"),
        ("planes in the blue sky", ["blue sky"], "airplane"),
        ("parked aeroplanes on a runway", ["parked", "runway"], "airplane"),
        ("boats on a white background", ["white background"], "ship"),
        ("red puppies", ["red"], "dog"),
        ("red lorries", ["red"], "truck"),
        ("yelow carss", ["yellow"], "automobile"),  # close spellings
        ("trucs on grass", ["grass"], "truck"),
        ("bleu sky planes", ["blue sky"], "airplane"),  # close spelling of a phrase
        ("red", ["red"], None),
    ],
)
def test_parse_query(text, attributes, class_name):
    parsed = parse_query(text, VOCAB)
    assert parsed.attributes == attributes
    assert parsed.class_name == class_name
    if class_name:
        assert parsed.class_index == CIFAR10_CLASSES.index(class_name)


def test_parse_query_says_what_it_understood():
    parsed = parse_query("yelow cars", VOCAB)
    text = parsed.describe()
    assert '"yelow" -> yellow' in text and '"cars" -> automobile' in text


def test_synonyms_of_the_vocabulary_are_understood():
    from ddsem.db.annotations import AttributeInfo

    vocab = Vocabulary(
        [AttributeInfo(1, "parking lot", "background", ["car park", "garage"], "manual", 3)],
        CIFAR10_CLASSES,
    )
    assert parse_query("cars in a car park", vocab).attributes == ["parking lot"]
    assert parse_query("garages with trucks", vocab).attributes == ["parking lot"]
    # a name wins over another attribute's synonym, whatever the order
    vocab = Vocabulary(
        [
            AttributeInfo(1, "yellow background", "background", ["yellow"], "extracted", 9),
            AttributeInfo(2, "yellow", "object", [], "extracted", 9),
        ],
        CIFAR10_CLASSES,
    )
    assert parse_query("yellow cars", vocab).attributes == ["yellow"]


def test_unknown_attribute_lists_the_nearest_known():
    with pytest.raises(UserError, match=r"no known attribute in 'purple skies'.*'purple'"):
        parse_query("purple skies", VOCAB)
    vocab = Vocabulary(["blue sky", "green", "red"], CIFAR10_CLASSES)
    with pytest.raises(UserError, match=r"'reddish': red$"):
        parse_query("reddish cars", vocab)
    assert parse_query("bluesky cars", vocab).attributes == ["blue sky"]  # close enough


def test_a_class_alone_or_two_classes_are_refused():
    with pytest.raises(UserError, match="no attribute"):
        parse_query("cars", VOCAB)
    with pytest.raises(UserError, match="one class at most"):
        parse_query("yellow cars and trucks", VOCAB)


def test_singular():
    assert [singular(w) for w in ["cars", "puppies", "boxes", "grass", "mice", "bus", "deer"]] == [
        "car",
        "puppy",
        "box",
        "grass",
        "mouse",
        "bus",
        "deer",
    ]
