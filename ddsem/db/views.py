"""Read-only queries behind the terminal UI: short sessions, small result objects, paged lists.

Every function opens its own short transaction (the database may be written by a running
``ddsem influence`` at the same time; WAL lets these reads proceed) and returns plain
dataclasses holding PNG bytes, never ORM rows. Blob columns are selected only where needed.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from sqlalchemy import distinct, func
from sqlmodel import select

from ddsem.config import SignificanceConfig
from ddsem.db.engine import Database
from ddsem.db.influence import InfluenceRunInfo, list_runs
from ddsem.db.tables import (
    Annotation,
    Attribute,
    AttributeScore,
    Dataset,
    DistilledImage,
    DistilledSet,
    Image,
    InfluenceRun,
    InfluenceTopK,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a longer list: ``items`` are entries ``offset .. offset+len(items)-1``."""

    items: list[T]
    total: int
    offset: int
    limit: int


# -- sets ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetOverview:
    """A distilled set and what exists for it in the database."""

    id: int
    name: str
    method: str
    dataset: str
    ipc: int
    num_images: int
    seeds: tuple[int, ...] = ()  # complete influence runs, distilled context
    real_context_seeds: tuple[int, ...] = ()  # complete influence runs, real context
    running_runs: int = 0  # runs still being written
    accuracy: float | None = None  # mean retrained accuracy of the complete distilled runs
    annotated_images: int = 0  # real images of the set's data set with any annotation
    score_scopes: tuple[str, ...] = ()  # AttributeScore scopes ("mean", "seed:0", ...)
    score_count: int = 0


def sets_overview(db: Database) -> list[SetOverview]:
    """Every distilled set with its influence runs, accuracy, annotations and scores."""
    with db.session() as s:
        sets = s.exec(
            select(
                DistilledSet.id,
                DistilledSet.name,
                DistilledSet.method,
                DistilledSet.dataset,
                DistilledSet.ipc,
                DistilledSet.num_images,
            ).order_by(DistilledSet.id)
        ).all()
        runs = s.exec(
            select(
                InfluenceRun.set_id,
                InfluenceRun.seed,
                InfluenceRun.context,
                InfluenceRun.status,
                InfluenceRun.full_accuracy,
            ).order_by(InfluenceRun.seed)
        ).all()
        annotated = dict(
            s.exec(
                select(Dataset.name, func.count(distinct(Annotation.image_id)))
                .join(Image, Image.dataset_id == Dataset.id)
                .join(Annotation, Annotation.image_id == Image.id)
                .group_by(Dataset.name)
            ).all()
        )
        scores = s.exec(
            select(AttributeScore.set_id, AttributeScore.scope, func.count())
            .group_by(AttributeScore.set_id, AttributeScore.scope)
            .order_by(AttributeScore.scope)
        ).all()

    seeds: dict[int, list[int]] = defaultdict(list)
    real_seeds: dict[int, list[int]] = defaultdict(list)
    running: dict[int, int] = defaultdict(int)
    accuracies: dict[int, list[float]] = defaultdict(list)
    for set_id, seed, context, status, accuracy in runs:
        if status != "complete":
            running[set_id] += 1
        elif context == "distilled":
            seeds[set_id].append(seed)
            if accuracy is not None:
                accuracies[set_id].append(accuracy)
        else:
            real_seeds[set_id].append(seed)
    scopes: dict[int, list[str]] = defaultdict(list)
    counts: dict[int, int] = defaultdict(int)
    for set_id, scope, count in scores:
        scopes[set_id].append(scope)
        counts[set_id] += count

    return [
        SetOverview(
            id=set_id,
            name=name,
            method=method,
            dataset=dataset,
            ipc=ipc,
            num_images=num_images,
            seeds=tuple(seeds[set_id]),
            real_context_seeds=tuple(real_seeds[set_id]),
            running_runs=running[set_id],
            accuracy=float(np.mean(accuracies[set_id])) if accuracies[set_id] else None,
            annotated_images=int(annotated.get(dataset, 0)),
            score_scopes=tuple(scopes[set_id]),
            score_count=counts[set_id],
        )
        for set_id, name, method, dataset, ipc, num_images in sets
    ]


def set_overview(db: Database, set_id: int) -> SetOverview | None:
    return next((s for s in sets_overview(db) if s.id == set_id), None)


def class_names(db: Database, dataset: str) -> list[str]:
    """The data set's class names in label order (CIFAR-10's when the data set is not stored)."""
    with db.session() as s:
        row = s.exec(select(Dataset.classes_json).where(Dataset.name == dataset)).first()
    if row is not None:
        return list(json.loads(row))
    if dataset == "cifar10":
        from ddsem.data.names import CIFAR10_CLASSES

        return list(CIFAR10_CLASSES)
    return []


def class_name(classes: Sequence[str], label: int) -> str:
    return classes[label] if 0 <= label < len(classes) else f"class {label}"


# -- distilled images ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageView:
    """A distilled image for display: its index in the set, label and un-normalised PNG."""

    index: int
    label: int
    class_name: str
    png: bytes


def distilled_images(
    db: Database, set_id: int, offset: int = 0, limit: int | None = None
) -> Page[ImageView]:
    """A page of a set's distilled images, in index order."""
    with db.session() as s:
        dataset = s.exec(select(DistilledSet.dataset).where(DistilledSet.id == set_id)).first()
        total = s.exec(
            select(func.count()).select_from(DistilledImage).where(DistilledImage.set_id == set_id)
        ).one()
        q = (
            select(DistilledImage.index, DistilledImage.label, DistilledImage.png)
            .where(DistilledImage.set_id == set_id)
            .order_by(DistilledImage.index)
            .offset(offset)
        )
        if limit is not None:
            q = q.limit(limit)
        rows = s.exec(q).all()
    classes = class_names(db, dataset) if dataset else []
    items = [
        ImageView(int(i), int(lbl), class_name(classes, int(lbl)), bytes(png))
        for i, lbl, png in rows
    ]
    return Page(items, int(total), offset, limit if limit is not None else len(items))


def distilled_image(db: Database, set_id: int, index: int) -> ImageView | None:
    page = distilled_images_at(db, set_id, [index])
    return page[0] if page else None


def distilled_images_at(db: Database, set_id: int, indices: Sequence[int]) -> list[ImageView]:
    """Specific distilled images of a set (in index order), e.g. the rows of a query answer."""
    with db.session() as s:
        dataset = s.exec(select(DistilledSet.dataset).where(DistilledSet.id == set_id)).first()
        rows = s.exec(
            select(DistilledImage.index, DistilledImage.label, DistilledImage.png)
            .where(DistilledImage.set_id == set_id, DistilledImage.index.in_(list(indices)))
            .order_by(DistilledImage.index)
        ).all()
    classes = class_names(db, dataset) if dataset else []
    return [
        ImageView(int(i), int(lbl), class_name(classes, int(lbl)), bytes(png))
        for i, lbl, png in rows
    ]


# -- influence -----------------------------------------------------------------------------------


def complete_runs(
    db: Database, set_id: int, context: str = "distilled", estimator: str | None = "loo"
) -> list[InfluenceRunInfo]:
    """The complete influence runs of a set in one context, by seed (exact LOO's by default;
    ``estimator`` None: every estimator's, by estimator then seed)."""
    return list_runs(db, set_id, context=context, complete_only=True, estimator=estimator)


@dataclass(frozen=True)
class InfluencedImage:
    """A real test image among the most influenced by one distilled image."""

    rank: int
    test_index: int
    label: int
    class_name: str
    value: float
    png: bytes | None  # None when the image was never registered in the database


def top_influenced(
    db: Database, run_id: int, distilled_index: int, offset: int = 0, limit: int | None = None
) -> Page[InfluencedImage]:
    """A page of the run's top-k table for one distilled image, with the test images' PNGs."""
    with db.session() as s:
        run = s.exec(
            select(InfluenceRun.test_split, DistilledSet.dataset)
            .join(DistilledSet, DistilledSet.id == InfluenceRun.set_id)
            .where(InfluenceRun.id == run_id)
        ).first()
        if run is None:
            return Page([], 0, offset, limit or 0)
        split, dataset = run
        total = s.exec(
            select(func.count())
            .select_from(InfluenceTopK)
            .where(InfluenceTopK.run_id == run_id, InfluenceTopK.distilled_index == distilled_index)
        ).one()
        q = (
            select(InfluenceTopK.rank, InfluenceTopK.test_index, InfluenceTopK.test_label,
                   InfluenceTopK.value)
            .where(InfluenceTopK.run_id == run_id, InfluenceTopK.distilled_index == distilled_index)
            .order_by(InfluenceTopK.rank)
            .offset(offset)
        )  # fmt: skip
        if limit is not None:
            q = q.limit(limit)
        top = s.exec(q).all()
        indices = [int(t[1]) for t in top]
        pngs = dict(
            s.exec(
                select(Image.index, Image.png)
                .join(Dataset, Dataset.id == Image.dataset_id)
                .where(Dataset.name == dataset, Image.split == split, Image.index.in_(indices))
            ).all()
        )
    classes = class_names(db, dataset)
    items = [
        InfluencedImage(
            rank=int(rank),
            test_index=int(index),
            label=int(label),
            class_name=class_name(classes, int(label)),
            value=float(value),
            png=bytes(pngs[index]) if index in pngs else None,
        )
        for rank, index, label, value in top
    ]
    return Page(items, int(total), offset, limit if limit is not None else len(items))


# -- attribute scores ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreView:
    """One AttributeScore row with its attribute's name. The chance AP, p- and q-value are None
    in scores stored before ``ddsem rank`` computed them."""

    attribute_id: int
    attribute: str
    kind: str
    scope: str
    context: str
    class_filter: int
    ap: float
    lift: float  # AP / chance AP
    positives: int
    positive_rate: float
    chance_ap: float | None = None  # the expected AP of a random ranking
    p_value: float | None = None  # one-sided permutation p-value of the AP
    q_value: float | None = None  # Benjamini-Hochberg over the set's scores at this scope
    draws: int | None = None  # null draws behind p (p >= 1 / (draws + 1))

    @property
    def significant(self) -> bool | None:
        """q < SignificanceConfig.alpha; None without a q-value."""
        if self.q_value is None or not math.isfinite(self.q_value):
            return None
        return self.q_value < SignificanceConfig.alpha


@dataclass(frozen=True)
class ScoreOptions:
    """Which score scopes and class filters exist for one distilled image."""

    scopes: list[str] = field(default_factory=list)  # "mean" first, then seeds in order
    class_filters: list[int] = field(default_factory=list)  # -1 (all test images) first


def _scope_order(scope: str) -> tuple[int, str, int, int, str]:
    """Exact LOO's scopes first ("mean", then seeds in order), then each estimator's."""
    estimator, _, rest = scope.rpartition("/")
    head = (0 if not estimator else 1, estimator)
    if rest == "mean":
        return (*head, 0, 0, scope)
    if rest.startswith("seed:") and rest[5:].lstrip("-").isdigit():
        return (*head, 1, int(rest[5:]), scope)
    return (*head, 2, 0, scope)


def score_options(db: Database, set_id: int, distilled_index: int) -> ScoreOptions:
    with db.session() as s:
        pairs = s.exec(
            select(AttributeScore.scope, AttributeScore.class_filter)
            .where(
                AttributeScore.set_id == set_id,
                AttributeScore.distilled_index == distilled_index,
            )
            .distinct()
        ).all()
    scopes = sorted({p[0] for p in pairs}, key=_scope_order)
    filters = sorted({int(p[1]) for p in pairs})
    return ScoreOptions(scopes, filters)


def attribute_scores(
    db: Database, set_id: int, distilled_index: int, scope: str, class_filter: int = -1
) -> list[ScoreView]:
    """A distilled image's attributes ranked by average precision (highest first)."""
    with db.session() as s:
        rows = s.exec(
            select(AttributeScore, Attribute.name, Attribute.kind)
            .join(Attribute, Attribute.id == AttributeScore.attribute_id)
            .where(
                AttributeScore.set_id == set_id,
                AttributeScore.distilled_index == distilled_index,
                AttributeScore.scope == scope,
                AttributeScore.class_filter == class_filter,
            )
            .order_by(AttributeScore.ap.desc(), Attribute.name)
        ).all()
    return [
        ScoreView(
            attribute_id=r.attribute_id,
            attribute=name,
            kind=kind,
            scope=r.scope,
            context=r.context,
            class_filter=r.class_filter,
            ap=r.ap,
            lift=r.lift,
            positives=r.positives,
            positive_rate=r.positive_rate,
            chance_ap=r.chance_ap,
            p_value=r.p_value,
            q_value=r.q_value,
            draws=r.draws,
        )
        for r, name, kind in rows
    ]


def attribute_count(db: Database) -> int:
    with db.session() as s:
        return int(s.exec(select(func.count()).select_from(Attribute)).one())


# -- real images by id ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RealImage:
    """A registered real image for display."""

    id: int
    split: str
    index: int
    label: int
    png: bytes


def images_by_id(db: Database, image_ids: Sequence[int]) -> dict[int, RealImage]:
    """Image id -> the image (ids that are not stored are left out)."""
    wanted = sorted({int(i) for i in image_ids})
    out: dict[int, RealImage] = {}
    with db.session() as s:
        for start in range(0, len(wanted), 500):  # SQLite limits the number of variables
            rows = s.exec(
                select(Image.id, Image.split, Image.index, Image.label, Image.png).where(
                    Image.id.in_(wanted[start : start + 500])
                )
            ).all()
            for image_id, split, index, label, png in rows:
                out[int(image_id)] = RealImage(
                    int(image_id), split, int(index), int(label), bytes(png)
                )
    return out


def attribute_ids(db: Database, names: Sequence[str]) -> tuple[int, ...]:
    """Ids of the named attributes, in the order given (unknown names are left out)."""
    with db.session() as s:
        found = dict(
            s.exec(
                select(Attribute.name, Attribute.id).where(Attribute.name.in_(list(names)))
            ).all()
        )
    return tuple(int(found[n]) for n in names if n in found)
