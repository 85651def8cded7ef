"""Datasets, real images and distilled sets: writes and reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func
from sqlmodel import delete, select

from ddsem.db.codec import from_blob, png_bytes, to_blob
from ddsem.db.engine import Database
from ddsem.db.retry import retry_on_conflict
from ddsem.db.tables import Dataset, DistilledImage, DistilledSet, Image
from ddsem.errors import UserError

MEAN = np.asarray((0.4914, 0.4822, 0.4465), dtype=np.float32)
STD = np.asarray((0.2023, 0.1994, 0.2010), dtype=np.float32)


def display_pixels(chw: np.ndarray) -> np.ndarray:
    """Normalised CHW float -> HWC in [0, 1] for display (clipped only here, never in storage)."""
    return np.clip(chw.transpose(1, 2, 0) * STD + MEAN, 0.0, 1.0)


# -- datasets and real images --------------------------------------------------------------------


def ensure_dataset(
    db: Database,
    name: str,
    source: str,
    classes: tuple[str, ...] | list[str],
    num_train: int,
    num_test: int,
) -> Dataset:
    """The data set's row, created when new (concurrent creators get the same row)."""

    def write() -> Dataset:
        with db.session() as s:
            row = s.exec(select(Dataset).where(Dataset.name == name)).first()
            if row is None:
                row = Dataset(
                    name=name,
                    source=source,
                    classes_json=json.dumps(list(classes)),
                    num_train=num_train,
                    num_test=num_test,
                )
                s.add(row)
                s.flush()
            return row

    return retry_on_conflict(write)


def get_dataset(db: Database, name: str) -> Dataset | None:
    with db.session() as s:
        return s.exec(select(Dataset).where(Dataset.name == name)).first()


def dataset_classes(row: Dataset) -> list[str]:
    return json.loads(row.classes_json)


def ensure_images(
    db: Database,
    dataset_id: int,
    split: str,
    indices: np.ndarray,
    pixels: np.ndarray,
    labels: np.ndarray,
) -> int:
    """Register real images (idempotent); pixels/labels are indexed by ``indices``. Returns new."""
    indices = np.asarray(indices)

    def write() -> int:
        with db.session() as s:
            have = set(
                s.exec(
                    select(Image.index).where(Image.dataset_id == dataset_id, Image.split == split)
                ).all()
            )
            todo = [int(i) for i in indices if int(i) not in have]
            for i in todo:
                s.add(
                    Image(
                        dataset_id=dataset_id,
                        split=split,
                        index=i,
                        label=int(labels[i]),
                        png=png_bytes(pixels[i]),
                    )
                )
        return len(todo)

    return retry_on_conflict(write)


def image_rows(
    db: Database, dataset_id: int, split: str, indices: list[int] | None = None
) -> list[Image]:
    with db.session() as s:
        q = select(Image).where(Image.dataset_id == dataset_id, Image.split == split)
        if indices is not None:
            q = q.where(Image.index.in_(indices))
        return list(s.exec(q.order_by(Image.index)).all())


# -- distilled sets ------------------------------------------------------------------------------


@dataclass
class SetSummary:
    id: int
    name: str
    method: str
    dataset: str
    ipc: int
    num_images: int
    image_shape: list[int]
    synthetic_lr: float | None
    provenance: dict[str, Any]
    created_at: str

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _summary(row: DistilledSet) -> SetSummary:
    return SetSummary(
        id=row.id or 0,
        name=row.name,
        method=row.method,
        dataset=row.dataset,
        ipc=row.ipc,
        num_images=row.num_images,
        image_shape=json.loads(row.image_shape_json),
        synthetic_lr=row.synthetic_lr,
        provenance=json.loads(row.provenance_json),
        created_at=row.created_at.isoformat(timespec="seconds"),
    )


def add_distilled_set(
    db: Database,
    name: str,
    method: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    dataset: str = "cifar10",
    synthetic_lr: float | None = None,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> SetSummary:
    """Store a distilled set in one transaction (all images or nothing)."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels) if len(labels) else np.array([0])
    with db.session() as s:
        old = s.exec(select(DistilledSet).where(DistilledSet.name == name)).first()
        if old is not None:
            if not overwrite:
                raise UserError(
                    f"a distilled set named {name!r} exists; pass --overwrite or --name"
                )
            s.exec(delete(DistilledImage).where(DistilledImage.set_id == old.id))
            s.delete(old)
            s.flush()
        row = DistilledSet(
            name=name,
            method=method,
            dataset=dataset,
            ipc=int(counts.max()),
            num_images=len(labels),
            image_shape_json=json.dumps(list(images.shape[1:])),
            synthetic_lr=synthetic_lr,
            provenance_json=json.dumps(provenance or {}, default=str),
        )
        s.add(row)
        s.flush()
        for i in range(len(labels)):
            s.add(
                DistilledImage(
                    set_id=row.id,
                    index=i,
                    label=int(labels[i]),
                    tensor=to_blob(images[i]),
                    png=png_bytes(display_pixels(images[i])),
                )
            )
        return _summary(row)


def list_sets(db: Database) -> list[SetSummary]:
    with db.session() as s:
        rows = s.exec(select(DistilledSet).order_by(DistilledSet.id)).all()
        return [_summary(r) for r in rows]


def find_set(db: Database, name: str | None = None, method: str | None = None) -> SetSummary:
    """The set called ``name``, or the only/newest set made by ``method``; a clear error else."""
    with db.session() as s:
        if name:
            row = s.exec(select(DistilledSet).where(DistilledSet.name == name)).first()
        elif method:
            row = s.exec(
                select(DistilledSet)
                .where(func.lower(DistilledSet.method) == method.lower())
                .order_by(DistilledSet.id.desc())
            ).first()
        else:
            raise UserError("name a distilled set with --set NAME or --method METHOD")
        if row is None:
            known = s.exec(select(DistilledSet.name, DistilledSet.method)).all()
            listing = ", ".join(f"{n} ({m})" for n, m in known) or "none yet"
            what = f"named {name!r}" if name else f"made by method {method!r}"
            raise UserError(f"no distilled set {what}; known sets: {listing}")
        return _summary(row)


def set_tensors(db: Database, set_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 N x C x H x W in normalised space, labels int64 N), in index order."""
    with db.session() as s:
        rows = s.exec(
            select(DistilledImage)
            .where(DistilledImage.set_id == set_id)
            .order_by(DistilledImage.index)
        ).all()
        if not rows:
            raise UserError(f"distilled set {set_id} has no images")
        images = np.stack([from_blob(r.tensor) for r in rows])
        labels = np.asarray([r.label for r in rows], dtype=np.int64)
        return images, labels


def set_pngs(db: Database, set_id: int) -> list[tuple[int, int, bytes]]:
    """(index, label, display PNG) of every image of a set."""
    with db.session() as s:
        rows = s.exec(
            select(DistilledImage.index, DistilledImage.label, DistilledImage.png)
            .where(DistilledImage.set_id == set_id)
            .order_by(DistilledImage.index)
        ).all()
        return [(int(i), int(lbl), bytes(p)) for i, lbl, p in rows]


def delete_set(db: Database, name: str) -> None:
    with db.session() as s:
        row = s.exec(select(DistilledSet).where(DistilledSet.name == name)).first()
        if row is None:
            raise UserError(f"no distilled set named {name!r}")
        s.exec(delete(DistilledImage).where(DistilledImage.set_id == row.id))
        s.delete(row)
