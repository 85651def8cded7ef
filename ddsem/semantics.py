"""Which semantics does a distilled image store? PR-AUC ranking and free-text questions.

Paper section 5.2: rank the real test images by a distilled image's influence (descending: the
images it helps most first) and measure, by the area under the precision-recall curve, how well
that ranking finds the test images with an attribute ("yellow"), optionally among one class
("yellow" among automobiles). The estimator is average precision exactly as scikit-learn's
``average_precision_score`` defines it (ties share one threshold; the sum over thresholds of
recall increase times precision), vectorised: one sort per distilled image and cumulative sums
for all attributes at once.

NumPy only: arrays in, arrays and small dataclasses out. Reading the database (influence runs,
test images, attributes) and storing scores is the jobs layer's work (``ddsem.jobs.rank``,
``ddsem.jobs.query``, ``ddsem.jobs.semantic_inputs``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ddsem.errors import UserError
from ddsem.significance import chance_ap

ESTIMATOR = "average_precision"
ESTIMATOR_TEXT = "average precision (scikit-learn's average_precision_score definition)"
ALL_CLASSES = -1  # class_filter value meaning "every test image"


# -- average precision ---------------------------------------------------------------------------


def average_precision(
    scores: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    num_groups: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Average precision of ranking the T items by each row of ``scores`` (highest first).

    scores: (N, T) floats; labels: (T, A) bools (the positives of each of A columns);
    groups: optional (T,) ints in [0, G): rank and score within each group separately.
    Returns (N, G, A) float64 (G = 1 without groups); NaN where a group has no positive
    (average precision is undefined there; scikit-learn warns and returns 0).

    scikit-learn's AP is the sum over thresholds of (recall increase) x precision, a threshold
    being the last item of each run of equal scores. Equivalently: the mean, over the
    positives, of the precision at the threshold of the positive's run. Per row that needs one
    lexicographic sort (group, then descending score) and, for all A columns at once, the
    running count of positives at each positive (its ordinal within its column and group);
    with ties, the count at the end of the run (a binary search).
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=bool)
    if scores.ndim != 2 or labels.ndim != 2 or labels.shape[0] != scores.shape[1]:
        raise ValueError(
            f"scores (N, T) and labels (T, A) expected, got {scores.shape}, {labels.shape}"
        )
    n, t = scores.shape
    a = labels.shape[1]
    if groups is None:
        groups = np.zeros(t, dtype=np.int64)
        num_groups = 1
    groups = np.asarray(groups, dtype=np.int64)
    g_count = int(num_groups if num_groups is not None else (groups.max() + 1 if t else 0))
    out = np.full((n, g_count, a), np.nan)
    if t == 0 or a == 0:
        return out

    group_of_position = np.sort(groups, kind="stable")  # the group at each sorted position
    sizes = np.bincount(groups, minlength=g_count)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank_in_group = np.arange(1, t + 1) - starts[group_of_position]  # items ranked at or above
    group_changes = group_of_position[1:] != group_of_position[:-1]
    labels_t = np.ascontiguousarray(labels.T)  # (A, T): nonzero() then walks column by column
    positives = np.zeros((g_count, a), dtype=np.int64)
    np.add.at(positives, groups, labels.astype(np.int64))

    for k in range(n):
        s = scores[k]
        order = np.lexsort((-s, groups))  # by group, then by descending score
        sorted_scores = s[order]
        is_end = np.empty(t, dtype=bool)  # last position of a run of equal scores: a threshold
        is_end[:-1] = (sorted_scores[1:] != sorted_scores[:-1]) | group_changes
        is_end[-1] = True
        # every positive as (column, sorted position), ordered by column, then position
        cols, rows = np.nonzero(labels_t[:, order])
        key = cols * g_count + group_of_position[rows]  # (column, group) runs, nondecreasing
        change = np.empty(len(key), dtype=bool)
        change[:1] = True
        change[1:] = key[1:] != key[:-1]
        run_start = np.maximum.accumulate(np.where(change, np.arange(len(key)), 0))
        if is_end.all():  # no ties: each positive is its own threshold
            true_positives = np.arange(1, len(key) + 1) - run_start
            ranks = rank_in_group[rows]
        else:  # ties: precision is read at the end of the positive's run of equal scores
            ends = np.flatnonzero(is_end)
            block_end = ends[np.cumsum(is_end) - is_end][rows]
            ordered = key * t + rows
            true_positives = np.searchsorted(ordered, key * t + block_end, side="right") - run_start
            ranks = rank_in_group[block_end]
        # AP * positives = sum over positives of the precision at their threshold
        sums = np.bincount(key, weights=true_positives / ranks, minlength=a * g_count)
        out[k] = sums.reshape(a, g_count).T
        if progress is not None:
            progress(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = out / positives[None].astype(np.float64)
    out[:, positives == 0] = np.nan
    return out


def precision_recall_curve(
    scores: np.ndarray, positives: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at scikit-learn's thresholds where recall increases, from (0, 1).

    Plot with ``step(recall, precision, where="pre")``: the area under that step function is
    exactly ``average_precision`` (thresholds where recall stays put add nothing to it).
    """
    scores = np.asarray(scores)
    positives = np.asarray(positives, dtype=bool)
    total = int(positives.sum())
    if total == 0:
        raise ValueError("no positives: the precision-recall curve is undefined")
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    tp = np.cumsum(positives[order])[ends].astype(np.float64)
    rises = np.diff(tp, prepend=0.0) > 0
    precision = tp[rises] / (ends[rises] + 1)
    recall = tp[rises] / total
    return np.r_[0.0, recall], np.r_[1.0, precision]


@dataclass
class Scores:
    """Average precision of every distilled image for every attribute and class filter."""

    class_filters: list[int]  # ALL_CLASSES (-1) or a class index, one per block
    ap: np.ndarray  # (N, F, A) float64; NaN where the filter has no positive of the attribute
    positives: np.ndarray  # (F, A) int: test images with the attribute (in the filter)
    totals: np.ndarray  # (F,) int: test images in the filter

    @property
    def positive_rate(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.positives / self.totals[:, None]

    @property
    def chance_ap(self) -> np.ndarray:
        """(F, A) the exact expected AP of a random ranking of the filter's test images (NaN
        without positives): above the positive rate, by most for rare attributes."""
        return chance_ap(self.totals[:, None], self.positives)

    @property
    def lift(self) -> np.ndarray:
        """AP / chance AP: 1 for a ranking no better than a random one."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.ap / self.chance_ap[None]


def score_attributes(
    influence: np.ndarray,
    test_classes: np.ndarray,
    attribute_labels: np.ndarray,
    num_classes: int,
    *,
    all_classes: bool = True,
    within_class: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Scores:
    """AP of each distilled image's influence ranking (N x T) for each attribute (T x A),
    over all test images and/or within each class (class filters -1 and 0..C-1)."""
    test_classes = np.asarray(test_classes, dtype=np.int64)
    blocks: list[np.ndarray] = []
    filters: list[int] = []
    positives: list[np.ndarray] = []
    totals: list[int] = []
    if all_classes:
        blocks.append(average_precision(influence, attribute_labels, progress=progress)[:, 0:1])
        filters.append(ALL_CLASSES)
        positives.append(attribute_labels.sum(axis=0)[None])
        totals.append(len(test_classes))
    if within_class:
        blocks.append(
            average_precision(
                influence, attribute_labels, test_classes, num_classes, progress=progress
            )
        )
        filters.extend(range(num_classes))
        per_class = np.zeros((num_classes, attribute_labels.shape[1]), dtype=np.int64)
        np.add.at(per_class, test_classes, attribute_labels.astype(np.int64))
        positives.append(per_class)
        totals.extend(np.bincount(test_classes, minlength=num_classes).tolist())
    if not blocks:
        raise UserError("nothing to rank: choose --within-class, --all-classes or neither (both)")
    return Scores(
        class_filters=filters,
        ap=np.concatenate(blocks, axis=1),
        positives=np.concatenate(positives, axis=0),
        totals=np.asarray(totals, dtype=np.int64),
    )


# -- free-text questions -------------------------------------------------------------------------

# Other words for the CIFAR-10 classes (singular; plurals are handled by ``singular``).
CLASS_SYNONYMS: dict[str, tuple[str, ...]] = {
    "airplane": ("plane", "aeroplane", "aircraft", "jet", "airliner", "jetliner"),
    "automobile": ("car", "auto", "sedan", "motorcar"),
    "bird": (),
    "cat": ("kitten", "kitty"),
    "deer": ("stag", "doe", "fawn"),
    "dog": ("puppy", "pup", "hound"),
    "frog": ("toad",),
    "horse": ("pony", "stallion", "mare"),
    "ship": ("boat", "vessel"),
    "truck": ("lorry",),
}

# Words a question may carry that name neither an attribute nor a class.
_STOP_TEXT = """a an the of in on at with and or for to from by that which what who whose is are was do
    does did has have show me find list give distilled image images picture pictures photo
    photos drive drives driving influence influences influenced store stores storing contain
    contains most more about there any some than it its"""
STOP_WORDS = frozenset(_STOP_TEXT.split())

_IRREGULAR = {
    "mice": "mouse", "men": "man", "women": "woman", "children": "child", "people": "person",
    "leaves": "leaf", "wolves": "wolf", "knives": "knife", "shelves": "shelf", "geese": "goose",
    "teeth": "tooth", "feet": "foot", "oxen": "ox", "buses": "bus", "glasses": "glass",
    "grass": "grass", "bus": "bus", "glass": "glass",
}  # fmt: skip


def singular(word: str) -> str:
    """English plural -> singular for the nouns of questions (cars, puppies, boxes, mice)."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:['-][a-z0-9]+)*", text.lower().replace("_", " "))


def _phrase_keys(tokens: Sequence[str]) -> list[str]:
    """A phrase as written, and with its last word made singular."""
    plain = " ".join(tokens)
    single = " ".join([*tokens[:-1], singular(tokens[-1])])
    return [plain] if single == plain else [plain, single]


def _term_keys(tokens: Sequence[str]) -> list[str]:
    """Lookup keys of a vocabulary term: as written, singular, and a plain plural (the plural
    helps close spellings of plurals: "carss" is nearer "cars" than "car")."""
    keys = _phrase_keys(tokens)
    if not tokens[-1].endswith("s"):
        keys.append(" ".join([*tokens[:-1], tokens[-1] + "s"]))
    return keys


@dataclass
class ParsedQuery:
    """What a question was understood as: attribute(s) (all must hold) and an optional class."""

    text: str
    attributes: list[str]  # vocabulary names, in the order written
    class_index: int | None
    class_name: str | None
    notes: list[str] = field(default_factory=list)  # how words were read ("cars" -> automobile)
    ignored: list[str] = field(default_factory=list)  # words not understood

    def describe(self) -> str:
        what = " and ".join(f'"{a}"' for a in self.attributes)
        where = f"class {self.class_name}" if self.class_name else "all classes"
        text = f"understood: attribute {what}, {where}"
        if self.notes:
            text += f" ({'; '.join(self.notes)})"
        if self.ignored:
            text += f"; ignored: {', '.join(self.ignored)}"
        return text


class NamedAttribute(Protocol):
    """What a vocabulary needs of an attribute (``ddsem.db.annotations.AttributeInfo`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def synonyms(self) -> Sequence[str]: ...


class Vocabulary:
    """Lookup from words and phrases to attribute names (name and synonyms) and classes."""

    def __init__(self, attributes: Sequence[NamedAttribute | str], classes: Sequence[str]) -> None:
        self.attribute_names: list[str] = []
        self.terms: dict[str, str] = {}  # term (and its singular) -> attribute name
        pairs: list[tuple[str, str]] = []  # (term, attribute): every name before any synonym
        for attr in attributes:
            name = attr if isinstance(attr, str) else attr.name
            self.attribute_names.append(name)
            pairs.append((name, name))
        for attr in attributes:
            if not isinstance(attr, str):
                pairs.extend((synonym, attr.name) for synonym in attr.synonyms)
        for term, name in pairs:
            words = _words(term)
            if words:
                for key in _term_keys(words):
                    self.terms.setdefault(key, name)
        self.classes = [c.replace("_", " ") for c in classes]
        self.class_terms: dict[str, int] = {}  # word or phrase -> class index
        for index, name in enumerate(self.classes):
            words = _words(name)
            extra = [_words(s) for s in CLASS_SYNONYMS.get(name, ())]
            for term in [words, *extra]:
                for key in _term_keys(term):
                    self.class_terms.setdefault(key, index)
        self.multi_word_terms = [k for k in self.terms if " " in k]
        self.longest = max([len(k.split()) for k in [*self.terms, *self.class_terms]] or [1])

    def nearest_attributes(self, word: str, n: int = 5) -> list[str]:
        """The vocabulary's attribute names closest in spelling to ``word``."""
        found = difflib.get_close_matches(word, list(self.terms), n=n * 3, cutoff=0.5)
        names: list[str] = []
        for term in found:
            if self.terms[term] not in names:
                names.append(self.terms[term])
        return names[:n]


HINTED_WORDS = 5  # unknown words of a question given the nearest known attributes in an error


def clip(text: str, limit: int = 80) -> str:
    """User text as echoed in a message: at most ``limit`` characters, cut with "..."."""
    text = str(text)
    return text if len(text) <= limit else text[: max(limit - 3, 1)] + "..."


def parse_query(text: str, vocabulary: Vocabulary) -> ParsedQuery:
    """Free text -> attribute(s) and class.

    Exact phrases first (longest first; plural last words made singular; class names and their
    synonyms such as car -> automobile), then close spellings of the leftover words
    (difflib, ratio >= 0.8). Raises UserError when no attribute is recognised, listing the
    nearest known ones.
    """
    tokens = _words(text)
    if not tokens:
        raise UserError('the question is empty: ask e.g. ddsem query "yellow cars"')
    attributes: list[str] = []
    class_index: int | None = None
    notes: list[str] = []
    leftover: list[str] = []

    def set_class(index: int, written: str) -> bool:
        nonlocal class_index
        if class_index is None:
            class_index = index
            if written != vocabulary.classes[index]:
                notes.append(f'"{written}" -> {vocabulary.classes[index]}')
            return True
        return class_index == index

    def add_attribute(name: str, written: str) -> None:
        if name not in attributes:
            attributes.append(name)
        if written != name:
            notes.append(f'"{written}" -> {name}')

    i = 0
    while i < len(tokens):
        matched = 0
        for n in range(min(vocabulary.longest, len(tokens) - i), 0, -1):
            phrase = tokens[i : i + n]
            keys = _phrase_keys(phrase)
            written = " ".join(phrase)
            class_hit = next(
                (vocabulary.class_terms[k] for k in keys if k in vocabulary.class_terms), None
            )
            attr_hit = next((vocabulary.terms[k] for k in keys if k in vocabulary.terms), None)
            if class_hit is not None and set_class(class_hit, written):
                matched = n
                break
            if attr_hit is not None:
                add_attribute(attr_hit, written)
                matched = n
                break
            if class_hit is not None:
                names = (vocabulary.classes[class_index or 0], vocabulary.classes[class_hit])
                raise UserError(
                    f"name one class at most; the question names {names[0]} and {names[1]}"
                )
            if n > 1 and not any(_is_class_word(w, vocabulary) for w in phrase):
                close = _closest(set(keys), vocabulary.multi_word_terms, cutoff=0.85)
                if close:  # a close spelling of a phrase: "blue skyy" -> blue sky
                    add_attribute(vocabulary.terms[close[0]], written)
                    matched = n
                    break
        if matched:
            i += matched
        else:
            leftover.append(tokens[i])
            i += 1

    ignored: list[str] = []
    unknown: list[str] = []
    known_terms = list(vocabulary.terms)
    class_words = list(vocabulary.class_terms)
    for word in leftover:
        if word in STOP_WORDS or word.isdigit():
            continue
        candidates = {word, singular(word)}
        attr_close = _closest(candidates, known_terms)
        class_close = _closest(candidates, class_words) if class_index is None else None
        if class_close and (not attr_close or class_close[1] >= attr_close[1]):
            set_class(vocabulary.class_terms[class_close[0]], word)
        elif attr_close:
            add_attribute(vocabulary.terms[attr_close[0]], word)
        else:
            unknown.append(word)
            ignored.append(word)

    if not attributes:
        if unknown:
            words = list(dict.fromkeys(unknown))
            hints = []
            any_near = False
            for word in words[:HINTED_WORDS]:
                near = vocabulary.nearest_attributes(word)
                any_near = any_near or bool(near)
                hints.append(f"{clip(word, 30)!r}: {', '.join(near) if near else 'nothing close'}")
            if len(words) > HINTED_WORDS:
                hints.append(f"and {len(words) - HINTED_WORDS} more unknown words")
            message = f"no known attribute in {clip(text)!r}; nearest known attributes: " + (
                "; ".join(hints)
            )
            if not any_near:
                message += f" (known: {', '.join(vocabulary.attribute_names[:15])})"
            raise UserError(message)
        sample = ", ".join(vocabulary.attribute_names[:12])
        raise UserError(
            f"no attribute in {clip(text)!r}: name one, e.g. {sample}"
            if sample
            else "the attribute vocabulary is empty: run `ddsem attributes extract`"
        )
    return ParsedQuery(
        text=text,
        attributes=attributes,
        class_index=class_index,
        class_name=vocabulary.classes[class_index] if class_index is not None else None,
        notes=notes,
        ignored=ignored,
    )


def _is_class_word(word: str, vocabulary: Vocabulary) -> bool:
    return word in vocabulary.class_terms or singular(word) in vocabulary.class_terms


def _closest(words: set[str], terms: list[str], cutoff: float = 0.8) -> tuple[str, float] | None:
    """The closest term to any of ``words`` with difflib ratio >= cutoff, and its ratio."""
    best: tuple[str, float] | None = None
    for word in words:
        for term in difflib.get_close_matches(word, terms, n=1, cutoff=cutoff):
            ratio = difflib.SequenceMatcher(None, word, term).ratio()
            if best is None or ratio > best[1]:
                best = (term, ratio)
    return best


# -- answering a question, from arrays ------------------------------------------------------------


def query_columns(
    labels: np.ndarray,
    test_classes: np.ndarray,
    attribute_names: Sequence[str],
    parsed: ParsedQuery,
) -> tuple[np.ndarray, np.ndarray]:
    """(members, positives) bool (T,): the test images in the question's class filter, and
    those of them with every asked attribute. ``labels`` (T, A) has one column per name of
    ``attribute_names``. Refuses (one line) a question with no positive."""
    column = {name: k for k, name in enumerate(attribute_names)}
    missing = [a for a in parsed.attributes if a not in column]
    if missing:
        raise UserError(f"attribute {missing[0]!r} is not in the vocabulary")
    labels = np.asarray(labels, dtype=bool)
    has_all = labels[:, [column[a] for a in parsed.attributes]].all(axis=1)
    if parsed.class_index is None:
        members = np.ones(len(has_all), dtype=bool)
    else:
        members = np.asarray(test_classes) == parsed.class_index
    positives = has_all & members
    if not positives.any():
        what = " and ".join(repr(a) for a in parsed.attributes)
        if parsed.class_index is None:
            raise UserError(f"no annotated test image has {what}: nothing to rank")
        counts = labels[members].sum(axis=0)
        common = [
            f"{attribute_names[k]} ({int(counts[k])})"
            for k in np.argsort(-counts, kind="stable")[:8]
            if counts[k] > 0
        ]
        raise UserError(
            f"no {parsed.class_name} test image has {what} (0 of {int(members.sum())} annotated); "
            f"{parsed.class_name} attributes with positives: {', '.join(common) or 'none'}"
        )
    return members, positives


@dataclass
class QueryRanking:
    """Distilled images ranked by the AP of their influence ranking for one question."""

    ap: np.ndarray  # (N,) every distilled image's AP among the members
    positive_rate: float  # positives / members
    chance_ap: float  # the exact expected AP of a random ranking of the members
    order: list[int]  # the ``top`` best distilled indices, highest AP first (ties: lower index)
    evidence: list[list[int]]  # per image of ``order``: positions (into T) of its most
    # influenced positives, most influenced first


def rank_for_query(
    influence: np.ndarray,
    members: np.ndarray,
    positives: np.ndarray,
    *,
    top: int,
    images_per_result: int = 0,
) -> QueryRanking:
    """Rank the N distilled images (``influence`` N x T) by how well their influence finds the
    ``positives`` among the ``members`` (both bool (T,)), each with its evidence."""
    ap = average_precision(influence[:, members], positives[members][:, None])[:, 0, 0]
    rate = float(positives.sum() / members.sum())
    chance = float(chance_ap(int(members.sum()), int(positives.sum())))
    order = np.argsort(-ap, kind="stable")[: max(top, 0)].tolist()
    pos_idx = np.flatnonzero(positives)
    evidence = [
        pos_idx[np.argsort(-influence[k, pos_idx], kind="stable")[:images_per_result]].tolist()
        for k in order
    ]
    return QueryRanking(ap=ap, positive_rate=rate, chance_ap=chance, order=order, evidence=evidence)
