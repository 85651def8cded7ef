"""Stored analyses (``ddsem analyze``): one AnalysisRun row per unit of work, keyed by its kind
and the hash of its parameters, written complete in one transaction. A killed job leaves no
row for the unit it was computing; the next run finds the finished units and skips them.

A unit may carry a binary payload (``data``): the state of a model trained on real data
(``state_to_blob``: .npz, no pickle), so other analyses reuse it instead of training again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlmodel import select

from ddsem.db.codec import config_hash, state_from_blob, state_to_blob
from ddsem.db.engine import Database
from ddsem.db.tables import AnalysisRun

REAL_MODEL = "real-model"  # the kind of a stored model trained on real data


@dataclass
class StoredAnalysis:
    id: int
    kind: str
    params: dict[str, Any]
    result: dict[str, Any]
    figure_path: str | None
    has_data: bool
    created_at: str = ""


def _stored(row: AnalysisRun) -> StoredAnalysis:
    return StoredAnalysis(
        id=row.id or 0,
        kind=row.kind,
        params=json.loads(row.params_json),
        result=json.loads(row.result_json),
        figure_path=row.figure_path,
        has_data=row.data is not None,
        created_at=row.created_at.isoformat(timespec="seconds") if row.created_at else "",
    )


def _query(kind: str, params: dict[str, Any]):
    return (
        select(AnalysisRun)
        .where(
            AnalysisRun.kind == kind,
            AnalysisRun.params_hash == config_hash(params),
            AnalysisRun.status == "complete",
        )
        .order_by(AnalysisRun.id)
    )


def find_analysis(db: Database, kind: str, params: dict[str, Any]) -> StoredAnalysis | None:
    """The complete unit of ``kind`` computed with exactly these parameters, or None."""
    with db.session() as s:
        row = s.exec(_query(kind, params)).first()
        return None if row is None else _stored(row)


def save_analysis(
    db: Database,
    kind: str,
    params: dict[str, Any],
    result: dict[str, Any],
    *,
    data: bytes | None = None,
    figure_path: str | None = None,
) -> int:
    """Store a finished unit (status complete) and return its id. When another process stored
    the same unit meanwhile, theirs is kept and its id returned: a unit is stored once."""
    with db.session() as s:
        existing = s.exec(_query(kind, params)).first()
        if existing is not None:
            return existing.id or 0
        row = AnalysisRun(
            kind=kind,
            params_json=json.dumps(params, sort_keys=True),
            params_hash=config_hash(params),
            status="complete",
            result_json=json.dumps(result),
            data=data,
            figure_path=figure_path,
        )
        s.add(row)
        s.flush()
        return row.id or 0


def set_analysis_figure(db: Database, analysis_id: int, figure_path: str) -> None:
    """Record where a unit's figure was drawn (figures are redrawn on every run)."""
    with db.session() as s:
        row = s.get(AnalysisRun, analysis_id)
        if row is not None and row.figure_path != figure_path:
            row.figure_path = figure_path
            s.add(row)


def list_analyses(db: Database, kinds: tuple[str, ...] = ()) -> list[StoredAnalysis]:
    """Every complete stored unit (of ``kinds`` when given), oldest first."""
    with db.session() as s:
        q = select(AnalysisRun).where(AnalysisRun.status == "complete")
        if kinds:
            q = q.where(AnalysisRun.kind.in_(kinds))
        return [_stored(r) for r in s.exec(q.order_by(AnalysisRun.id)).all()]


def find_arrays(db: Database, kind: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The named arrays stored with a complete unit (``save_arrays``), or None."""
    with db.session() as s:
        row = s.exec(_query(kind, params)).first()
        return None if row is None or row.data is None else state_from_blob(row.data)


def save_arrays(
    db: Database, kind: str, params: dict[str, Any], arrays: dict[str, Any], result: dict[str, Any]
) -> int:
    """Store a unit whose raw material is arrays (e.g. a pool's test predictions as uint8),
    as .npz bytes (no pickle) beside its result."""
    return save_analysis(db, kind, params, result, data=state_to_blob(arrays))


# -- models trained on real data ----------------------------------------------------------------


def find_real_model(db: Database, params: dict[str, Any]):
    """(state dict of numpy arrays, result) of the stored real-data model with these
    parameters, or None."""
    with db.session() as s:
        row = s.exec(_query(REAL_MODEL, params)).first()
        if row is None or row.data is None:
            return None
        return state_from_blob(row.data), json.loads(row.result_json)


def save_real_model(
    db: Database, params: dict[str, Any], state: dict, result: dict[str, Any]
) -> int:
    """Store a model trained on real data (its state as .npz bytes) with its test accuracy."""
    return save_analysis(db, REAL_MODEL, params, result, data=state_to_blob(state))
