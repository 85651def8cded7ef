"""The rank job (``ddsem rank``): PR-AUC (scikit-learn's average precision) of every distilled
image x attribute (x class filter), stored as AttributeScore rows; a re-run replaces.

Test images are ranked by each distilled image's influence, highest first; the positives are
the test images with the attribute (within a class: among the test images of the class).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ddsem.jobs.common import at_least, check
from ddsem.jobs.semantic_inputs import SEED_OR_MEAN, RankingInputs, load_ranking_inputs
from ddsem.semantics import ALL_CLASSES, ESTIMATOR, ESTIMATOR_TEXT, Scores, score_attributes

if TYPE_CHECKING:
    from ddsem.jobs.workspace import Workspace

__all__ = [
    "ESTIMATOR",
    "ESTIMATOR_TEXT",
    "RankPlan",
    "RankRequest",
    "RankResult",
    "TopScore",
    "plan",
    "run",
    "score_rows",
]

PHASE = "ranking test images"


@dataclass(frozen=True)
class RankRequest:
    """What to rank: a set (by name, else newest of method, else the only one) and a scope."""

    set_name: str | None = None
    method: str | None = None
    seed: int | None = None  # the run of this seed; None: not chosen (the only run, or the mean)
    mean_over_seeds: bool = False
    within_class: bool = False  # only within each class (neither flag: both kinds)
    all_classes: bool = False  # only over all test images
    top: int = 10  # best scores in the result
    min_positives: int = 5  # ... among attributes with this many positives

    def __post_init__(self) -> None:
        check(
            not (self.within_class and self.all_classes),
            "choose one of --within-class and --all-classes (neither: both)",
        )
        check(not (self.seed is not None and self.mean_over_seeds), SEED_OR_MEAN)
        at_least(self.top, 0, "--top")
        at_least(self.min_positives, 0, "--min-positives")

    @property
    def over_all(self) -> bool:
        return not self.within_class

    @property
    def per_class(self) -> bool:
        return not self.all_classes


@dataclass
class RankPlan:
    inputs: RankingInputs
    over_all: bool
    per_class: bool
    replaces: bool  # scores of this set and scope are stored already (a run replaces them)

    @property
    def steps(self) -> int:
        """Rankings to score: one per distilled image and kind (over all, within classes)."""
        return self.inputs.influence.shape[0] * (int(self.over_all) + int(self.per_class))


@dataclass
class TopScore:
    """One of the strongest signals (highest lift) of a ranking."""

    distilled_index: int
    distilled_class: str
    attribute: str
    class_filter: str  # "all" or a class name
    ap: float
    positive_rate: float
    positives: int
    lift: float


@dataclass
class RankResult:
    set_name: str
    method: str
    scope: str
    context: str
    seeds: list[int]
    distilled_images: int
    test_images: int
    skipped_unannotated: int
    attributes: int
    class_filters: list[str]  # "all" and/or class names, as stored
    over_all: bool
    per_class: bool
    stored: int
    undefined: int  # (attribute, class filter) pairs with no positive: nothing stored
    seconds: float
    top: list[TopScore]
    min_positives: int

    @property
    def kinds(self) -> str:
        """ "over all classes and within each class" (what was ranked)."""
        pairs = (("over all classes", self.over_all), ("within each class", self.per_class))
        return " and ".join(k for k, on in pairs if on)

    def as_json(self) -> dict[str, Any]:
        return {
            "set": self.set_name,
            "method": self.method,
            "scope": self.scope,
            "context": self.context,
            "estimator": ESTIMATOR,
            "distilled_images": self.distilled_images,
            "test_images": self.test_images,
            "unannotated_test_images_skipped": self.skipped_unannotated,
            "attributes": self.attributes,
            "class_filters": self.class_filters,
            "stored": self.stored,
            "undefined_no_positives": self.undefined,
            "seconds": round(self.seconds, 3),
            "top": [asdict(r) for r in self.top],
        }


def plan(ws: Workspace, request: RankRequest) -> RankPlan:
    """The inputs of the ranking and whether it replaces stored scores (reads only)."""
    from ddsem.db.scores import score_scopes

    inputs = load_ranking_inputs(
        ws.db,
        set_name=request.set_name,
        method=request.method,
        seed=request.seed,
        mean_over_seeds=request.mean_over_seeds,
    )
    replaces = inputs.scope in score_scopes(ws.db, inputs.set_id)
    return RankPlan(inputs, request.over_all, request.per_class, replaces)


def run(ws: Workspace, request: RankRequest) -> RankResult:
    """Score every ranking and store the scores in one transaction (replacing this scope's)."""
    from ddsem.db.scores import replace_scores

    p = plan(ws, request)
    inputs = p.inputs
    n, t = inputs.influence.shape
    start = time.perf_counter()
    with ws.progress.phase(PHASE, p.steps) as advance:
        scores = score_attributes(
            inputs.influence,
            inputs.test_classes,
            inputs.labels,
            inputs.num_classes,
            all_classes=p.over_all,
            within_class=p.per_class,
            progress=advance,
        )
    seconds = time.perf_counter() - start
    rows, undefined = score_rows(inputs, scores)
    stored = replace_scores(
        ws.db, inputs.set_id, inputs.scope, inputs.context, scores.class_filters, rows
    )
    return RankResult(
        set_name=inputs.set_name,
        method=inputs.method,
        scope=inputs.scope,
        context=inputs.context,
        seeds=list(inputs.seeds),
        distilled_images=n,
        test_images=t,
        skipped_unannotated=inputs.skipped_unannotated,
        attributes=len(inputs.attributes),
        class_filters=[_filter_text(inputs, c) for c in scores.class_filters],
        over_all=p.over_all,
        per_class=p.per_class,
        stored=stored,
        undefined=undefined,
        seconds=seconds,
        top=top_scores(inputs, rows, request.top, request.min_positives),
        min_positives=request.min_positives,
    )


def _filter_text(inputs: RankingInputs, class_filter: int) -> str:
    return "all" if class_filter == ALL_CLASSES else inputs.classes[class_filter]


def score_rows(inputs: RankingInputs, scores: Scores) -> tuple[list[dict[str, Any]], int]:
    """AttributeScore rows for every defined (distilled image, attribute, class filter), and the
    number of (attribute, class filter) pairs left out because they have no positive."""
    rate = scores.positive_rate
    lift = scores.lift
    defined = scores.positives > 0  # (F, A)
    rows: list[dict[str, Any]] = []
    f_idx, a_idx = np.nonzero(defined)
    for k in range(scores.ap.shape[0]):
        ap_k = scores.ap[k, f_idx, a_idx]
        lift_k = lift[k, f_idx, a_idx]
        for f, a, ap, li in zip(
            f_idx.tolist(), a_idx.tolist(), ap_k.tolist(), lift_k.tolist(), strict=True
        ):
            rows.append(
                {
                    "set_id": inputs.set_id,
                    "scope": inputs.scope,
                    "context": inputs.context,
                    "distilled_index": k,
                    "attribute_id": inputs.attributes[a].id,
                    "class_filter": scores.class_filters[f],
                    "estimator": ESTIMATOR,
                    "ap": ap,
                    "positive_rate": float(rate[f, a]),
                    "positives": int(scores.positives[f, a]),
                    "lift": li,
                }
            )
    return rows, int((~defined).sum())


def top_scores(
    inputs: RankingInputs, rows: list[dict[str, Any]], top: int, min_positives: int
) -> list[TopScore]:
    """The strongest signals: highest lift first, among attributes with enough positives."""
    best = [r for r in rows if r["positives"] >= min_positives]
    best.sort(key=lambda r: (-r["lift"], r["distilled_index"]))
    names = {a.id: a.name for a in inputs.attributes}
    return [
        TopScore(
            distilled_index=r["distilled_index"],
            distilled_class=inputs.classes[int(inputs.distilled_labels[r["distilled_index"]])],
            attribute=names[r["attribute_id"]],
            class_filter=_filter_text(inputs, r["class_filter"]),
            ap=r["ap"],
            positive_rate=r["positive_rate"],
            positives=r["positives"],
            lift=r["lift"],
        )
        for r in best[: max(top, 0)]
    ]
