"""Attribute scores (PR-AUC of each distilled image per attribute and class filter): writes and
reads, plus the light reads of test images that ranking needs."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, insert
from sqlmodel import col, select

from ddsem.db.engine import Database
from ddsem.db.tables import Annotation, Attribute, AttributeScore, Image


def test_image_keys(
    db: Database, dataset_id: int, split: str = "test"
) -> dict[int, tuple[int, int]]:
    """index -> (Image id, label) of every registered image of a split (no pixels read)."""
    with db.session() as s:
        rows = s.exec(
            select(Image.index, Image.id, Image.label).where(
                Image.dataset_id == dataset_id, Image.split == split
            )
        ).all()
    return {int(i): (int(iid or 0), int(lbl)) for i, iid, lbl in rows}


def annotated_image_ids(db: Database) -> set[int]:
    """Ids of the images that have at least one annotation."""
    with db.session() as s:
        return {int(i) for i in s.exec(select(Annotation.image_id).distinct()).all()}


def image_pngs(db: Database, image_ids: list[int]) -> dict[int, bytes]:
    """Image id -> display PNG, for the ids asked (in chunks: SQL has a variable limit)."""
    out: dict[int, bytes] = {}
    ids = sorted(set(int(i) for i in image_ids))
    with db.session() as s:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for iid, png in s.exec(
                select(Image.id, Image.png).where(col(Image.id).in_(chunk))
            ).all():
                out[int(iid or 0)] = bytes(png)
    return out


def replace_scores(
    db: Database,
    set_id: int,
    scope: str,
    context: str,
    class_filters: list[int],
    rows: list[dict],
) -> int:
    """Store one ranking in one transaction: the old scores of this set, scope, context and
    these class filters go, the new ones come (a re-run replaces, never duplicates)."""
    return replace_scopes(db, set_id, context, class_filters, {scope: rows})[scope]


def replace_scopes(
    db: Database,
    set_id: int,
    context: str,
    class_filters: list[int],
    rows_by_scope: dict[str, list[dict]],
) -> dict[str, int]:
    """``replace_scores`` for several scopes at once (the mean and each seed's), all in one
    transaction; returns the rows stored per scope."""
    with db.session() as s:
        for scope, rows in rows_by_scope.items():
            s.exec(
                delete(AttributeScore).where(
                    AttributeScore.set_id == set_id,
                    AttributeScore.scope == scope,
                    AttributeScore.context == context,
                    col(AttributeScore.class_filter).in_(class_filters),
                )
            )
            if rows:
                s.exec(insert(AttributeScore), params=rows)
    return {scope: len(rows) for scope, rows in rows_by_scope.items()}


@dataclass
class ScoreRow:
    distilled_index: int
    attribute_id: int
    attribute: str
    class_filter: int
    ap: float
    positive_rate: float
    positives: int
    lift: float  # AP / chance AP
    chance_ap: float | None = None  # None: stored before schema version 2 (re-run rank)
    p_value: float | None = None
    q_value: float | None = None
    draws: int | None = None


def read_scores(
    db: Database,
    set_id: int,
    scope: str,
    *,
    context: str = "distilled",
    class_filter: int | None = None,
    distilled_index: int | None = None,
) -> list[ScoreRow]:
    """Stored scores of a set and scope (optionally one class filter or distilled image)."""
    with db.session() as s:
        q = (
            select(
                AttributeScore.distilled_index,
                AttributeScore.attribute_id,
                Attribute.name,
                AttributeScore.class_filter,
                AttributeScore.ap,
                AttributeScore.positive_rate,
                AttributeScore.positives,
                AttributeScore.lift,
                AttributeScore.chance_ap,
                AttributeScore.p_value,
                AttributeScore.q_value,
                AttributeScore.draws,
            )
            .join(Attribute, Attribute.id == AttributeScore.attribute_id)
            .where(
                AttributeScore.set_id == set_id,
                AttributeScore.scope == scope,
                AttributeScore.context == context,
            )
        )
        if class_filter is not None:
            q = q.where(AttributeScore.class_filter == class_filter)
        if distilled_index is not None:
            q = q.where(AttributeScore.distilled_index == distilled_index)
        rows = s.exec(q).all()
    return [ScoreRow(*r) for r in rows]


def score_scopes(db: Database, set_id: int) -> list[str]:
    """The scopes ("seed:S", "mean") that have stored scores for a set."""
    with db.session() as s:
        return sorted(
            s.exec(
                select(AttributeScore.scope).where(AttributeScore.set_id == set_id).distinct()
            ).all()
        )
