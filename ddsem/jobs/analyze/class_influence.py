"""Job ``analyze class-influence`` (appendix D): from stored influence runs only, each
distilled image's mean influence on test images of its own class against the other classes.

One unit per set and influence scope (a seed's run, or the mean of the seeds' runs), stored
with its per-image values; an identical re-run reads it and only redraws the figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.errors import UserError
from ddsem.jobs.analyze.common import OUT, choose_sets, figure_folder
from ddsem.jobs.common import check, one_of, seed_number

if TYPE_CHECKING:
    import numpy as np

    from ddsem.db.sets import SetSummary
    from ddsem.jobs.workspace import Workspace

KIND = "class-influence"
CONTEXTS = ("distilled", "real")

__all__ = ["ClassInfluenceRequest", "ClassInfluenceResult", "plan", "run"]


@dataclass(frozen=True)
class ClassInfluenceRequest:
    methods: tuple[str, ...] = ()  # each method's newest set
    set_names: tuple[str, ...] = ()  # (neither: every set with an influence run)
    context: str = "distilled"  # which influence runs: LOO in the set, or added to real images
    seed: int | None = None  # the run of this seed; None: the only run, or the seeds' mean
    mean_over_seeds: bool = False
    out: str = OUT

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "set_names", tuple(self.set_names))
        one_of(self.context, CONTEXTS, "--context")
        if self.seed is not None:
            seed_number(self.seed)


@dataclass
class _Unit:
    summary: SetSummary
    params: dict[str, Any]
    stored: Any  # StoredAnalysis | None
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # influence, labels, test classes


@dataclass
class ClassInfluencePlan:
    units: list[_Unit]


def plan(ws: Workspace, request: ClassInfluenceRequest) -> ClassInfluencePlan:
    """The sets, the influence each is read from, and which results are stored (reads only)."""
    from ddsem.db.analyses import find_analysis
    from ddsem.db.influence import list_runs
    from ddsem.jobs.semantic_inputs import select_runs

    figure_folder(request.out)
    named = bool(request.methods or request.set_names)
    units = []
    for s in choose_sets(ws.db, request.methods, request.set_names):
        runs = list_runs(ws.db, s.id, context=request.context)
        if not runs:
            if not named:
                continue  # every set: those with an influence run
            raise UserError(
                f"no complete {request.context} influence run for set {s.name!r}: run "
                f"`ddsem influence --set {s.name}` first"
            )
        scope, chosen = select_runs(runs, request.seed, request.mean_over_seeds)
        params = {
            "set_id": s.id, "set": s.name, "context": request.context, "scope": scope,
            "runs": [r.id for r in chosen], "seeds": [r.seed for r in chosen],
        }  # fmt: skip
        units.append(_Unit(s, params, find_analysis(ws.db, KIND, params), None))
    if not units:
        raise UserError(
            f"no set has a complete {request.context} influence run: run `ddsem influence` first"
        )
    return ClassInfluencePlan(units)


def _inputs(ws: Workspace, unit: _Unit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(influence N x T, distilled labels, test classes) of the unit's runs (the mean of
    several seeds' runs over the same test images)."""
    import numpy as np

    from ddsem.db.influence import load_influence
    from ddsem.db.scores import test_image_keys
    from ddsem.db.sets import get_dataset, set_tensors

    s = unit.summary
    matrices, indices = [], None
    for run_id in unit.params["runs"]:
        matrix, test_indices = load_influence(ws.db, run_id)
        if indices is not None and not np.array_equal(indices, test_indices):
            raise UserError(
                f"the influence runs of set {s.name!r} cover different test images: choose one "
                "with --seed S"
            )
        indices = test_indices
        matrices.append(matrix.astype(np.float64))
    assert indices is not None
    _, labels = set_tensors(ws.db, s.id)
    if matrices[0].shape[0] != len(labels):
        raise UserError(
            f"the influence run of set {s.name!r} has {matrices[0].shape[0]} rows for "
            f"{len(labels)} images: re-run `ddsem influence --set {s.name}`"
        )
    dataset = get_dataset(ws.db, s.dataset)
    keys = test_image_keys(ws.db, dataset.id) if dataset is not None else {}
    check(
        all(int(i) in keys for i in indices),
        f"the test images of set {s.name!r}'s influence run are not registered: re-run "
        f"`ddsem influence --set {s.name}`",
    )
    classes = np.asarray([keys[int(i)][1] for i in indices], dtype=np.int64)
    return np.mean(matrices, axis=0), labels.astype(np.int64), classes


@dataclass
class ClassInfluenceResult:
    context: str
    sets: list[dict[str, Any]]  # per set: name, method, scope, analysis_id, reused, summary
    per_image: dict[str, list[dict[str, Any]]]  # set name -> per image values
    figure: Path

    @property
    def computed(self) -> int:
        return sum(not s["reused"] for s in self.sets)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "context": self.context,
            "analysis_ids": [s["analysis_id"] for s in self.sets],
            "sets": self.sets,
            "per_image": self.per_image,
            "figure": str(self.figure),
        }


def run(ws: Workspace, request: ClassInfluenceRequest) -> ClassInfluenceResult:
    """Compute and store what is missing, then draw the figure of every set asked for."""
    import numpy as np

    from ddsem.analyses.class_influence import (
        ClassInfluence,
        class_influence,
        class_influence_figure,
    )
    from ddsem.db.analyses import save_analysis, set_analysis_figure

    p = plan(ws, request)
    if any(u.stored is None for u in p.units):
        ws.db.require_writable()
    sets, per_image, drawn = [], {}, {}
    with ws.progress.phase("class influence", len(p.units)) as advance:
        for u in p.units:
            if u.stored is None:
                influence, labels, classes = _inputs(ws, u)
                r = class_influence(influence, labels, classes)
                result = {"summary": r.summary(), "per_image": r.per_image()}
                analysis_id = save_analysis(ws.db, KIND, u.params, result)
            else:
                result, analysis_id = u.stored.result, u.stored.id
            rows = result["per_image"]
            ks = sorted(int(k) for k in result["summary"]["top_out_share"])
            drawn[u.summary.name] = ClassInfluence(
                in_class=np.array([r["in_class"] for r in rows]),
                out_class=np.array([r["out_class"] for r in rows]),
                top_out={k: np.array([r[f"top{k}_out_share"] for r in rows]) for k in ks},
                chance_out=np.full(len(rows), result["summary"]["chance_out_share"]),
                wilcoxon_p=result["summary"]["wilcoxon_p"],
                labels=np.array([r["label"] for r in rows]),
            )
            sets.append({
                "set": u.summary.name, "method": u.summary.method, "scope": u.params["scope"],
                "analysis_id": analysis_id, "reused": u.stored is not None,
                **result["summary"],
            })  # fmt: skip
            per_image[u.summary.name] = rows
            advance(1)
    ids = "-".join(str(s["analysis_id"]) for s in sets)
    figure = class_influence_figure(
        drawn,
        figure_folder(request.out) / f"class-influence-{ids}.png",
        title=f"influence on own class vs other classes ({request.context} context)",
    )
    if not ws.db.readonly:  # a read-only database still gets its figure drawn
        for s in sets:
            set_analysis_figure(ws.db, s["analysis_id"], str(figure))
    return ClassInfluenceResult(request.context, sets, per_image, figure)
