"""The query job (``ddsem query "yellow cars"`` and the TUI's questions): which distilled images
drive a semantic? A free-text question is parsed against the attribute vocabulary and the
data set's classes, and the distilled images are ranked by the average precision with which
their influence finds the test images that answer it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ddsem.errors import UserError
from ddsem.jobs.common import check, resolve_set
from ddsem.jobs.semantic_inputs import SEED_OR_MEAN, RankingInputs, load_ranking_inputs
from ddsem.semantics import (
    ESTIMATOR,
    ESTIMATOR_TEXT,
    ParsedQuery,
    Vocabulary,
    parse_query,
    query_columns,
    rank_for_query,
)

if TYPE_CHECKING:
    from ddsem.jobs.workspace import Workspace

__all__ = [
    "ESTIMATOR_TEXT",
    "Answer",
    "QueryPlan",
    "QueryRequest",
    "RankedImage",
    "TestHit",
    "answer",
    "plan",
    "run",
]


@dataclass(frozen=True)
class QueryRequest:
    text: str  # the question, e.g. "yellow cars" or "planes on a runway"
    set_name: str | None = None
    method: str | None = None
    seed: int | None = None  # the run of this seed; None: not chosen (the only run, or the mean)
    mean_over_seeds: bool = False
    top: int = 5  # distilled images in the answer
    images: int = 5  # most influenced matching test images per distilled image

    def __post_init__(self) -> None:
        check(
            self.top >= 1 and self.images >= 0,
            "--top must be at least 1 and --images at least 0",
        )
        check(not (self.seed is not None and self.mean_over_seeds), SEED_OR_MEAN)


@dataclass
class TestHit:
    __test__ = False  # not a pytest class

    test_index: int  # index into the test split
    image_id: int
    influence: float


@dataclass
class RankedImage:
    """A distilled image of an answer: its AP for the question and its evidence."""

    distilled_index: int
    label: int
    class_name: str
    ap: float
    lift: float
    top_images: list[TestHit]


@dataclass
class Answer:
    """The result of a question: what it was understood as, and the ranked distilled images."""

    parsed: ParsedQuery
    set_name: str
    method: str
    scope: str
    positives: int
    total: int  # test images in the class filter (annotated ones)
    results: list[RankedImage]  # ranked by AP, highest first
    num_distilled: int

    @property
    def positive_rate(self) -> float:
        return self.positives / self.total if self.total else float("nan")

    def as_json(self) -> dict[str, Any]:
        """Stable keys for scripts."""
        return {
            "query": self.parsed.text,
            "attribute": " & ".join(self.parsed.attributes),
            "attributes": self.parsed.attributes,
            "class": self.parsed.class_name,
            "class_index": self.parsed.class_index,
            "understood": self.parsed.describe(),
            "set": self.set_name,
            "method": self.method,
            "scope": self.scope,
            "estimator": ESTIMATOR,
            "positives": self.positives,
            "test_images": self.total,
            "positive_rate": self.positive_rate,
            "distilled_images": self.num_distilled,
            "results": [
                {
                    "rank": r + 1,
                    "distilled_index": res.distilled_index,
                    "label": res.label,
                    "class": res.class_name,
                    "ap": res.ap,
                    "lift": res.lift,
                    "top_test_images": [
                        {
                            "test_index": h.test_index,
                            "image_id": h.image_id,
                            "influence": h.influence,
                        }
                        for h in res.top_images
                    ],
                }
                for r, res in enumerate(self.results)
            ],
        }


@dataclass
class QueryPlan:
    parsed: ParsedQuery
    inputs: RankingInputs


def plan(ws: Workspace, request: QueryRequest) -> QueryPlan:
    """The question as understood and what it is ranked over (reads only)."""
    from ddsem.db.annotations import list_attributes
    from ddsem.db.sets import dataset_classes, get_dataset

    summary = resolve_set(ws.db, request.set_name, request.method)
    dataset = get_dataset(ws.db, summary.dataset)
    classes = dataset_classes(dataset) if dataset is not None else []
    vocabulary = list_attributes(ws.db)
    if not vocabulary:
        raise UserError(
            "the attribute vocabulary is empty: run `ddsem annotate` then `ddsem attributes extract`"
        )
    parsed = parse_query(request.text, Vocabulary(vocabulary, classes))
    inputs = load_ranking_inputs(
        ws.db,
        set_name=request.set_name,
        method=request.method,
        seed=request.seed,
        mean_over_seeds=request.mean_over_seeds,
    )
    return QueryPlan(parsed, inputs)


def run(ws: Workspace, request: QueryRequest) -> Answer:
    """Parse, read, rank: the distilled images that best find the question's test images."""
    p = plan(ws, request)
    return answer(p.inputs, p.parsed, top=request.top, images_per_result=request.images)


def answer(
    inputs: RankingInputs, parsed: ParsedQuery, *, top: int = 5, images_per_result: int = 5
) -> Answer:
    """Distilled images ranked by the AP of their influence ranking for the question, each
    with its most influenced test images that have the attribute(s)."""
    members, positives = query_columns(
        inputs.labels, inputs.test_classes, inputs.attribute_names, parsed
    )
    ranking = rank_for_query(
        inputs.influence, members, positives, top=top, images_per_result=images_per_result
    )
    results = []
    for k, best in zip(ranking.order, ranking.evidence, strict=True):
        label = int(inputs.distilled_labels[k])
        results.append(
            RankedImage(
                distilled_index=k,
                label=label,
                class_name=inputs.class_name(label),
                ap=float(ranking.ap[k]),
                lift=float(ranking.ap[k] / ranking.positive_rate),
                top_images=[
                    TestHit(
                        int(inputs.test_indices[j]),
                        int(inputs.image_ids[j]),
                        float(inputs.influence[k, j]),
                    )
                    for j in best
                ],
            )
        )
    return Answer(
        parsed=parsed,
        set_name=inputs.set_name,
        method=inputs.method,
        scope=inputs.scope,
        positives=int(positives.sum()),
        total=int(members.sum()),
        results=results,
        num_distilled=inputs.influence.shape[0],
    )
