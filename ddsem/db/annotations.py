"""Annotations, the attribute vocabulary and image-attribute labels."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from sqlmodel import select

from ddsem.db.engine import Database
from ddsem.db.tables import Attribute, ImageAttribute


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
