"""Datasets, real images and distilled sets: writes and reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func
from sqlalchemy.exc import OperationalError
from sqlmodel import delete, select

from ddsem.db.codec import from_blob, png_bytes, to_blob
from ddsem.db.engine import Database
from ddsem.db.retry import retry_on_conflict
from ddsem.db.tables import Dataset, DistilledImage, DistilledSet, Image, SetSpace, ZCATransform
from ddsem.errors import UserError

MEAN = np.asarray((0.4914, 0.4822, 0.4465), dtype=np.float32)
STD = np.asarray((0.2023, 0.1994, 0.2010), dtype=np.float32)


def display_pixels(chw: np.ndarray) -> np.ndarray:
    """Normalised CHW float -> HWC in [0, 1] for display (clipped only here, never in storage)."""
    return np.clip(chw.transpose(1, 2, 0) * STD + MEAN, 0.0, 1.0)


# -- ZCA transforms (ddsem.data.zca; numpy here: storage imports no torch) ------------------------


@dataclass
class ZCAArrays:
    """A stored ZCA transform: kornia's mean vector (1, D), transform and inverse (D, D) of
    [0, 1] pixels. ``ddsem.data.zca.ZCA(mean, transform, inverse, eps, shape)`` applies it."""

    id: int
    dataset: str
    eps: float
    fingerprint: str
    num_images: int
    fitted_on: str
    mean: np.ndarray
    transform: np.ndarray
    inverse: np.ndarray

    def info(self) -> dict[str, Any]:
        return {"transform_id": self.id, "eps": self.eps, "fingerprint": self.fingerprint}

    def to_normalised(self, z: np.ndarray) -> np.ndarray:
        """ZCA-space N x C x H x W -> normalised (kornia's inverse_transform, then normalise)."""
        z = np.asarray(z, np.float32)
        flat = (z.reshape(len(z), -1) + self.mean @ self.transform) @ self.inverse
        pixels = flat.reshape(z.shape)
        return (pixels - MEAN[None, :, None, None]) / STD[None, :, None, None]


def _zca_row(row: ZCATransform) -> ZCAArrays:
    return ZCAArrays(
        id=row.id or 0, dataset=row.dataset, eps=row.eps, fingerprint=row.fingerprint,
        num_images=row.num_images, fitted_on=row.fitted_on, mean=from_blob(row.mean),
        transform=from_blob(row.transform), inverse=from_blob(row.inverse),
    )  # fmt: skip


def find_zca(db: Database, dataset: str, eps: float, fingerprint: str) -> ZCAArrays | None:
    """The transform of ``dataset`` fitted with ``eps`` on the pixels of ``fingerprint``."""
    try:
        with db.session() as s:
            row = s.exec(
                select(ZCATransform).where(
                    ZCATransform.dataset == dataset,
                    ZCATransform.eps == eps,
                    ZCATransform.fingerprint == fingerprint,
                )
            ).first()
            return None if row is None else _zca_row(row)
    except OperationalError:  # a read-only database older than the table: it holds none
        return None


def list_zca(db: Database, dataset: str, eps: float) -> list[ZCAArrays]:
    """Every stored transform of ``dataset`` with ``eps`` (fitted on different pixels)."""
    try:
        with db.session() as s:
            rows = s.exec(
                select(ZCATransform).where(ZCATransform.dataset == dataset, ZCATransform.eps == eps)
            ).all()
            return [_zca_row(r) for r in rows]
    except OperationalError:
        return []


def get_zca(db: Database, zca_id: int) -> ZCAArrays:
    with db.session() as s:
        row = s.get(ZCATransform, zca_id)
        if row is None:
            raise UserError(f"ZCA transform {zca_id} is not in this database")
        return _zca_row(row)


def add_zca(
    db: Database,
    dataset: str,
    eps: float,
    fingerprint: str,
    num_images: int,
    fitted_on: str,
    arrays: dict[str, np.ndarray],
) -> ZCAArrays:
    """Store a fitted transform (or return the one a concurrent process stored first)."""

    def write() -> ZCAArrays:
        with db.session() as s:
            row = s.exec(
                select(ZCATransform).where(
                    ZCATransform.dataset == dataset,
                    ZCATransform.eps == eps,
                    ZCATransform.fingerprint == fingerprint,
                )
            ).first()
            if row is None:
                row = ZCATransform(
                    dataset=dataset, eps=eps, fingerprint=fingerprint, num_images=num_images,
                    fitted_on=fitted_on, mean=to_blob(np.asarray(arrays["mean"], np.float32)),
                    transform=to_blob(np.asarray(arrays["transform"], np.float32)),
                    inverse=to_blob(np.asarray(arrays["inverse"], np.float32)),
                )  # fmt: skip
                s.add(row)
                s.flush()
            return _zca_row(row)

    return retry_on_conflict(write)


def set_zca(db: Database, set_id: int) -> ZCAArrays | None:
    """The transform of a set in ZCA space; None for a set in the normalised space."""
    try:
        with db.session() as s:
            link = s.get(SetSpace, set_id)
            if link is None:
                return None
            row = s.get(ZCATransform, link.zca_id)
            return None if row is None else _zca_row(row)
    except OperationalError:  # a read-only database older than the table: no ZCA sets
        return None


def _zca_infos(s: Any, ids: list[int]) -> dict[int, dict[str, Any]]:
    try:
        rows = s.exec(
            select(SetSpace.set_id, ZCATransform.id, ZCATransform.eps, ZCATransform.fingerprint)
            .join(ZCATransform, ZCATransform.id == SetSpace.zca_id)
            .where(SetSpace.set_id.in_(ids))
        ).all()
    except OperationalError:
        return {}
    return {
        int(sid): {"transform_id": int(zid), "eps": float(eps), "fingerprint": fp}
        for sid, zid, eps, fp in rows
    }


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
    # None: images in the normalised space; else they are in ZCA space (MTT's --zca) and this
    # names their transform: {"transform_id", "eps", "fingerprint"} (ddsem.db.sets.set_zca)
    zca: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _summary(row: DistilledSet, zca: dict[str, Any] | None = None) -> SetSummary:
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
        zca=zca,
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
    zca_id: int | None = None,
) -> SetSummary:
    """Store a distilled set in one transaction (all images or nothing).

    ``zca_id`` (or, when it is None, ``provenance["zca"]["transform_id"]``, the way a finished
    distillation passes it): the images are in the ZCA space of that stored transform; their
    display PNGs are inverse-transformed to pixels."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels) if len(labels) else np.array([0])
    if zca_id is None and isinstance((provenance or {}).get("zca"), dict):
        zca_id = (provenance or {})["zca"].get("transform_id")
    shown = images
    zca_info = None
    if zca_id is not None:
        zca = get_zca(db, int(zca_id))
        if zca.mean.size != images[0].size:
            raise UserError(
                f"ZCA transform {zca.id} is for {zca.mean.size} values per image, the set's "
                f"images hold {images[0].size}"
            )
        shown, zca_info = zca.to_normalised(images), zca.info()
    with db.session() as s:
        old = s.exec(select(DistilledSet).where(DistilledSet.name == name)).first()
        if old is not None:
            if not overwrite:
                raise UserError(
                    f"a distilled set named {name!r} exists; pass --overwrite or --name"
                )
            s.exec(delete(DistilledImage).where(DistilledImage.set_id == old.id))
            _unlink(s, old.id)
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
                    png=png_bytes(display_pixels(shown[i])),
                )
            )
        if zca_info is not None:
            s.add(SetSpace(set_id=row.id, zca_id=int(zca_id)))
        return _summary(row, zca_info)


def list_sets(db: Database) -> list[SetSummary]:
    with db.session() as s:
        rows = s.exec(select(DistilledSet).order_by(DistilledSet.id)).all()
        infos = _zca_infos(s, [r.id for r in rows]) if rows else {}
        return [_summary(r, infos.get(r.id)) for r in rows]


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
        return _summary(row, _zca_infos(s, [row.id]).get(row.id))


def set_tensors(db: Database, set_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 N x C x H x W in the set's space, labels int64 N), in index order: the
    normalised space, or ZCA space when the set's summary has ``zca`` (``set_zca``)."""
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
        _unlink(s, row.id)
        s.delete(row)


def _unlink(s: Any, set_id: int | None) -> None:
    """Drop a set's SetSpace row (SQLite cascades it too; other databases may not)."""
    s.exec(delete(SetSpace).where(SetSpace.set_id == set_id))
