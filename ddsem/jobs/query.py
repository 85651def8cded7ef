"""The query job (``ddsem query "yellow cars"`` and the TUI's questions): which distilled images
drive a semantic? A free-text question is parsed against the attribute vocabulary and the
data set's classes, and the distilled images are ranked by the average precision with which
their influence finds the test images that answer it.

Each AP is judged against chance (``ddsem.jobs.judging``): the exact expected AP of a random
ranking of the question's T test images with P positives, a one-sided permutation p-value from
the null of that (T, P) (the same null ``rank`` draws), and a Benjamini-Hochberg q-value over
the family of the N distilled images ranked for the question. The answer says in plain words
whether any of them predicts the semantic better than chance. With a mean over several seeds,
each seed's influence is judged too (its own family of N): AP per seed, mean and sd, and
whether an image is significant in every seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ddsem.errors import UserError
from ddsem.jobs.common import check, resolve_set
from ddsem.jobs.influence import check_estimator
from ddsem.jobs.judging import (
    ALPHA,
    DRAWS,
    check_alpha,
    check_draws,
    format_p,
    format_q,
    judge,
    seed_stability,
)
from ddsem.jobs.semantic_inputs import SEED_OR_MEAN, RankingInputs, load_ranking_inputs
from ddsem.semantics import (
    ESTIMATOR,
    ESTIMATOR_TEXT,
    ParsedQuery,
    Vocabulary,
    average_precision,
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
    "QuestionScores",
    "RankedImage",
    "TestHit",
    "answer",
    "plan",
    "run",
    "score_question",
    "verdict",
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
    alpha: float = ALPHA  # significant: Benjamini-Hochberg q < alpha over the N distilled images
    draws: int = DRAWS  # the most permutation-null draws for the question's (T, P)
    estimator: str = "loo"  # whose influence: exact LOO, or an approximation (if, tracin, trak)

    def __post_init__(self) -> None:
        check(
            self.top >= 1 and self.images >= 0,
            "--top must be at least 1 and --images at least 0",
        )
        check(not (self.seed is not None and self.mean_over_seeds), SEED_OR_MEAN)
        check_alpha(self.alpha)
        check_draws(self.draws)
        check_estimator(self.estimator)


@dataclass
class TestHit:
    __test__ = False  # not a pytest class

    test_index: int  # index into the test split
    image_id: int
    influence: float


@dataclass
class RankedImage:
    """A distilled image of an answer: its AP for the question, judged against chance, and its
    evidence."""

    distilled_index: int
    label: int
    class_name: str
    ap: float
    lift: float  # AP / chance AP
    top_images: list[TestHit]
    chance_ap: float  # the exact expected AP of a random ranking (the same for every image)
    p_value: float  # one-sided permutation p-value (>= 1 / (draws + 1))
    q_value: float  # Benjamini-Hochberg over the N distilled images ranked for the question
    significant: bool  # q < alpha
    # a mean over several seeds: AP of each seed's influence, their sd, and q < alpha in every
    # seed's own family (None otherwise)
    ap_by_seed: list[float] | None = None
    ap_sd: float | None = None
    significant_in_every_seed: bool | None = None

    @property
    def ap_seed_mean(self) -> float | None:
        """The mean of the per-seed APs (not the AP of the mean influence, ``ap``)."""
        return float(np.mean(self.ap_by_seed)) if self.ap_by_seed else None

    def as_json(self, rank: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rank": rank,
            "distilled_index": self.distilled_index,
            "label": self.label,
            "class": self.class_name,
            "ap": self.ap,
            "lift": self.lift,
            "chance_ap": self.chance_ap,
            "p_value": self.p_value,
            "q_value": self.q_value,
            "significant": self.significant,
        }
        if self.ap_by_seed is not None:
            out["ap_by_seed"] = self.ap_by_seed
            out["ap_sd"] = self.ap_sd
            out["significant_in_every_seed"] = self.significant_in_every_seed
        out["top_test_images"] = [
            {"test_index": h.test_index, "image_id": h.image_id, "influence": h.influence}
            for h in self.top_images
        ]
        return out


@dataclass
class Answer:
    """The result of a question: what it was understood as, the ranked distilled images, and
    whether the best of them is better than chance."""

    parsed: ParsedQuery
    set_name: str
    method: str
    scope: str
    positives: int
    total: int  # test images in the class filter (annotated ones)
    results: list[RankedImage]  # ranked by AP, highest first (so by q, lowest first)
    num_distilled: int
    chance_ap: float  # the exact expected AP of a random ranking of the ``total`` images
    alpha: float
    draws: int  # null draws behind the p-values: the smallest is 1 / (draws + 1)
    significant_count: int  # of all ``num_distilled`` images, not only those shown
    verdict: str  # in plain words: does any distilled image predict it better than chance?
    seeds: list[int] = field(default_factory=list)  # the influence runs behind the scope
    seed_spearman: list[tuple[int, int, float]] = field(default_factory=list)  # of the N APs

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
            "total": self.total,
            "positive_rate": self.positive_rate,
            "distilled_images": self.num_distilled,
            "chance_ap": self.chance_ap,
            "alpha": self.alpha,
            "draws": self.draws,
            "significant_count": self.significant_count,
            "verdict": self.verdict,
            "seeds": self.seeds,
            "seed_spearman": [{"seeds": [a, b], "rho": rho} for a, b, rho in self.seed_spearman],
            "results": [res.as_json(r + 1) for r, res in enumerate(self.results)],
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
        estimator=request.estimator,
    )
    return QueryPlan(parsed, inputs)


def run(ws: Workspace, request: QueryRequest) -> Answer:
    """Parse, read, rank, judge: the distilled images that best find the question's test
    images, and whether they find them better than chance."""
    p = plan(ws, request)
    return answer(
        p.inputs,
        p.parsed,
        top=request.top,
        images_per_result=request.images,
        alpha=request.alpha,
        draws=request.draws,
    )


@dataclass
class QuestionScores:
    """Every distilled image's AP for one question's columns, judged against chance (the family:
    the N distilled images)."""

    ap: np.ndarray  # (N,) AP of the scope's influence (a mean: of the mean influence)
    chance_ap: float
    p: np.ndarray  # (N,)
    q: np.ndarray  # (N,)
    significant: np.ndarray  # (N,) bool: q < alpha
    draws: int
    alpha: float
    positives: int
    total: int
    seeds: list[int] = field(default_factory=list)
    ap_by_seed: np.ndarray | None = None  # (S, N) a mean over several seeds: each seed's AP
    ap_sd: np.ndarray | None = None  # (N,) their sample sd
    significant_in_every_seed: np.ndarray | None = None  # (N,) bool
    seed_spearman: list[tuple[int, int, float]] = field(default_factory=list)


def score_question(
    inputs: RankingInputs,
    members: np.ndarray,
    positives: np.ndarray,
    *,
    alpha: float = ALPHA,
    draws: int = DRAWS,
) -> QuestionScores:
    """AP, chance, p and q of every distilled image for the question whose test images are
    ``members`` and answers ``positives`` (both bool (T,), from ``query_columns``); with a mean
    over several seeds, each seed's too. The one scoring of a question: ``ddsem query``, the
    TUI (through ``ddsem.jobs.views.ask``) and the report's PR curves use it."""
    check_alpha(alpha)
    check_draws(draws)
    column = positives[members][:, None]
    total, hits = int(members.sum()), int(positives.sum())

    def judged(matrix: np.ndarray):
        ap = average_precision(matrix[:, members], column)  # (N, 1, 1)
        return ap, judge(ap, np.array([total]), np.array([[hits]]), alpha=alpha, draws=draws)

    ap, main = judged(inputs.influence)
    out = QuestionScores(
        ap=ap[:, 0, 0],
        chance_ap=float(main.chance[0, 0]),
        p=main.p[:, 0, 0],
        q=main.q[:, 0, 0],
        significant=main.significant[:, 0, 0],
        draws=int(main.draws[0, 0]),
        alpha=float(alpha),
        positives=hits,
        total=total,
        seeds=list(inputs.seeds),
    )
    if len(inputs.influence_by_seed) >= 2:  # a mean over seeds
        per_seed = [judged(m) for m in inputs.influence_by_seed]
        stability = seed_stability(
            list(inputs.seeds),
            np.stack([a for a, _ in per_seed]),
            np.stack([j.significant for _, j in per_seed]),
        )
        out.ap_by_seed = np.stack([a[:, 0, 0] for a, _ in per_seed])
        out.ap_sd = stability.sd[:, 0, 0]
        out.significant_in_every_seed = stability.significant_in_all[:, 0, 0]
        out.seed_spearman = stability.spearman
    return out


def verdict(parsed: ParsedQuery, scores: QuestionScores, best: int) -> str:
    """Plain words for an answer: how many distilled images predict the question better than
    chance, and the best one (``best``: its distilled index) with its AP, chance, p and q."""
    what = " and ".join(parsed.attributes)
    among = parsed.class_name or "all classes"
    count = int(scores.significant.sum())
    if count == 0:
        subject = "no distilled image predicts"
    elif count == 1:
        subject = "1 distilled image predicts"
    else:
        subject = f"{count} distilled images predict"
    text = f"{subject} {what} among {among} better than chance (q < {scores.alpha:g})"
    if count and scores.significant_in_every_seed is not None:
        every = int((scores.significant & scores.significant_in_every_seed).sum())
        text += f", {every} of them in every seed ({', '.join(map(str, scores.seeds))})"
    return (
        f"{text}; best: #{best}, AP {scores.ap[best]:.3f}, chance {scores.chance_ap:.3f}, "
        f"p {format_p(float(scores.p[best]), scores.draws)}, q {format_q(float(scores.q[best]))}"
    )


def answer(
    inputs: RankingInputs,
    parsed: ParsedQuery,
    *,
    top: int = 5,
    images_per_result: int = 5,
    alpha: float = ALPHA,
    draws: int = DRAWS,
) -> Answer:
    """Distilled images ranked by the AP of their influence ranking for the question, each
    with its chance AP, p and q and its most influenced test images that have the
    attribute(s); and the verdict."""
    members, positives = query_columns(
        inputs.labels, inputs.test_classes, inputs.attribute_names, parsed
    )
    ranking = rank_for_query(
        inputs.influence, members, positives, top=top, images_per_result=images_per_result
    )
    scores = score_question(inputs, members, positives, alpha=alpha, draws=draws)
    results = []
    for k, best in zip(ranking.order, ranking.evidence, strict=True):
        label = int(inputs.distilled_labels[k])
        seeds: dict[str, Any] = {}
        if scores.ap_by_seed is not None:
            assert scores.ap_sd is not None and scores.significant_in_every_seed is not None
            seeds = {
                "ap_by_seed": [float(a) for a in scores.ap_by_seed[:, k]],
                "ap_sd": float(scores.ap_sd[k]),
                "significant_in_every_seed": bool(scores.significant_in_every_seed[k]),
            }
        results.append(
            RankedImage(
                distilled_index=k,
                label=label,
                class_name=inputs.class_name(label),
                ap=float(ranking.ap[k]),
                lift=float(ranking.ap[k] / scores.chance_ap),
                top_images=[
                    TestHit(
                        int(inputs.test_indices[j]),
                        int(inputs.image_ids[j]),
                        float(inputs.influence[k, j]),
                    )
                    for j in best
                ],
                chance_ap=scores.chance_ap,
                p_value=float(scores.p[k]),
                q_value=float(scores.q[k]),
                significant=bool(scores.significant[k]),
                **seeds,
            )
        )
    best_index = int(np.argmax(scores.ap))  # the first of the highest: as ``ranking.order``
    return Answer(
        parsed=parsed,
        set_name=inputs.set_name,
        method=inputs.method,
        scope=inputs.scope,
        positives=scores.positives,
        total=scores.total,
        results=results,
        num_distilled=inputs.influence.shape[0],
        chance_ap=scores.chance_ap,
        alpha=scores.alpha,
        draws=scores.draws,
        significant_count=int(scores.significant.sum()),
        verdict=verdict(parsed, scores, best_index),
        seeds=list(inputs.seeds),
        seed_spearman=scores.seed_spearman,
    )
