"""The read layer of the terminal UI: what the screens show, from the database and the jobs.

The TUI imports this module (never ``ddsem.db`` or ``ddsem.semantics``) and calls it in worker
threads: the database views (re-exported from ``ddsem.db.views``: short read-only sessions,
small dataclasses, paged lists; scores with their stored chance AP, p- and q-value), the
ranking inputs of a scope, a question answered by the query job (the path of ``ddsem query``:
each image's AP judged against chance, and the verdict), and one distilled image's
precision-recall curve with the chance AP it is drawn against.

Importing this module loads the database layer (SQLAlchemy); the TUI does it off the UI thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ddsem.db.codec import png_to_array
from ddsem.db.engine import Database
from ddsem.db.influence import InfluenceRunInfo
from ddsem.db.views import (
    ImageView,
    InfluencedImage,
    Page,
    RealImage,
    ScoreOptions,
    ScoreView,
    SetOverview,
    attribute_count,
    attribute_ids,
    attribute_scores,
    class_names,
    complete_runs,
    distilled_image,
    distilled_images,
    images_by_id,
    score_options,
    set_overview,
    sets_overview,
    top_influenced,
)
from ddsem.jobs import query as query_job
from ddsem.jobs.query import Answer, QueryRequest, RankedImage, TestHit
from ddsem.jobs.semantic_inputs import RankingInputs, load_ranking_inputs
from ddsem.jobs.workspace import Workspace
from ddsem.semantics import precision_recall_curve
from ddsem.significance import chance_ap

__all__ = [
    "Answer",
    "Database",
    "ImageView",
    "InfluenceRunInfo",
    "InfluencedImage",
    "Page",
    "PrCurve",
    "RankedImage",
    "RankingInputs",
    "RealImage",
    "ScoreOptions",
    "ScoreView",
    "SetOverview",
    "TestHit",
    "ask",
    "attribute_count",
    "attribute_curve",
    "attribute_ids",
    "attribute_scores",
    "class_names",
    "complete_runs",
    "distilled_image",
    "distilled_images",
    "images_by_id",
    "open_database",
    "png_to_array",
    "precision_recall",
    "ranking_inputs",
    "score_options",
    "set_overview",
    "sets_overview",
    "top_influenced",
]


def open_database(target: str) -> Database:
    """Open an existing database (a path or URL) for reading; never creates one."""
    return Workspace.open(target, create=False).db


# -- semantics -----------------------------------------------------------------------------------


def ranking_inputs(
    db: Database,
    *,
    set_name: str,
    seed: int | None = None,
    mean_over_seeds: bool = False,
    estimator: str = "loo",
) -> RankingInputs:
    """Influence, annotated test images and attribute labels of a set at a scope."""
    return load_ranking_inputs(
        db, set_name=set_name, seed=seed, mean_over_seeds=mean_over_seeds, estimator=estimator
    )


def ask(
    db: Database,
    text: str,
    *,
    set_name: str | None = None,
    method: str | None = None,
    seed: int | None = None,
    mean_over_seeds: bool = False,
    top: int = 5,
    images: int = 5,
) -> Answer:
    """A question answered exactly as ``ddsem query`` answers it (the query job)."""
    request = QueryRequest(
        text,
        set_name=set_name,
        method=method,
        seed=seed,
        mean_over_seeds=mean_over_seeds,
        top=top,
        images=images,
    )
    return query_job.run(Workspace(db), request)


@dataclass(frozen=True)
class PrCurve:
    """Precision against recall when the test images are ranked by one distilled image's
    influence, from (recall 0, precision 1) down the thresholds."""

    recall: np.ndarray
    precision: np.ndarray
    average_precision: float  # the area under the step curve: scikit-learn's estimator
    positives: int
    total: int

    @property
    def chance_ap(self) -> float:
        """The expected AP of a random ranking of these ``total`` images (``positives`` of
        them positive): the level an AP must beat (``ddsem.significance.chance_ap``)."""
        return float(chance_ap(self.total, self.positives))

    def steps(self) -> tuple[list[float], list[float]]:
        """Corner points of the step function whose area is the average precision."""
        xs, ys = [float(self.recall[0])], [float(self.precision[0])]
        for k in range(1, len(self.recall)):
            xs += [float(self.recall[k - 1]), float(self.recall[k])]
            ys += [float(self.precision[k]), float(self.precision[k])]
        return xs, ys


def precision_recall(scores: np.ndarray, positives: np.ndarray) -> PrCurve | None:
    """The curve of ranking ``scores`` (highest first) for ``positives`` (None without any)."""
    labels = np.asarray(positives, dtype=bool)
    if not labels.any():
        return None
    recall, precision = precision_recall_curve(np.asarray(scores), labels)
    ap = float(np.sum(np.diff(recall) * precision[1:]))
    return PrCurve(recall, precision, ap, int(labels.sum()), len(labels))


def attribute_curve(
    inputs: RankingInputs, distilled_index: int, attribute_ids: Sequence[int], class_filter: int
) -> PrCurve | None:
    """The PR curve of one distilled image for test images having every attribute in
    ``attribute_ids``, among the test images of ``class_filter`` (-1: all of them)."""
    column = {a.id: k for k, a in enumerate(inputs.attributes)}
    if not attribute_ids or any(a not in column for a in attribute_ids):
        return None
    members = (
        np.ones(len(inputs.test_classes), dtype=bool)
        if class_filter < 0
        else inputs.test_classes == class_filter
    )
    has_all = inputs.labels[:, [column[a] for a in attribute_ids]].all(axis=1)
    return precision_recall(inputs.influence[distilled_index, members], has_all[members])
