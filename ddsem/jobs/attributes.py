"""Jobs ``attributes extract|list|add|remove|merge``: the vocabulary of semantic attributes.

Every change to the vocabulary recomputes which image has which attribute, in the same
transaction, from the answers the vocabulary was extracted from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ddsem.config import AttributeConfig
from ddsem.errors import UserError
from ddsem.jobs.common import at_least, check, clip

if TYPE_CHECKING:
    from ddsem.db import Database
    from ddsem.db.annotations import AnnotationSource, AttributeInfo
    from ddsem.jobs.workspace import Workspace

DEFAULTS = AttributeConfig()

__all__ = [
    "AddRequest",
    "AttributeList",
    "ExtractRequest",
    "ExtractResult",
    "MergeRequest",
    "add",
    "choose_source",
    "extract",
    "list_attributes",
    "merge",
    "remove",
]


def choose_source(db: Database, annotator: str | None, model: str | None) -> AnnotationSource:
    """The one (annotator, model) whose answers a vocabulary is extracted from."""
    from ddsem.db.annotations import annotation_sources

    sources = annotation_sources(db)
    if not sources:
        raise UserError("no annotations yet: run `ddsem annotate` first")
    chosen = [
        s
        for s in sources
        if (annotator is None or s.annotator == annotator) and (model is None or s.model == model)
    ]
    listing = "; ".join(f"--annotator {s.annotator} --model {s.model}" for s in sources)
    if not chosen:
        raise UserError(f"no annotations from that annotator/model; stored: {listing}")
    if len(chosen) > 1:
        raise UserError(
            f"answers come from {len(chosen)} annotators or models: choose one ({listing})"
        )
    return chosen[0]


def kinds(db: Database) -> list[str]:
    """The prompt kinds an attribute can be matched in: object, background and every prompt
    with stored answers."""
    from ddsem.db.annotations import annotation_sources

    found = {"object", "background"}
    for s in annotation_sources(db):
        found.update(s.prompts)
    return sorted(found)


# -- extract --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractRequest:
    min_df: int = DEFAULTS.min_df
    max_terms: int = DEFAULTS.max_terms
    annotator: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        at_least(self.min_df, 1, "--min-df")
        at_least(self.max_terms, 1, "--max-terms")


@dataclass
class ExtractResult:
    annotator: str
    model: str
    candidates: int
    answers: int
    added: int
    kept: int
    removed: int
    attributes: list[AttributeInfo] = field(default_factory=list)  # the vocabulary after

    def as_json(self) -> dict[str, Any]:
        return {
            "annotator": self.annotator,
            "model": self.model,
            "candidates": self.candidates,
            "answers": self.answers,
            "added": self.added,
            "kept": self.kept,
            "removed": self.removed,
            "attributes": [_attribute_json(a) for a in self.attributes],
        }


def extract(ws: Workspace, request: ExtractRequest) -> ExtractResult:
    """Candidate attributes (recurring words and word pairs of the answers, per prompt) replace
    the extracted part of the vocabulary; attributes a user added or merged are kept."""
    from ddsem.annotate.attributes import extract_candidates, label_pairs
    from ddsem.db import annotations as store

    source = choose_source(ws.db, request.annotator, request.model)
    responses: dict[str, list[str]] = {}
    for row in store.read_annotations(ws.db, source.annotator, source.model):
        responses.setdefault(row.prompt_name, []).append(row.response)
    config = AttributeConfig(
        min_df=request.min_df, max_terms=request.max_terms, ngram_max=DEFAULTS.ngram_max
    )
    candidates = extract_candidates(responses, config)
    if not candidates:
        raise UserError(
            f"no word occurs in {request.min_df} answers of {source.annotator} ({source.model}); "
            "lower --min-df"
        )
    added, kept, removed = store.replace_extracted(
        ws.db,
        [(c.name, c.kind, c.synonyms) for c in candidates],
        (source.annotator, source.model),
        label_pairs,
    )
    return ExtractResult(
        source.annotator,
        source.model,
        len(candidates),
        sum(map(len, responses.values())),
        added,
        kept,
        removed,
        store.list_attributes(ws.db),
    )


# -- list -----------------------------------------------------------------------------------------


def _attribute_json(a: AttributeInfo) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "kind": a.kind,
        "synonyms": a.synonyms,
        "source": a.source,
        "images": a.document_frequency,
    }


@dataclass
class AttributeList:
    attributes: list[AttributeInfo]
    source: tuple[str, str] | None  # (annotator, model) the vocabulary is matched against

    def as_json(self) -> list[dict[str, Any]]:
        return [_attribute_json(a) for a in self.attributes]


def list_attributes(ws: Workspace, kind: str | None = None) -> AttributeList:
    """The vocabulary (only attributes of ``kind`` when given), with the answers it matches."""
    from ddsem.db.annotations import attribute_source
    from ddsem.db.annotations import list_attributes as stored

    every = stored(ws.db)
    if kind is not None:
        known = sorted({"any", *kinds(ws.db), *(a.kind for a in every)})
        if kind not in known:
            raise UserError(f"unknown kind {clip(repr(kind))}: use {', '.join(known)}")
    attrs = [a for a in every if kind is None or a.kind == kind]
    return AttributeList(attrs, attribute_source(ws.db))


# -- add, remove, merge ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AddRequest:
    name: str
    kind: str = "any"  # which prompt's answers to match: object, background, ... or any
    synonyms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from ddsem.annotate.attributes import phrase

        object.__setattr__(self, "name", self.name.strip())
        object.__setattr__(self, "synonyms", tuple(s.strip() for s in self.synonyms if s.strip()))
        for term in [self.name, *self.synonyms]:
            check(
                bool(phrase(term)),
                f"{term!r} has no word that matching can see (common words such as 'the', "
                "'object' or 'background' are ignored)",
            )


def add(ws: Workspace, request: AddRequest) -> AttributeInfo:
    """Add an attribute by hand; images are labelled from the stored answers at once."""
    from ddsem.annotate.attributes import label_pairs
    from ddsem.db.annotations import add_attribute

    known = kinds(ws.db)
    if request.kind != "any" and request.kind not in known:
        raise UserError(
            f"unknown kind {clip(repr(request.kind))}: use any or a prompt name "
            f"({', '.join(known)})"
        )
    return add_attribute(ws.db, request.name, request.kind, list(request.synonyms), label_pairs)


def remove(ws: Workspace, names: tuple[str, ...] | list[str]) -> int:
    """Remove attributes (with their labels and scores); returns how many."""
    from ddsem.annotate.attributes import label_pairs
    from ddsem.db.annotations import remove_attributes

    return remove_attributes(ws.db, list(dict.fromkeys(names)), label_pairs)


@dataclass(frozen=True)
class MergeRequest:
    target: str  # the attribute that stays
    others: tuple[str, ...]  # folded into it as synonyms (duplicates and the target dropped)

    def __post_init__(self) -> None:
        others = tuple(o for o in dict.fromkeys(self.others) if o != self.target)
        check(bool(others), "merge needs at least one other attribute than the target")
        object.__setattr__(self, "others", others)


def merge(ws: Workspace, request: MergeRequest) -> AttributeInfo:
    """Make synonyms: an image has the target when its answers mention it or any of the others."""
    from ddsem.annotate.attributes import label_pairs
    from ddsem.db.annotations import merge_attributes

    return merge_attributes(ws.db, request.target, list(request.others), label_pairs)
