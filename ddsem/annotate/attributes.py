"""The attribute vocabulary: candidate attributes from annotators' answers, and the matching
that decides which image has which attribute.

Both sides read text the same way: lower case, words of two or more letters, English stop words
dropped (scikit-learn's list, plus the words every description repeats: "object",
"background", "image", ...), clause by clause (punctuation ends a phrase). A candidate is a
unigram or bigram of those words that recurs in the answers to one prompt; an image has an
attribute when the answer to the attribute's prompt contains its name or a synonym as whole
words in order ("blue sky" matches "a clear blue sky", never "bluesky" or "blue skyline").
Negation is not understood: "no sky" mentions sky.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, partial

from ddsem.config import AttributeConfig

# Words every description repeats: they name the prompt, not the image.
DESCRIPTION_WORDS = frozenset(
    {
        "object",
        "objects",
        "background",
        "foreground",
        "image",
        "picture",
        "photo",
        "photograph",
        "describe",
        "shows",
        "depicts",
        "features",
        "appears",
        "visible",
        "scene",
        "main",
    }
)
# Content words in scikit-learn's English stop list that name things in images.
KEPT_WORDS = frozenset({"fire", "bill"})
# Prompt kinds in the order they claim a plain attribute name (see ``extract_candidates``).
KIND_ORDER = ("object", "background")


@cache
def stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset((ENGLISH_STOP_WORDS | DESCRIPTION_WORDS) - KEPT_WORDS)


_CLAUSE_BREAK = re.compile(r"[.,;:!?()\[\]\n]+")
_WORD = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern


def clauses(text: str) -> list[list[str]]:
    """The words matching looks at, clause by clause (split at punctuation; lower case; stop
    words removed), so "blue. There is sky" never reads as "blue sky"."""
    stop = stop_words()
    out = []
    for part in _CLAUSE_BREAK.split(text.lower()):
        words = [w for w in _WORD.findall(part) if w not in stop]
        if words:
            out.append(words)
    return out


def tokenize(text: str) -> list[str]:
    """All the words of ``text`` that matching looks at, in order."""
    return [w for clause in clauses(text) for w in clause]


def phrase(text: str) -> str:
    """A name or synonym in the form matching uses; "" when nothing but stop words remain."""
    return " ".join(tokenize(text))


def terms(text: str, longest: int) -> list[str]:
    """Every n-gram (n <= longest) inside each clause: the features of extraction and matching."""
    return [
        " ".join(words[i : i + n])
        for words in clauses(text)
        for n in range(1, longest + 1)
        for i in range(len(words) - n + 1)
    ]


def _kind_order(kinds: Iterable[str]) -> list[str]:
    kinds = set(kinds)
    return [k for k in KIND_ORDER if k in kinds] + sorted(kinds - set(KIND_ORDER))


@dataclass
class Candidate:
    """An attribute proposed by ``extract_candidates``."""

    name: str
    kind: str  # the prompt whose answers it is matched in
    document_frequency: int  # answers of that prompt that contain it
    synonyms: list[str] = field(default_factory=list)


def extract_candidates(
    responses: dict[str, list[str]], config: AttributeConfig = AttributeConfig()
) -> list[Candidate]:
    """Recurring unigrams and bigrams per prompt kind (``responses``: kind -> answers).

    A term kept for several kinds gets one attribute per kind, because attribute names are
    unique: the first kind in ``KIND_ORDER`` keeps the plain name ("blue": a blue object), the
    others are named "<term> <kind>" with the term as synonym ("blue background").
    """
    from sklearn.feature_extraction.text import CountVectorizer

    if config.min_df < 1:
        raise ValueError("min_df must be at least 1")
    order = _kind_order(responses)
    out: dict[str, Candidate] = {}
    for kind in order:
        docs = [r for r in responses[kind] if r.strip()]
        if len(docs) < config.min_df:
            continue
        vectorizer = CountVectorizer(
            analyzer=partial(terms, longest=config.ngram_max),
            min_df=config.min_df,
            max_features=config.max_terms,
            binary=True,
        )
        try:
            counts = vectorizer.fit_transform(docs)
        except ValueError:  # nothing but stop words, or no term reaches min_df
            continue
        df = counts.sum(axis=0).A1
        names = vectorizer.get_feature_names_out()
        for k in sorted(range(len(names)), key=lambda k: (-df[k], names[k])):
            term = str(names[k])
            if term not in out:
                out[term] = Candidate(term, kind, int(df[k]))
                continue
            name = f"{term} {kind}"
            if name in out:  # already a candidate of this kind: the term becomes its synonym
                if out[name].kind == kind and term not in out[name].synonyms:
                    out[name].synonyms.append(term)
                continue
            out[name] = Candidate(name, kind, int(df[k]), [term])
    return sorted(out.values(), key=lambda c: (order.index(c.kind), -c.document_frequency, c.name))


def label_pairs(
    responses: list[tuple[int, str, str]], vocabulary: list[tuple[int, str, list[str]]]
) -> set[tuple[int, int]]:
    """Which image has which attribute.

    ``responses``: (image id, prompt name, answer); ``vocabulary``: (attribute id, kind, [name,
    *synonyms]). An image has an attribute when one of its answers to the attribute's prompt
    (any prompt for kind "any") contains one of the attribute's phrases as whole words.
    """
    by_kind: dict[str, dict[str, set[int]]] = {}
    longest = 1
    for attribute_id, kind, phrases in vocabulary:
        for text in phrases:
            p = phrase(text)
            if p:
                by_kind.setdefault(kind, {}).setdefault(p, set()).add(attribute_id)
                longest = max(longest, len(p.split()))
    anywhere = by_kind.get("any", {})
    pairs: set[tuple[int, int]] = set()
    for image_id, prompt_name, text in responses:
        table = by_kind.get(prompt_name, {})
        if not table and not anywhere:
            continue
        for gram in set(terms(text, longest)):
            for attribute_id in table.get(gram, ()):
                pairs.add((image_id, attribute_id))
            for attribute_id in anywhere.get(gram, ()):
                pairs.add((image_id, attribute_id))
    return pairs
