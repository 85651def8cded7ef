"""Distillation storage: DistillRun checkpoints for ``ddsem distill --resume``, expert
trajectories for trajectory matching, and stored evaluations (``ddsem evaluate``).

Experts and evaluations are AnalysisRun rows (kind "tm-expert" / "evaluate"): parameters in,
result out, one row per unit written complete in one transaction, so a killed job resumes by
skipping the rows that exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlmodel import delete, select

from ddsem.db.codec import config_hash, from_blob, state_from_blob, state_to_blob, to_blob
from ddsem.db.engine import Database
from ddsem.db.sets import SetSummary, add_distilled_set
from ddsem.db.tables import AnalysisRun, DistilledSet, DistillRun, now

EXPERT_KIND = "tm-expert"
EVALUATION_KIND = "evaluate"


# -- distillation runs ---------------------------------------------------------------------------


@dataclass
class DistillRunInfo:
    id: int
    set_name: str
    method: str
    config: dict[str, Any]
    config_hash: str
    status: str
    iteration: int
    wall_seconds: float


def _run_info(row: DistillRun) -> DistillRunInfo:
    return DistillRunInfo(
        id=row.id or 0,
        set_name=row.set_name,
        method=row.method,
        config=json.loads(row.config_json),
        config_hash=row.config_hash,
        status=row.status,
        iteration=row.iteration,
        wall_seconds=row.wall_seconds,
    )


def unfinished_run(db: Database, set_name: str) -> DistillRunInfo | None:
    """The newest run for ``set_name`` that has not stored its set yet.

    A run whose set was stored but which was not marked complete (a crash between the two
    writes) is marked complete here and not returned.
    """
    with db.session() as s:
        row = s.exec(
            select(DistillRun)
            .where(DistillRun.set_name == set_name, DistillRun.status == "running")
            .order_by(DistillRun.id.desc())
        ).first()
        if row is None:
            return None
        stored = s.exec(select(DistilledSet).where(DistilledSet.name == set_name)).first()
        if (
            stored is not None
            and json.loads(stored.provenance_json).get("distill_run_id") == row.id
        ):
            row.status = "complete"
            row.checkpoint = None
            s.add(row)
            return None
        return _run_info(row)


def start_distill_run(
    db: Database, set_name: str, method: str, config: dict[str, Any], *, replace: int | None = None
) -> DistillRunInfo:
    """A new running DistillRun (deleting run ``replace``, an abandoned one, in the same commit)."""
    with db.session() as s:
        if replace is not None:
            s.exec(delete(DistillRun).where(DistillRun.id == replace))
        row = DistillRun(
            set_name=set_name, method=method, config_json=json.dumps(config, sort_keys=True),
            config_hash=config_hash(config),
        )  # fmt: skip
        s.add(row)
        s.flush()
        return _run_info(row)


def save_checkpoint(
    db: Database, run_id: int, iteration: int, wall_seconds: float, arrays: dict[str, np.ndarray]
) -> None:
    """Replace the run's checkpoint (images, optimiser state, RNG, iteration) in one commit."""
    with db.session() as s:
        row = s.get(DistillRun, run_id)
        if row is None:
            raise KeyError(f"distill run {run_id} does not exist")
        row.checkpoint = state_to_blob(arrays)
        row.iteration = iteration
        row.wall_seconds = wall_seconds
        row.updated_at = now()
        s.add(row)


def load_checkpoint(db: Database, run_id: int) -> dict[str, np.ndarray] | None:
    with db.session() as s:
        row = s.get(DistillRun, run_id)
        if row is None or row.checkpoint is None:
            return None
        return state_from_blob(row.checkpoint)


def finish_distill_run(
    db: Database,
    run_id: int,
    *,
    name: str,
    method: str,
    images: np.ndarray,
    labels: np.ndarray,
    dataset: str,
    synthetic_lr: float | None,
    provenance: dict[str, Any],
    iteration: int,
    wall_seconds: float,
    overwrite: bool,
) -> SetSummary:
    """Store the finished set (``provenance`` gets ``distill_run_id``), then mark the run
    complete and drop its checkpoint. ``unfinished_run`` repairs a crash between the two."""
    summary = add_distilled_set(
        db,
        name,
        method,
        images,
        labels,
        dataset=dataset,
        synthetic_lr=synthetic_lr,
        provenance={**provenance, "distill_run_id": run_id},
        overwrite=overwrite,
    )
    with db.session() as s:
        row = s.get(DistillRun, run_id)
        if row is not None:
            row.status = "complete"
            row.iteration = iteration
            row.wall_seconds = wall_seconds
            row.checkpoint = None
            row.updated_at = now()
            s.add(row)
    return summary


def set_exists(db: Database, name: str) -> bool:
    with db.session() as s:
        return s.exec(select(DistilledSet.id).where(DistilledSet.name == name)).first() is not None


# -- expert trajectories -------------------------------------------------------------------------


@dataclass
class ExpertPool:
    """Experts trained alike (same data, model and training config): TM draws from one pool."""

    key: str
    params: dict[str, Any]
    count: int
    epochs: int


def expert_indices(db: Database, pool_key: str) -> set[int]:
    with db.session() as s:
        rows = s.exec(
            select(AnalysisRun.params_json).where(
                AnalysisRun.kind == EXPERT_KIND, AnalysisRun.params_hash == pool_key
            )
        ).all()
        return {int(json.loads(p)["index"]) for p in rows}


def add_expert(
    db: Database,
    pool_key: str,
    pool_params: dict[str, Any],
    index: int,
    seed: int,
    trajectory: np.ndarray,
    test_accuracy: float | None,
) -> bool:
    """Store one expert (complete) unless that index exists already; True when written."""
    with db.session() as s:
        have = s.exec(
            select(AnalysisRun.params_json).where(
                AnalysisRun.kind == EXPERT_KIND, AnalysisRun.params_hash == pool_key
            )
        ).all()
        if any(int(json.loads(p)["index"]) == index for p in have):
            return False
        s.add(
            AnalysisRun(
                kind=EXPERT_KIND,
                params_json=json.dumps(
                    {**pool_params, "index": index, "seed": seed}, sort_keys=True
                ),
                params_hash=pool_key,
                status="complete",
                result_json=json.dumps(
                    {
                        "epochs": int(trajectory.shape[0] - 1),
                        "num_params": int(trajectory.shape[1]),
                        "test_accuracy": test_accuracy,
                    }
                ),  # fmt: skip
                data=to_blob(np.ascontiguousarray(trajectory, dtype=np.float32)),
            )
        )
        return True


def expert_pools(db: Database, match: dict[str, Any]) -> list[ExpertPool]:
    """Pools whose parameters agree with ``match`` on its keys, the largest first."""
    with db.session() as s:
        rows = s.exec(
            select(AnalysisRun.params_hash, AnalysisRun.params_json, AnalysisRun.result_json).where(
                AnalysisRun.kind == EXPERT_KIND, AnalysisRun.status == "complete"
            )
        ).all()
    pools: dict[str, ExpertPool] = {}
    for key, params_json, result_json in rows:
        params = json.loads(params_json)
        if any(params.get(k) != v for k, v in match.items()):
            continue
        epochs = int(json.loads(result_json)["epochs"])
        pool = pools.get(key)
        if pool is None:
            base = {k: v for k, v in params.items() if k not in ("index", "seed")}
            pools[key] = ExpertPool(key, base, 1, epochs)
        else:
            pool.count += 1
            pool.epochs = min(pool.epochs, epochs)
    return sorted(pools.values(), key=lambda p: (-p.count, p.key))


def load_experts(db: Database, pool_key: str, max_epoch: int | None = None) -> list[np.ndarray]:
    """Every trajectory of a pool, in index order, rows 0..max_epoch (all when None)."""
    with db.session() as s:
        rows = s.exec(
            select(AnalysisRun.params_json, AnalysisRun.data).where(
                AnalysisRun.kind == EXPERT_KIND, AnalysisRun.params_hash == pool_key
            )
        ).all()
    ordered = sorted(rows, key=lambda r: int(json.loads(r[0])["index"]))
    out = []
    for _, blob in ordered:
        traj = from_blob(blob)
        out.append(traj if max_epoch is None else np.ascontiguousarray(traj[: max_epoch + 1]))
    return out


# -- evaluations ---------------------------------------------------------------------------------


def find_evaluation(db: Database, params: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result of an evaluation with exactly these parameters, or None."""
    key = config_hash(params)
    with db.session() as s:
        row = s.exec(
            select(AnalysisRun).where(
                AnalysisRun.kind == EVALUATION_KIND,
                AnalysisRun.params_hash == key,
                AnalysisRun.status == "complete",
            )
        ).first()
        return None if row is None else json.loads(row.result_json)


def add_evaluation(db: Database, params: dict[str, Any], result: dict[str, Any]) -> None:
    with db.session() as s:
        s.add(
            AnalysisRun(
                kind=EVALUATION_KIND,
                params_json=json.dumps(params, sort_keys=True),
                params_hash=config_hash(params),
                status="complete",
                result_json=json.dumps(result),
            )
        )
