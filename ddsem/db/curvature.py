"""Curvature runs and points (``ddsem curvature``) and landscape grids (``ddsem landscape``).

A CurvatureRun is keyed by the hash of everything that fixes its values (model, training,
probe settings, seed, data); its checkpoints all lie on one deterministic trajectory, so later
commands extend a run (more iterations, a finer spacing, another source, densities) instead of
starting over. One CurvaturePoint = one (source, iteration), written in one transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlmodel import delete, select

from ddsem.db.codec import config_hash, from_blob, to_blob
from ddsem.db.engine import Database
from ddsem.db.tables import AnalysisRun, CurvaturePoint, CurvatureRun, now


@dataclass
class CurvatureRunInfo:
    id: int
    config: dict[str, Any]
    sources: list[dict[str, Any]]  # {"source": name, "kind": "distilled"|"real", ...}
    status: str
    created_at: str


@dataclass
class PointInfo:
    source: str
    iteration: int
    trace: float
    trace_stderr: float
    probes: int
    top_eigenvalue: float | None
    spectrum: np.ndarray | None  # (runs, steps, 3): Ritz value, weight, residual bound

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "iteration": self.iteration,
            "trace": self.trace,
            "trace_stderr": self.trace_stderr,
            "probes": self.probes,
            "top_eigenvalue": self.top_eigenvalue,
            "has_density": self.spectrum is not None,
        }


def _run_info(row: CurvatureRun) -> CurvatureRunInfo:
    return CurvatureRunInfo(
        id=row.id or 0,
        config=json.loads(row.config_json),
        sources=json.loads(row.sources_json),
        status=row.status,
        created_at=row.created_at.isoformat(timespec="seconds"),
    )


def find_curvature_run(
    db: Database, config: dict[str, Any]
) -> tuple[int, list[dict[str, Any]]] | None:
    """The id and source rows of the run stored with this config; None when there is none.
    Reads only (``open_curvature_run`` creates the run when it is new)."""
    with db.session() as s:
        row = s.exec(
            select(CurvatureRun).where(CurvatureRun.config_hash == config_hash(config))
        ).first()
        if row is None:
            return None
        return int(row.id or 0), json.loads(row.sources_json)


def open_curvature_run(
    db: Database, config: dict[str, Any], sources: list[dict[str, Any]]
) -> CurvatureRunInfo:
    """The run with this config, created when new, with ``sources`` merged into its list.

    A source already known under the same name but with other contents (a distilled set that
    was replaced, so another set id) loses its stored points: they measured other data.
    """
    key = config_hash(config)
    with db.session() as s:
        row = s.exec(select(CurvatureRun).where(CurvatureRun.config_hash == key)).first()
        if row is None:
            row = CurvatureRun(
                config_json=json.dumps(config, sort_keys=True),
                config_hash=key,
                sources_json=json.dumps(sources),
            )
            s.add(row)
            s.flush()
            return _run_info(row)
        known = {src["source"]: src for src in json.loads(row.sources_json)}
        for src in sources:
            old = known.get(src["source"])
            if old is not None and old != src:
                s.exec(
                    delete(CurvaturePoint).where(
                        CurvaturePoint.run_id == row.id, CurvaturePoint.source == src["source"]
                    )
                )
            known[src["source"]] = src
        row.sources_json = json.dumps(list(known.values()))
        row.status = "running"
        row.finished_at = None
        s.add(row)
        return _run_info(row)


def stored_points(db: Database, run_id: int) -> dict[tuple[str, int], bool]:
    """(source, iteration) -> whether its eigenvalue density is stored too."""
    with db.session() as s:
        rows = s.exec(
            select(CurvaturePoint.source, CurvaturePoint.iteration, CurvaturePoint.density).where(
                CurvaturePoint.run_id == run_id
            )
        ).all()
        return {(src, int(it)): dens is not None for src, it, dens in rows}


def save_point(
    db: Database,
    run_id: int,
    source: str,
    iteration: int,
    *,
    trace: float | None = None,
    trace_stderr: float | None = None,
    probes: int | None = None,
    top_eigenvalue: float | None = None,
    spectrum: np.ndarray | None = None,
) -> None:
    """Write one point in one transaction: a new row needs the trace; an existing row gets the
    fields given (a density added later, say)."""
    with db.session() as s:
        row = s.exec(
            select(CurvaturePoint).where(
                CurvaturePoint.run_id == run_id,
                CurvaturePoint.source == source,
                CurvaturePoint.iteration == iteration,
            )
        ).first()
        if row is None:
            if trace is None or trace_stderr is None or probes is None:
                raise ValueError("a new curvature point needs its trace, stderr and probes")
            row = CurvaturePoint(
                run_id=run_id,
                source=source,
                iteration=iteration,
                trace=trace,
                trace_stderr=trace_stderr,
                probes=probes,
            )
        elif trace is not None:
            row.trace, row.trace_stderr, row.probes = trace, trace_stderr, probes
        if top_eigenvalue is not None:
            row.top_eigenvalue = top_eigenvalue
        if spectrum is not None:
            row.density = to_blob(np.asarray(spectrum, dtype=np.float64))
        s.add(row)


def finish_curvature_run(db: Database, run_id: int) -> None:
    with db.session() as s:
        row = s.get(CurvatureRun, run_id)
        if row is not None:
            row.status = "complete"
            row.finished_at = now()
            s.add(row)


def read_points(db: Database, run_id: int) -> list[PointInfo]:
    """Every point of a run, ordered by source and iteration."""
    with db.session() as s:
        rows = s.exec(
            select(CurvaturePoint)
            .where(CurvaturePoint.run_id == run_id)
            .order_by(CurvaturePoint.source, CurvaturePoint.iteration)
        ).all()
        return [
            PointInfo(
                source=r.source,
                iteration=r.iteration,
                trace=r.trace,
                trace_stderr=r.trace_stderr,
                probes=r.probes,
                top_eigenvalue=r.top_eigenvalue,
                spectrum=from_blob(r.density) if r.density is not None else None,
            )
            for r in rows
        ]


# -- landscape grids (AnalysisRun, kind "landscape") ---------------------------------------------

LANDSCAPE = "landscape"


@dataclass
class LandscapeInfo:
    id: int
    params: dict[str, Any]
    result: dict[str, Any]
    losses: np.ndarray  # (sources, len(ys), len(xs)), sources in result["sources"] order
    figure_path: str | None


def find_landscape(db: Database, params: dict[str, Any]) -> LandscapeInfo | None:
    """The complete landscape computed with exactly these parameters, if any."""
    with db.session() as s:
        row = s.exec(
            select(AnalysisRun)
            .where(
                AnalysisRun.kind == LANDSCAPE,
                AnalysisRun.params_hash == config_hash(params),
                AnalysisRun.status == "complete",
            )
            .order_by(AnalysisRun.id.desc())
        ).first()
        if row is None or row.data is None:
            return None
        return LandscapeInfo(
            id=row.id or 0,
            params=json.loads(row.params_json),
            result=json.loads(row.result_json),
            losses=from_blob(row.data),
            figure_path=row.figure_path,
        )


def save_landscape(
    db: Database,
    params: dict[str, Any],
    result: dict[str, Any],
    losses: np.ndarray,
    figure_path: str | None,
) -> int:
    """Store a finished grid (one transaction, status complete)."""
    with db.session() as s:
        row = AnalysisRun(
            kind=LANDSCAPE,
            params_json=json.dumps(params, sort_keys=True),
            params_hash=config_hash(params),
            status="complete",
            result_json=json.dumps(result),
            data=to_blob(np.asarray(losses, dtype=np.float64)),
            figure_path=figure_path,
        )
        s.add(row)
        s.flush()
        return row.id or 0


def set_landscape_figure(db: Database, analysis_id: int, figure_path: str) -> None:
    with db.session() as s:
        row = s.get(AnalysisRun, analysis_id)
        if row is not None:
            row.figure_path = figure_path
            s.add(row)
