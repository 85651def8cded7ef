"""Influence runs: reads shared by ranking, the TUI and reports (writes live here too)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlmodel import select

from ddsem.db.codec import from_blob
from ddsem.db.engine import Database
from ddsem.db.tables import InfluenceRow, InfluenceRun


@dataclass
class RunInfo:
    id: int
    set_id: int
    seed: int
    context: str
    status: str
    num_models: int
    full_accuracy: float | None
    config: dict[str, Any]


def _info(r: InfluenceRun) -> RunInfo:
    return RunInfo(
        id=r.id or 0, set_id=r.set_id, seed=r.seed, context=r.context, status=r.status,
        num_models=r.num_models, full_accuracy=r.full_accuracy, config=json.loads(r.config_json),
    )


def list_runs(
    db: Database, set_id: int, *, context: str | None = None, complete_only: bool = True
) -> list[RunInfo]:
    """The influence runs of a set (complete ones only by default), ordered by seed."""
    with db.session() as s:
        q = select(InfluenceRun).where(InfluenceRun.set_id == set_id)
        if context is not None:
            q = q.where(InfluenceRun.context == context)
        if complete_only:
            q = q.where(InfluenceRun.status == "complete")
        return [_info(r) for r in s.exec(q.order_by(InfluenceRun.seed)).all()]


def load_influence(db: Database, run_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(influence N x T float32 by distilled index, test indices int64 T into the split)."""
    with db.session() as s:
        run = s.get(InfluenceRun, run_id)
        if run is None:
            raise KeyError(run_id)
        test_indices = from_blob(run.test_indices).astype(np.int64)
        rows = s.exec(
            select(InfluenceRow)
            .where(InfluenceRow.run_id == run_id)
            .order_by(InfluenceRow.distilled_index)
        ).all()
        matrix = (
            np.stack([from_blob(r.values) for r in rows]).astype(np.float32)
            if rows
            else np.zeros((0, len(test_indices)), np.float32)
        )
        return matrix, test_indices
