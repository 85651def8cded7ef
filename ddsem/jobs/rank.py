"""The rank job (``ddsem rank``): PR-AUC (scikit-learn's average precision) of every distilled
image x attribute (x class filter), stored as AttributeScore rows; a re-run replaces.

Test images are ranked by each distilled image's influence, highest first; the positives are
the test images with the attribute (within a class: among the test images of the class). Each
score is stored with its chance level (the exact expected AP of a random ranking), lift (AP /
chance AP), a one-sided permutation p-value and a Benjamini-Hochberg q-value over the family of
everything the run stores for the set and scope (``ddsem.jobs.judging``). The mean over several
seeds also scores each seed's influence as its own family, stored as scope "seed:S" exactly as
``rank --seed S`` stores it, and reports how well the seeds agree.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ddsem.jobs.common import at_least, check
from ddsem.jobs.influence import check_estimator
from ddsem.jobs.judging import (
    ALPHA,
    DRAWS,
    Judged,
    check_alpha,
    check_draws,
    draw_range,
    judge,
    seed_stability,
)
from ddsem.jobs.judging import PHASE as SIGNIFICANCE_PHASE
from ddsem.jobs.semantic_inputs import SEED_OR_MEAN, RankingInputs, load_ranking_inputs
from ddsem.semantics import ALL_CLASSES, ESTIMATOR, ESTIMATOR_TEXT, Scores, score_attributes
from ddsem.significance import TIES_WORTH_A_NOTE, distinct_pairs, tied_share

if TYPE_CHECKING:
    from ddsem.jobs.workspace import Workspace
    from ddsem.significance import SeedStability

__all__ = [
    "ESTIMATOR",
    "ESTIMATOR_TEXT",
    "RankPlan",
    "RankRequest",
    "RankResult",
    "SeedAgreement",
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
    alpha: float = ALPHA  # significant: Benjamini-Hochberg q < alpha
    draws: int = DRAWS  # the most permutation-null draws per (test images, positives)
    estimator: str = "loo"  # whose influence: exact LOO, or an approximation (if, tracin, trak)

    def __post_init__(self) -> None:
        check(
            not (self.within_class and self.all_classes),
            "choose one of --within-class and --all-classes (neither: both)",
        )
        check(not (self.seed is not None and self.mean_over_seeds), SEED_OR_MEAN)
        at_least(self.top, 0, "--top")
        at_least(self.min_positives, 0, "--min-positives")
        check_alpha(self.alpha)
        check_draws(self.draws)
        check_estimator(self.estimator)

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
    def seed_scopes(self) -> list[str]:
        """The per-seed scopes a mean over several seeds also stores ("seed:S" each)."""
        if self.inputs.scope != "mean" or len(self.inputs.influence_by_seed) < 2:
            return []
        return [self.inputs.seed_scope(s) for s in self.inputs.seeds]

    @property
    def steps(self) -> int:
        """Rankings to score: one per distilled image and kind (over all, within classes), for
        the scope and for each seed of a mean."""
        kinds = int(self.over_all) + int(self.per_class)
        return self.inputs.influence.shape[0] * kinds * (1 + len(self.seed_scopes))


@dataclass
class TopScore:
    """One of the strongest answers of a ranking (lowest q, then highest AP)."""

    distilled_index: int
    distilled_class: str
    attribute: str
    class_filter: str  # "all" or a class name
    ap: float
    positive_rate: float
    positives: int
    lift: float  # AP / chance AP
    chance_ap: float
    p_value: float
    q_value: float
    draws: int  # null draws behind p (p >= 1 / (draws + 1))
    significant: bool  # q < alpha
    # a mean over several seeds: the AP of each seed's influence, their sd and whether the
    # answer is significant in every seed's own family (None otherwise)
    ap_by_seed: list[float] | None = None
    ap_sd: float | None = None
    significant_in_every_seed: bool | None = None


@dataclass
class SeedAgreement:
    """How the seeds behind a mean agree: each seed scored as its own family (scope seed:S)."""

    seeds: list[int]
    scopes: list[str]  # the seeds' stored scopes ("seed:S", or "ESTIMATOR/seed:S")
    spearman: list[tuple[int, int, float]]  # (seed a, seed b, Spearman rho of all their APs)
    significant_by_seed: list[int]  # answers at q < alpha in each seed's family
    significant_in_every_seed: int  # answers at q < alpha in every seed
    stored_per_seed: int  # scores stored per seed scope

    def as_json(self) -> dict[str, Any]:
        return {
            "seeds": self.seeds,
            "scopes": self.scopes,
            "spearman": [{"seeds": [a, b], "rho": rho} for a, b, rho in self.spearman],
            "significant_by_seed": self.significant_by_seed,
            "significant_in_every_seed": self.significant_in_every_seed,
            "stored_per_seed": self.stored_per_seed,
        }


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
    alpha: float = ALPHA
    min_draws: int = 0  # null draws per (test images, positives): first ...
    max_draws: int = DRAWS  # ... and at most (drawn deeper for extreme APs)
    significant: int = 0  # stored answers at q < alpha
    family: int = 0  # the p-values the q-values correct for: every score stored for the scope
    significance_seconds: float = 0.0
    tied_share: float = 0.0  # share of influence values tied in their row (the null: none)
    seed_agreement: SeedAgreement | None = None  # a mean over several seeds

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
            "alpha": self.alpha,
            "min_draws": self.min_draws,
            "max_draws": self.max_draws,
            "significant": self.significant,
            "family": self.family,
            "significance_seconds": round(self.significance_seconds, 3),
            "tied_influence_share": self.tied_share,
            "seed_stability": self.seed_agreement.as_json() if self.seed_agreement else None,
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
        estimator=request.estimator,
    )
    replaces = inputs.scope in score_scopes(ws.db, inputs.set_id)
    return RankPlan(inputs, request.over_all, request.per_class, replaces)


def run(ws: Workspace, request: RankRequest) -> RankResult:
    """Score every ranking, judge it against chance and store the scores in one transaction
    (replacing this scope's, and with a mean over several seeds each seed's)."""
    from ddsem.db.scores import replace_scopes

    p = plan(ws, request)
    inputs = p.inputs
    n, t = inputs.influence.shape
    matrices = [inputs.influence, *(inputs.influence_by_seed if p.seed_scopes else [])]
    start = time.perf_counter()
    with ws.progress.phase(PHASE, p.steps) as advance:
        all_scores = [
            score_attributes(
                matrix,
                inputs.test_classes,
                inputs.labels,
                inputs.num_classes,
                all_classes=p.over_all,
                within_class=p.per_class,
                progress=advance,
            )
            for matrix in matrices
        ]
    seconds = time.perf_counter() - start
    scores = all_scores[0]
    start = time.perf_counter()
    pairs = distinct_pairs(scores.totals, scores.positives)
    with ws.progress.phase(SIGNIFICANCE_PHASE, pairs * len(all_scores)) as advance:
        all_judged = [
            judge(
                sc.ap,
                sc.totals,
                sc.positives,
                alpha=request.alpha,
                draws=request.draws,
                progress=advance,
            )
            for sc in all_scores
        ]
    significance_seconds = time.perf_counter() - start
    judged = all_judged[0]
    rows, undefined = score_rows(inputs, scores, judged)
    rows_by_scope = {inputs.scope: rows}
    for scope, sc, jd in zip(p.seed_scopes, all_scores[1:], all_judged[1:], strict=True):
        rows_by_scope[scope] = score_rows(inputs, sc, jd, scope=scope)[0]
    stored = replace_scopes(
        ws.db, inputs.set_id, inputs.context, scores.class_filters, rows_by_scope
    )
    agreement = None
    stability = None
    if p.seed_scopes:
        stability = seed_stability(
            list(inputs.seeds),
            np.stack([sc.ap for sc in all_scores[1:]]),
            np.stack([jd.significant for jd in all_judged[1:]]),
        )
        agreement = SeedAgreement(
            seeds=list(inputs.seeds),
            scopes=list(p.seed_scopes),
            spearman=stability.spearman,
            significant_by_seed=[int(jd.significant.sum()) for jd in all_judged[1:]],
            significant_in_every_seed=int(stability.significant_in_all.sum()),
            stored_per_seed=stored[p.seed_scopes[0]],
        )
    tied = tied_share(inputs.influence)
    if tied > TIES_WORTH_A_NOTE:
        ws.progress.note(
            f"{100 * tied:.1f}% of the influence values are tied within their row: the "
            "p-values assume a tie-free ranking (the shared null)"
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
        stored=stored[inputs.scope],
        undefined=undefined,
        seconds=seconds,
        top=top_scores(
            inputs,
            scores,
            judged,
            request.top,
            request.min_positives,
            seed_aps=[sc.ap for sc in all_scores[1:]],
            stability=stability,
        ),
        min_positives=request.min_positives,
        alpha=request.alpha,
        min_draws=draw_range(request.draws)[0],
        max_draws=request.draws,
        significant=int(judged.significant.sum()),
        family=judged.family,
        significance_seconds=significance_seconds,
        tied_share=tied,
        seed_agreement=agreement,
    )


def _filter_text(inputs: RankingInputs, class_filter: int) -> str:
    return "all" if class_filter == ALL_CLASSES else inputs.classes[class_filter]


def score_rows(
    inputs: RankingInputs, scores: Scores, judged: Judged, scope: str | None = None
) -> tuple[list[dict[str, Any]], int]:
    """AttributeScore rows for every defined (distilled image, attribute, class filter) of
    ``scope`` (default: the inputs'), with chance, p and q, and the number of (attribute, class
    filter) pairs left out because they have no positive."""
    rate = scores.positive_rate
    lift = scores.lift
    defined = scores.positives > 0  # (F, A)
    rows: list[dict[str, Any]] = []
    f_idx, a_idx = np.nonzero(defined)
    chance = judged.chance[f_idx, a_idx].tolist()
    draws = judged.draws[f_idx, a_idx].tolist()
    fixed = [
        {
            "set_id": inputs.set_id,
            "scope": scope or inputs.scope,
            "context": inputs.context,
            "attribute_id": inputs.attributes[a].id,
            "class_filter": scores.class_filters[f],
            "estimator": ESTIMATOR,
            "positive_rate": float(rate[f, a]),
            "positives": int(scores.positives[f, a]),
            "chance_ap": ch,
            "draws": int(d),
        }
        for f, a, ch, d in zip(f_idx.tolist(), a_idx.tolist(), chance, draws, strict=True)
    ]
    for k in range(scores.ap.shape[0]):
        columns = (
            scores.ap[k, f_idx, a_idx].tolist(),
            lift[k, f_idx, a_idx].tolist(),
            judged.p[k, f_idx, a_idx].tolist(),
            judged.q[k, f_idx, a_idx].tolist(),
        )
        for base, ap, li, pv, qv in zip(fixed, *columns, strict=True):
            rows.append(
                {**base, "distilled_index": k, "ap": ap, "lift": li, "p_value": pv, "q_value": qv}
            )
    return rows, int((~defined).sum())


def top_scores(
    inputs: RankingInputs,
    scores: Scores,
    judged: Judged,
    top: int,
    min_positives: int,
    *,
    seed_aps: list[np.ndarray] | None = None,
    stability: SeedStability | None = None,
) -> list[TopScore]:
    """The strongest answers: lowest q first, then highest AP (then distilled index, attribute
    and class filter), among attributes with enough positives."""
    eligible = (scores.positives > 0) & (scores.positives >= min_positives)  # (F, A)
    k_idx, f_idx, a_idx = np.nonzero(np.broadcast_to(eligible, scores.ap.shape))
    q = judged.q[k_idx, f_idx, a_idx]
    ap = scores.ap[k_idx, f_idx, a_idx]
    order = np.lexsort((f_idx, a_idx, k_idx, -ap, q))[: max(top, 0)]
    out = []
    for i in order.tolist():
        k, f, a = int(k_idx[i]), int(f_idx[i]), int(a_idx[i])
        extra: dict[str, Any] = {}
        if seed_aps and stability is not None:
            extra = {
                "ap_by_seed": [float(s[k, f, a]) for s in seed_aps],
                "ap_sd": float(stability.sd[k, f, a]),
                "significant_in_every_seed": bool(stability.significant_in_all[k, f, a]),
            }
        out.append(
            TopScore(
                distilled_index=k,
                distilled_class=inputs.classes[int(inputs.distilled_labels[k])],
                attribute=inputs.attributes[a].name,
                class_filter=_filter_text(inputs, scores.class_filters[f]),
                ap=float(scores.ap[k, f, a]),
                positive_rate=float(scores.positive_rate[f, a]),
                positives=int(scores.positives[f, a]),
                lift=float(scores.lift[k, f, a]),
                chance_ap=float(judged.chance[f, a]),
                p_value=float(judged.p[k, f, a]),
                q_value=float(judged.q[k, f, a]),
                draws=int(judged.draws[f, a]),
                significant=bool(judged.significant[k, f, a]),
                **extra,
            )
        )
    return out
