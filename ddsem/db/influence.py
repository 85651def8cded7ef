"""Influence runs: reads shared by ranking, the TUI and reports, and the writes of
``ddsem influence`` (one transaction per stored unit, so a killed run resumes cleanly)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func
from sqlmodel import delete, select

from ddsem.db.codec import from_blob, state_from_blob, to_blob
from ddsem.db.engine import Database
from ddsem.db.retry import retry_on_conflict
from ddsem.db.tables import InfluenceModel, InfluenceRow, InfluenceRun, InfluenceTopK, now
from ddsem.errors import UserError


@dataclass
class InfluenceRunInfo:
    id: int
    set_id: int
    seed: int
    context: str
    status: str
    num_models: int
    full_accuracy: float | None
    config: dict[str, Any]
    config_hash: str = ""
    device: str = "cpu"
    wall_seconds: float | None = None
    models_done: int = 0
    num_test: int = 0
    estimator: str = "loo"  # loo: exact leave-one-out; if | tracin | trak: an approximation


def _info(r: InfluenceRun, models_done: int = 0) -> InfluenceRunInfo:
    return InfluenceRunInfo(
        id=r.id or 0, set_id=r.set_id, seed=r.seed, context=r.context, status=r.status,
        num_models=r.num_models, full_accuracy=r.full_accuracy, config=json.loads(r.config_json),
        config_hash=r.config_hash, device=r.device, wall_seconds=r.wall_seconds,
        models_done=models_done, num_test=len(from_blob(r.test_indices)), estimator=r.estimator,
    )  # fmt: skip


def list_runs(
    db: Database,
    set_id: int,
    *,
    context: str | None = None,
    complete_only: bool = True,
    estimator: str | None = "loo",
) -> list[InfluenceRunInfo]:
    """The influence runs of a set (complete ones only by default), by context then seed; of
    exact LOO by default (``estimator``; None: every estimator's)."""
    with db.session() as s:
        q = select(InfluenceRun).where(InfluenceRun.set_id == set_id)
        if context is not None:
            q = q.where(InfluenceRun.context == context)
        if estimator is not None:
            q = q.where(InfluenceRun.estimator == estimator)
        if complete_only:
            q = q.where(InfluenceRun.status == "complete")
        runs = s.exec(
            q.order_by(InfluenceRun.estimator, InfluenceRun.context, InfluenceRun.seed)
        ).all()
        counts = dict(
            s.exec(
                select(InfluenceModel.run_id, func.count())
                .where(InfluenceModel.run_id.in_([r.id for r in runs]))
                .group_by(InfluenceModel.run_id)
            ).all()
        )
        return [_info(r, int(counts.get(r.id, 0))) for r in runs]


def load_influence(db: Database, run_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(influence N x T float32 by distilled index, test indices int64 T into the split)."""
    with db.session() as s:
        run = s.get(InfluenceRun, run_id)
        if run is None:
            raise UserError(
                f"influence run {run_id} was deleted while this job trained its models "
                "(its set was deleted or the run replaced); nothing more is written"
            )
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


# -- writes of `ddsem influence` -----------------------------------------------------------------


def find_run(
    db: Database, set_id: int, seed: int, context: str, estimator: str = "loo"
) -> InfluenceRunInfo | None:
    """The run of (set, seed, context, estimator) in any status, or None."""
    with db.session() as s:
        run = s.exec(
            select(InfluenceRun).where(
                InfluenceRun.set_id == set_id,
                InfluenceRun.seed == seed,
                InfluenceRun.context == context,
                InfluenceRun.estimator == estimator,
            )
        ).first()
        if run is None:
            return None
        done = s.exec(
            select(func.count()).select_from(InfluenceModel).where(InfluenceModel.run_id == run.id)
        ).one()
        return _info(run, int(done))


def _delete_run(s, run_id: int) -> None:
    for table in (InfluenceTopK, InfluenceRow, InfluenceModel):
        s.exec(delete(table).where(table.run_id == run_id))
    s.exec(delete(InfluenceRun).where(InfluenceRun.id == run_id))


def delete_influence_run(db: Database, run_id: int) -> None:
    """Remove a run and everything under it (models, rows, top-k) in one transaction."""
    with db.session() as s:
        _delete_run(s, run_id)


def start_influence_run(
    db: Database,
    *,
    set_id: int,
    seed: int,
    context: str,
    config: dict[str, Any],
    config_hash: str,
    test_indices: np.ndarray,
    num_models: int,
    init_state: bytes,
    device: str,
    replace: bool = False,
) -> int:
    """Create the run row (status "running"), or return the existing one of the same config.

    ``replace`` deletes an existing run of (set, seed, context) and everything under it first,
    in the same transaction. The caller has already refused a different config without it.
    Two processes starting the same run at once get the same row (the loser of the insert
    reads the winner's).
    """
    return retry_on_conflict(
        lambda: _start_run(
            db, set_id, seed, context, config, config_hash, test_indices, num_models,
            init_state, device, replace,
        )
    )  # fmt: skip


def _start_run(
    db, set_id, seed, context, config, config_hash, test_indices, num_models, init_state,
    device, replace,
) -> int:  # fmt: skip
    with db.session() as s:
        old = s.exec(
            select(InfluenceRun).where(
                InfluenceRun.set_id == set_id,
                InfluenceRun.seed == seed,
                InfluenceRun.context == context,
                InfluenceRun.estimator == "loo",
            )
        ).first()
        if old is not None:
            if not replace and old.config_hash == config_hash:
                return int(old.id or 0)
            if not replace:
                raise ValueError("a run with a different config exists; the caller must refuse")
            _delete_run(s, int(old.id or 0))
            s.flush()
        run = InfluenceRun(
            set_id=set_id,
            seed=seed,
            context=context,
            status="running",
            config_json=json.dumps(config, sort_keys=True),
            config_hash=config_hash,
            test_indices=to_blob(np.asarray(test_indices, dtype=np.int64)),
            num_models=num_models,
            init_state=init_state,
            device=device,
            wall_seconds=0.0,
        )
        s.add(run)
        s.flush()
        return int(run.id or 0)


def run_init_state(db: Database, run_id: int) -> dict[str, np.ndarray]:
    """The shared initial state of every model of a run (reproduce any single model from it)."""
    with db.session() as s:
        run = s.get(InfluenceRun, run_id)
        if run is None:
            raise UserError(
                f"influence run {run_id} was deleted while this job trained its models "
                "(its set was deleted or the run replaced); nothing more is written"
            )
        return state_from_blob(run.init_state)


def done_models(db: Database, run_id: int) -> set[int]:
    """Model indices (-1 = reference) already stored for a run."""
    with db.session() as s:
        rows = s.exec(select(InfluenceModel.model_index).where(InfluenceModel.run_id == run_id))
        return {int(i) for i in rows.all()}


def add_models(
    db: Database,
    run_id: int,
    model_indices: list[int],
    losses: np.ndarray,
    accuracy: np.ndarray,
    *,
    seconds: float,
    device: str,
) -> None:
    """Store one chunk of trained models (per-test-image losses, accuracy) in one transaction.

    Models already stored are skipped, so a chunk written twice stays one copy. The run row is
    read FOR UPDATE (PostgreSQL; SQLite's writes are serialised anyway), so processes adding
    their chunks at once never lose each other's wall time or device.
    """
    with db.session() as s:
        run = s.get(InfluenceRun, run_id, with_for_update=True)
        if run is None:
            raise UserError(
                f"influence run {run_id} was deleted while this job trained its models "
                "(its set was deleted or the run replaced); nothing more is written"
            )
        have = {
            int(i)
            for i in s.exec(
                select(InfluenceModel.model_index).where(InfluenceModel.run_id == run_id)
            ).all()
        }
        for k, m in enumerate(model_indices):
            if int(m) in have:
                continue
            s.add(
                InfluenceModel(
                    run_id=run_id,
                    model_index=int(m),
                    losses=to_blob(np.asarray(losses[k], dtype=np.float32)),
                    accuracy=float(accuracy[k]),
                )
            )
        run.wall_seconds = (run.wall_seconds or 0.0) + seconds
        devices = [d for d in run.device.split(",") if d]
        if device not in devices:
            run.device = ",".join([*devices, device])
        s.add(run)


def model_results(db: Database, run_id: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(model indices ascending with -1 first, losses (K, T) float32, accuracy (K,))."""
    with db.session() as s:
        rows = s.exec(
            select(InfluenceModel)
            .where(InfluenceModel.run_id == run_id)
            .order_by(InfluenceModel.model_index)
        ).all()
        if not rows:
            return [], np.zeros((0, 0), np.float32), np.zeros(0)
        return (
            [int(r.model_index) for r in rows],
            np.stack([from_blob(r.losses) for r in rows]).astype(np.float32),
            np.asarray([r.accuracy for r in rows], dtype=np.float64),
        )


def finish_influence_run(
    db: Database,
    run_id: int,
    influence: np.ndarray,
    test_indices: np.ndarray,
    test_labels: np.ndarray,
    top_positions: np.ndarray,
    top_values: np.ndarray,
    full_accuracy: float,
) -> None:
    """Write the N x T matrix, the top-k table and status "complete" in one transaction.

    ``top_positions`` index the run's test images; the top-k table stores split indices. The run
    row is locked first (FOR UPDATE on PostgreSQL), so two finishers write one after the other.
    """
    with db.session() as s:
        run = s.get(InfluenceRun, run_id, with_for_update=True)
        if run is None:
            raise UserError(
                f"influence run {run_id} was deleted while this job trained its models "
                "(its set was deleted or the run replaced); nothing more is written"
            )
        _write_matrix(s, run, influence, test_indices, test_labels, top_positions, top_values)
        run.full_accuracy = float(full_accuracy)
        s.add(run)


def _write_matrix(
    s, run: InfluenceRun, influence, test_indices, test_labels, top_positions, top_values
) -> None:  # fmt: skip
    """The rows and top-k table of a run, replacing any, and status "complete"."""
    run_id = int(run.id or 0)
    for table in (InfluenceTopK, InfluenceRow):
        s.exec(delete(table).where(table.run_id == run_id))
    for i in range(influence.shape[0]):
        s.add(
            InfluenceRow(
                run_id=run_id,
                distilled_index=i,
                values=to_blob(np.asarray(influence[i], dtype=np.float32)),
            )
        )
        for rank, (pos, value) in enumerate(zip(top_positions[i], top_values[i], strict=True)):
            s.add(
                InfluenceTopK(
                    run_id=run_id,
                    distilled_index=i,
                    rank=rank,
                    test_index=int(test_indices[pos]),
                    test_label=int(test_labels[pos]),
                    value=float(value),
                )
            )
    run.status = "complete"
    run.finished_at = now()


def store_estimated_run(
    db: Database,
    *,
    set_id: int,
    seed: int,
    context: str,
    estimator: str,
    config: dict[str, Any],
    config_hash: str,
    test_indices: np.ndarray,
    test_labels: np.ndarray,
    trainings: int,
    init_state: bytes,
    influence: np.ndarray,
    top_positions: np.ndarray,
    top_values: np.ndarray,
    full_accuracy: float,
    device: str,
    wall_seconds: float,
) -> int:
    """Store an approximate estimator's whole run (row, matrix, top-k table, "complete") in one
    transaction, replacing the run of the same (set, seed, context, estimator): an estimate is
    computed in one piece, so a killed one leaves nothing and its re-run computes it again."""

    def write() -> int:
        with db.session() as s:
            old = s.exec(
                select(InfluenceRun.id).where(
                    InfluenceRun.set_id == set_id,
                    InfluenceRun.seed == seed,
                    InfluenceRun.context == context,
                    InfluenceRun.estimator == estimator,
                )
            ).first()
            if old is not None:
                _delete_run(s, int(old))
                s.flush()
            run = InfluenceRun(
                set_id=set_id,
                seed=seed,
                context=context,
                estimator=estimator,
                status="running",
                config_json=json.dumps(config, sort_keys=True),
                config_hash=config_hash,
                test_indices=to_blob(np.asarray(test_indices, dtype=np.int64)),
                num_models=trainings,
                init_state=init_state,
                device=device,
                wall_seconds=wall_seconds,
            )
            s.add(run)
            s.flush()
            _write_matrix(s, run, influence, test_indices, test_labels, top_positions, top_values)
            run.full_accuracy = float(full_accuracy)
            s.add(run)
            return int(run.id or 0)

    return retry_on_conflict(write)
