"""Annotations, the attribute vocabulary and image-attribute labels."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, func, insert
from sqlmodel import Session, col, select

from ddsem.db.engine import Database
from ddsem.db.retry import retry_on_conflict
from ddsem.db.tables import (
    Annotation,
    Attribute,
    AttributeScore,
    Dataset,
    Image,
    ImageAttribute,
    Meta,
)
from ddsem.errors import UserError


@dataclass
class AttributeInfo:
    id: int
    name: str
    kind: str
    synonyms: list[str]
    source: str
    document_frequency: int


def _attr(a: Attribute) -> AttributeInfo:
    return AttributeInfo(
        id=a.id or 0,
        name=a.name,
        kind=a.kind,
        synonyms=json.loads(a.synonyms_json),
        source=a.source,
        document_frequency=a.document_frequency,
    )


def list_attributes(db: Database) -> list[AttributeInfo]:
    with db.session() as s:
        return [_attr(a) for a in s.exec(select(Attribute).order_by(Attribute.name)).all()]


def attribute_labels(db: Database, image_ids: list[int]) -> tuple[list[AttributeInfo], np.ndarray]:
    """(vocabulary, bool matrix len(image_ids) x A): does image i have attribute a."""
    attrs = list_attributes(db)
    col = {a.id: k for k, a in enumerate(attrs)}
    row = {iid: k for k, iid in enumerate(image_ids)}
    labels = np.zeros((len(image_ids), len(attrs)), dtype=bool)
    with db.session() as s:
        pairs = s.exec(select(ImageAttribute.image_id, ImageAttribute.attribute_id)).all()
    for image_id, attribute_id in pairs:
        if image_id in row and attribute_id in col:
            labels[row[image_id], col[attribute_id]] = True
    return attrs, labels


# -- annotations ---------------------------------------------------------------------------------

# (responses [(image_id, prompt_name, text)], vocabulary [(attribute_id, kind, [name, *synonyms])])
# -> {(image_id, attribute_id)}: how ``ddsem.annotate.attributes`` matches attributes to answers.
# Passed in by the caller so this module stays free of compute imports.
Labeler = Callable[
    [list[tuple[int, str, str]], list[tuple[int, str, list[str]]]], set[tuple[int, int]]
]

SOURCE_KEY = "attribute_source"  # Meta key: which annotations the vocabulary is matched against


@dataclass
class AnnotationSource:
    """The answers of one annotator and model: how many images and prompts."""

    annotator: str
    model: str
    prompts: dict[str, int]  # prompt name -> answers
    images: int

    def as_json(self) -> dict:
        return dict(self.__dict__)


def annotation_sources(db: Database) -> list[AnnotationSource]:
    """Every (annotator, model) with answers, its answers per prompt and its image count."""
    with db.session() as s:
        per_prompt = s.exec(
            select(
                Annotation.annotator, Annotation.model, Annotation.prompt_name, func.count()
            ).group_by(Annotation.annotator, Annotation.model, Annotation.prompt_name)
        ).all()
        images = s.exec(
            select(
                Annotation.annotator,
                Annotation.model,
                func.count(func.distinct(Annotation.image_id)),
            ).group_by(Annotation.annotator, Annotation.model)
        ).all()
    out = {(a, m): AnnotationSource(a, m, {}, int(n)) for a, m, n in images}
    for annotator, model, prompt, answers in per_prompt:
        out[(annotator, model)].prompts[prompt] = int(answers)
    return sorted(out.values(), key=lambda src: (src.annotator, src.model))


def image_ids(db: Database, dataset: str, split: str) -> dict[int, int]:
    """index -> Image id of the registered images of a data set's split (no pixels read)."""
    with db.session() as s:
        rows = s.exec(
            select(Image.index, Image.id)
            .join(Dataset, Dataset.id == Image.dataset_id)
            .where(Dataset.name == dataset, Image.split == split)
        ).all()
    return {int(i): int(iid or 0) for i, iid in rows}


def stored_prompts(db: Database, annotator: str, model: str) -> dict[str, str]:
    """Prompt name -> the prompt text already answered by this annotator and model."""
    with db.session() as s:
        rows = s.exec(
            select(Annotation.prompt_name, Annotation.prompt)
            .where(Annotation.annotator == annotator, Annotation.model == model)
            .distinct()
        ).all()
    return {name: text for name, text in rows}


def answered(
    db: Database, image_ids: list[int], annotator: str, model: str
) -> set[tuple[int, str]]:
    """The (image id, prompt name) pairs this annotator and model have already answered."""
    wanted = set(image_ids)
    with db.session() as s:
        rows = s.exec(
            select(Annotation.image_id, Annotation.prompt_name).where(
                Annotation.annotator == annotator, Annotation.model == model
            )
        ).all()
    return {(int(i), p) for i, p in rows if i in wanted}


def add_annotations(
    db: Database, annotator: str, model: str, rows: list[tuple[int, str, str, str]]
) -> int:
    """Store one batch of answers (image id, prompt name, prompt, response) in one transaction;
    answers already stored are skipped, so a re-run never duplicates. Returns rows written."""
    if not rows:
        return 0
    ids = sorted({r[0] for r in rows})

    def write() -> int:
        with db.session() as s:
            have = set(
                s.exec(
                    select(Annotation.image_id, Annotation.prompt_name).where(
                        Annotation.annotator == annotator,
                        Annotation.model == model,
                        col(Annotation.image_id).in_(ids),
                    )
                ).all()
            )
            new = [r for r in rows if (r[0], r[1]) not in have]
            for image_id, prompt_name, prompt, response in new:
                s.add(
                    Annotation(
                        image_id=image_id,
                        prompt_name=prompt_name,
                        prompt=prompt,
                        annotator=annotator,
                        model=model,
                        response=response,
                    )
                )
        return len(new)

    return retry_on_conflict(write)


@dataclass
class AnnotationRow:
    image_id: int
    split: str
    index: int
    label: int
    prompt_name: str
    annotator: str
    model: str
    response: str


def read_annotations(
    db: Database,
    annotator: str | None = None,
    model: str | None = None,
    image_ids: list[int] | None = None,
) -> list[AnnotationRow]:
    """Stored answers with their image's split, index and label (optionally filtered)."""
    with db.session() as s:
        q = select(
            Annotation.image_id,
            Image.split,
            Image.index,
            Image.label,
            Annotation.prompt_name,
            Annotation.annotator,
            Annotation.model,
            Annotation.response,
        ).join(Image, Image.id == Annotation.image_id)
        if annotator is not None:
            q = q.where(Annotation.annotator == annotator)
        if model is not None:
            q = q.where(Annotation.model == model)
        rows = s.exec(q.order_by(Image.split, Image.index, Annotation.prompt_name)).all()
    wanted = None if image_ids is None else set(image_ids)
    return [AnnotationRow(*r) for r in rows if wanted is None or r[0] in wanted]


# -- the vocabulary and its labels ---------------------------------------------------------------


def attribute_source(db: Database) -> tuple[str, str] | None:
    """(annotator, model) whose answers the vocabulary is matched against; None: all answers."""
    with db.session() as s:
        row = s.get(Meta, SOURCE_KEY)
    if row is None:
        return None
    data = json.loads(row.value)
    return data["annotator"], data["model"]


def _responses(s: Session) -> list[tuple[int, str, str]]:
    q = select(Annotation.image_id, Annotation.prompt_name, Annotation.response)
    row = s.get(Meta, SOURCE_KEY)
    if row is not None:
        data = json.loads(row.value)
        q = q.where(Annotation.annotator == data["annotator"], Annotation.model == data["model"])
    return [(int(i), p, r) for i, p, r in s.exec(q).all()]


def _relabel(s: Session, labeler: Labeler) -> int:
    """Recompute ImageAttribute from the answers and the vocabulary (inside the caller's
    transaction); scores of attributes whose labels changed are stale, so they go too."""
    s.flush()
    attrs = s.exec(select(Attribute)).all()
    vocabulary = [(a.id or 0, a.kind, [a.name, *json.loads(a.synonyms_json)]) for a in attrs]
    new = labeler(_responses(s), vocabulary)
    old = {
        (int(i), int(a))
        for i, a in s.exec(select(ImageAttribute.image_id, ImageAttribute.attribute_id)).all()
    }
    changed = {a for _, a in old ^ new}
    if changed:
        s.exec(delete(ImageAttribute).where(col(ImageAttribute.attribute_id).in_(sorted(changed))))
        s.exec(delete(AttributeScore).where(col(AttributeScore.attribute_id).in_(sorted(changed))))
        rows = [{"image_id": i, "attribute_id": a} for i, a in new if a in changed]
        if rows:
            s.exec(insert(ImageAttribute), params=rows)
    counts: dict[int, int] = {}
    for _, attribute_id in new:
        counts[attribute_id] = counts.get(attribute_id, 0) + 1
    for a in attrs:
        a.document_frequency = counts.get(a.id or 0, 0)
        s.add(a)
    return len(new)


def relabel(db: Database, labeler: Labeler) -> int:
    """Recompute every image-attribute label (after new annotations). Returns label count."""
    with db.session() as s:
        return _relabel(s, labeler)


def _taken(attrs: list[Attribute]) -> dict[str, str]:
    """Every name and synonym in use -> the attribute that holds it."""
    out = {a.name: a.name for a in attrs}
    for a in attrs:
        for term in json.loads(a.synonyms_json):
            out.setdefault(term, a.name)
    return out


def replace_extracted(
    db: Database,
    candidates: list[tuple[str, str, list[str]]],
    source: tuple[str, str] | None,
    labeler: Labeler,
) -> tuple[int, int, int]:
    """Make the extracted part of the vocabulary ``candidates`` (name, kind, synonyms), keep
    attributes a user added or merged, relabel; one transaction. Returns (added, kept, removed).

    An extracted attribute that stays keeps its id; a candidate already named by a user's
    attribute (as its name or a synonym) is skipped.
    """
    with db.session() as s:
        if source is None:
            old_source = s.get(Meta, SOURCE_KEY)
            if old_source is not None:
                s.delete(old_source)
        else:
            s.merge(
                Meta(key=SOURCE_KEY, value=json.dumps({"annotator": source[0], "model": source[1]}))
            )
        attrs = list(s.exec(select(Attribute)).all())
        manual = [a for a in attrs if a.source != "extracted"]
        taken = _taken(manual)
        extracted = {a.name: a for a in attrs if a.source == "extracted"}
        wanted = {}
        for name, kind, synonyms in candidates:
            if name in taken or any(t in taken for t in synonyms):
                continue
            wanted[name] = (kind, synonyms)
        removed = [a for n, a in extracted.items() if n not in wanted]
        for a in removed:
            _drop(s, a)
        s.flush()
        added = kept = 0
        for name, (kind, synonyms) in wanted.items():
            row = extracted.get(name)
            if row is None:
                row = Attribute(name=name, kind=kind, source="extracted")
                added += 1
            else:
                kept += 1
            row.kind = kind
            row.synonyms_json = json.dumps(synonyms)
            s.add(row)
        _relabel(s, labeler)
        return added, kept, len(removed)


def add_attribute(
    db: Database, name: str, kind: str, synonyms: list[str], labeler: Labeler
) -> AttributeInfo:
    """A user's attribute (source "manual"); refuses a name or synonym already in use."""
    with db.session() as s:
        taken = _taken(list(s.exec(select(Attribute)).all()))
        for term in [name, *synonyms]:
            if term in taken:
                raise UserError(
                    f"{term!r} is already in the vocabulary (attribute {taken[term]!r})"
                )
        row = Attribute(name=name, kind=kind, synonyms_json=json.dumps(synonyms), source="manual")
        s.add(row)
        _relabel(s, labeler)
        return _attr(row)


def _drop(s: Session, a: Attribute) -> None:
    """Delete an attribute with its labels and scores (explicitly: not every database cascades)."""
    s.exec(delete(ImageAttribute).where(ImageAttribute.attribute_id == a.id))
    s.exec(delete(AttributeScore).where(AttributeScore.attribute_id == a.id))
    s.delete(a)


def _find(s: Session, names: list[str]) -> list[Attribute]:
    rows = {
        a.name: a for a in s.exec(select(Attribute).where(col(Attribute.name).in_(names))).all()
    }
    missing = [n for n in names if n not in rows]
    if missing:
        raise UserError(
            f"no attribute named {', '.join(repr(n) for n in missing)}; see `ddsem attributes list`"
        )
    return [rows[n] for n in names]


def remove_attributes(db: Database, names: list[str], labeler: Labeler) -> int:
    """Drop attributes (their labels and scores go with them)."""
    with db.session() as s:
        rows = _find(s, names)
        for a in rows:
            _drop(s, a)
        _relabel(s, labeler)
        return len(rows)


def merge_attributes(
    db: Database, target: str, others: list[str], labeler: Labeler
) -> AttributeInfo:
    """Fold ``others`` into ``target`` as synonyms ("sky" <- "blue sky"): one attribute that an
    image has when its answers mention any of them. The result counts as a user's attribute."""
    with db.session() as s:
        head, *rest = _find(s, [target, *others])
        for a in rest:
            if a.kind != head.kind:
                raise UserError(
                    f"cannot merge {a.name!r} ({a.kind}) into {head.name!r} ({head.kind}): "
                    "they are matched in different prompts"
                )
        synonyms = json.loads(head.synonyms_json)
        for a in rest:
            for term in [a.name, *json.loads(a.synonyms_json)]:
                if term != head.name and term not in synonyms:
                    synonyms.append(term)
            _drop(s, a)
        head.synonyms_json = json.dumps(synonyms)
        head.source = "manual"
        s.add(head)
        _relabel(s, labeler)
        return _attr(head)
