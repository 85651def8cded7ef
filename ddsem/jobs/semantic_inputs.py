"""What ranking the semantics of a distilled set reads from the database: the influence of a
run (or the seeds' mean), the annotated test images and their attributes.

``ddsem rank``, ``ddsem query``, ``ddsem report`` and the TUI's precision-recall curves all
start here; every missing step is refused with one line naming the command that makes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ddsem.errors import UserError
from ddsem.jobs.common import resolve_set

if TYPE_CHECKING:
    from ddsem.db import Database
    from ddsem.db.annotations import AttributeInfo

SEED_OR_MEAN = "choose one of --seed S and --mean-over-seeds"


def scope_name(estimator: str, scope: str) -> str:
    """The stored scope of a ranking: "seed:S" or "mean" for exact LOO's influence, prefixed
    "ESTIMATOR/" for an approximation's ("tracin/seed:0"), so each has its own scores."""
    return scope if estimator == "loo" else f"{estimator}/{scope}"


def split_scope(scope: str) -> tuple[str, str]:
    """(estimator, "seed:S" | "mean") of a stored scope (``scope_name`` undone)."""
    estimator, _, rest = scope.rpartition("/")
    return (estimator or "loo"), rest


@dataclass
class RankingInputs:
    """Everything ranking needs for one distilled set and scope, read from the database."""

    set_id: int
    set_name: str
    method: str
    context: str
    scope: str  # "seed:<S>" or "mean", "ESTIMATOR/" first for an approximation (scope_name)
    seeds: list[int]
    influence: np.ndarray  # (N, T) float: the run's (or the seeds' mean) influence
    test_indices: np.ndarray  # (T,) int64 into the test split
    test_classes: np.ndarray  # (T,) int64
    image_ids: np.ndarray  # (T,) int64 Image ids
    attributes: list[AttributeInfo]
    labels: np.ndarray  # (T, A) bool
    classes: list[str]
    distilled_labels: np.ndarray  # (N,) int64
    dataset_id: int
    skipped_unannotated: int  # test images of the run left out: not annotated yet
    # the runs behind a mean of several seeds, (N, T) each in the order of ``seeds`` and with
    # the columns of ``influence``; empty for one run
    influence_by_seed: list[np.ndarray] = field(default_factory=list)
    estimator: str = "loo"  # whose influence: exact LOO, or an approximation (if, tracin, trak)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def attribute_names(self) -> list[str]:
        return [a.name for a in self.attributes]

    def class_name(self, label: int) -> str:
        return self.classes[label] if 0 <= label < len(self.classes) else str(label)

    def scope_option(self) -> str:
        """The command-line option that selects this scope again."""
        _, scope = split_scope(self.scope)
        option = "--mean-over-seeds" if scope == "mean" else f"--seed {self.seeds[0]}"
        return option if self.estimator == "loo" else f"{option} --estimator {self.estimator}"

    def seed_scope(self, seed: int) -> str:
        """The stored scope of one seed of this estimator."""
        return scope_name(self.estimator, f"seed:{seed}")


def select_runs(runs: list[Any], seed: int | None, mean_over_seeds: bool) -> tuple[str, list[Any]]:
    """(scope, runs) of the complete ``runs``: ``--seed S`` -> "seed:S"; ``--mean-over-seeds``
    -> "mean"; neither: the only run, or the mean when there are several."""
    if seed is not None and mean_over_seeds:
        raise UserError(SEED_OR_MEAN)
    seeds = [r.seed for r in runs]
    if seed is not None:
        chosen = [r for r in runs if r.seed == seed]
        if not chosen:
            raise UserError(
                f"no complete influence run with seed {seed}; complete seeds: "
                f"{', '.join(map(str, seeds))} (run `ddsem influence --seeds {seed}` to add it)"
            )
        return f"seed:{seed}", chosen
    if mean_over_seeds or len(runs) > 1:
        return "mean", runs
    return f"seed:{runs[0].seed}", runs


def load_ranking_inputs(
    db: Database,
    *,
    set_name: str | None = None,
    method: str | None = None,
    seed: int | None = None,
    mean_over_seeds: bool = False,
    context: str = "distilled",
    estimator: str = "loo",
) -> RankingInputs:
    """Read influence, test images and attributes of the set a request means (by name, else
    the newest of ``method``, else the only set); each missing step names its command."""
    from ddsem.db.annotations import attribute_labels, list_attributes
    from ddsem.db.influence import list_runs, load_influence
    from ddsem.db.scores import annotated_image_ids, test_image_keys
    from ddsem.db.sets import dataset_classes, get_dataset, set_tensors

    summary = resolve_set(db, set_name, method)
    how = f"--method {summary.method}" if method and not set_name else f"--set {summary.name}"
    runs = list_runs(db, summary.id, context=context, estimator=estimator)
    if not runs:
        pending = list_runs(
            db, summary.id, context=context, complete_only=False, estimator=estimator
        )
        extra = (
            f" (seed {', '.join(str(r.seed) for r in pending)} unfinished: re-running resumes it)"
            if pending
            else ""
        )
        what, flag = ("influence", "") if estimator == "loo" else (
            f"{estimator} influence", f" --estimator {estimator}"
        )  # fmt: skip
        raise UserError(
            f"no complete {what} run for set {summary.name!r}{extra}: "
            f"run `ddsem influence --method {summary.method}{flag}` first"
        )
    scope, chosen = select_runs(runs, seed, mean_over_seeds)
    scope = scope_name(estimator, scope)

    matrices = []
    test_indices: np.ndarray | None = None
    for run in chosen:
        matrix, indices = load_influence(db, run.id)
        if test_indices is None:
            test_indices = indices
        elif not np.array_equal(indices, test_indices):
            raise UserError(
                f"influence runs of seeds {chosen[0].seed} and {run.seed} cover different test "
                "images, so they cannot be averaged: rank one with --seed S"
            )
        matrices.append(matrix.astype(np.float64))
    assert test_indices is not None
    influence = matrices[0] if len(matrices) == 1 else np.mean(matrices, axis=0)
    _, distilled_labels = set_tensors(db, summary.id)
    if influence.shape[0] != len(distilled_labels):
        raise UserError(
            f"influence run of set {summary.name!r} has {influence.shape[0]} rows for "
            f"{len(distilled_labels)} distilled images: re-run `ddsem influence {how}`"
        )
    if not np.isfinite(influence).all():
        raise UserError(f"influence of set {summary.name!r} has NaN or infinite values")

    annotate_hint = "run `ddsem annotate` then `ddsem attributes extract`"
    dataset = get_dataset(db, summary.dataset)
    keys = test_image_keys(db, dataset.id) if dataset is not None else {}
    annotated = annotated_image_ids(db) if keys else set()
    keep = [
        k for k, idx in enumerate(test_indices.tolist())
        if idx in keys and keys[idx][0] in annotated
    ]  # fmt: skip
    if not keep:
        raise UserError(
            f"none of the {len(test_indices)} test images of the influence run is annotated: "
            f"{annotate_hint}"
        )
    vocabulary = list_attributes(db)
    if not vocabulary:
        raise UserError("the attribute vocabulary is empty: run `ddsem attributes extract`")
    keep_arr = np.asarray(keep, dtype=np.int64)
    kept_indices = test_indices[keep_arr]
    image_ids = np.asarray([keys[int(i)][0] for i in kept_indices], dtype=np.int64)
    test_classes = np.asarray([keys[int(i)][1] for i in kept_indices], dtype=np.int64)
    attributes, labels = attribute_labels(db, image_ids.tolist())
    if not labels.any():
        raise UserError(
            "no annotated test image of the influence run has an attribute: "
            "run `ddsem attributes extract` (or `ddsem attributes add`)"
        )
    assert dataset is not None
    return RankingInputs(
        set_id=summary.id,
        set_name=summary.name,
        method=summary.method,
        context=context,
        scope=scope,
        seeds=[r.seed for r in chosen],
        influence=influence[:, keep_arr],
        test_indices=kept_indices,
        test_classes=test_classes,
        image_ids=image_ids,
        attributes=attributes,
        labels=labels,
        classes=dataset_classes(dataset),
        distilled_labels=distilled_labels,
        dataset_id=dataset.id or 0,
        skipped_unannotated=len(test_indices) - len(keep),
        influence_by_seed=[m[:, keep_arr] for m in matrices] if len(matrices) > 1 else [],
        estimator=estimator,
    )
