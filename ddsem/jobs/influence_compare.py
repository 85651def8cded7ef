"""Job ``influence compare``: every approximate estimator's runs of a set scored against exact
leave-one-out (issue 20). Reads the database; writes only the figures.

For each estimator run, the exact run of the same seed (else the first exact seed, said so):
Pearson and Spearman per distilled image and over all pairs, the top-k overlap of the most
influenced test images with its chance level k / T, and, when the test images are annotated,
how many of exact LOO's significant (image, class filter, attribute) answers the estimate also
finds and how many it adds (the rank job's AP, permutation p and Benjamini-Hochberg q, computed
here for both matrices on the same annotated test images); with the cost of each (wall time and
trainings). Two exact seeds give the reference row: exact LOO of one seed against another's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.errors import UserError
from ddsem.jobs.common import check, not_empty, positive
from ddsem.jobs.judging import ALPHA, DRAWS, check_alpha, check_draws

if TYPE_CHECKING:
    import numpy as np

    from ddsem.db.influence import InfluenceRunInfo
    from ddsem.influence.compare import AnswerAgreement, Fidelity
    from ddsem.jobs.workspace import Workspace

CONTEXT = "distilled"  # the approximations estimate the distilled context only


@dataclass(frozen=True)
class CompareRequest:
    set_name: str | None = None
    method: str | None = None
    top_k: int = 10  # most influenced test images per distilled image, for the overlap
    out: str | None = None  # folder for the PNG scatter plots; None: no figures
    semantic: bool = True  # also compare the significant semantic answers (needs annotations)
    alpha: float = ALPHA
    draws: int = DRAWS

    def __post_init__(self) -> None:
        not_empty(self.set_name, "--set")
        not_empty(self.method, "--method")
        positive(self.top_k, "--top-k")
        check_alpha(self.alpha)
        check_draws(self.draws)
        if self.out is not None:
            out = Path(self.out).expanduser()
            check(not out.exists() or out.is_dir(), f"--out must be a folder; {out} is a file")


@dataclass
class Cost:
    """What a run cost: wall time of its trainings (and estimate) and how many trainings."""

    seconds: float
    trainings: int

    def as_json(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "trainings": self.trainings}


@dataclass
class Comparison:
    """One estimator run against exact LOO."""

    estimator: str
    seed: int
    exact_seed: int
    test_images: int
    fidelity: Fidelity
    cost: Cost
    exact_cost: Cost
    answers: AnswerAgreement | None = None
    answers_note: str = ""  # why there is no answer agreement, or what it was computed on
    figure: str | None = None

    @property
    def speedup(self) -> float:
        return self.exact_cost.seconds / self.cost.seconds if self.cost.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "seed": self.seed,
            "exact_seed": self.exact_seed,
            "test_images": self.test_images,
            "fidelity": self.fidelity.as_json(),
            "answers": None if self.answers is None else self.answers.as_json(),
            "answers_note": self.answers_note,
            "cost": self.cost.as_json(),
            "exact_cost": self.exact_cost.as_json(),
            "figure": self.figure,
        }


@dataclass
class CompareReport:
    set_name: str
    method: str
    num_images: int
    comparisons: list[Comparison]
    exact_seeds: list[int]
    reference: Comparison | None = None  # exact LOO of one seed against another seed's
    figures: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "set": self.set_name,
            "method": self.method,
            "num_images": self.num_images,
            "exact_seeds": self.exact_seeds,
            "reference": None if self.reference is None else self.reference.as_json(),
            "comparisons": [c.as_json() for c in self.comparisons],
            "figures": self.figures,
        }


def _cost(run: InfluenceRunInfo) -> Cost:
    return Cost(float(run.wall_seconds or 0.0), int(run.num_models))


def run(ws: Workspace, request: CompareRequest) -> CompareReport:
    """Compare every estimator run of the set with exact LOO; refuse when either is missing."""
    from ddsem.db.influence import list_runs, load_influence
    from ddsem.influence.checks import align
    from ddsem.influence.compare import fidelity
    from ddsem.jobs.common import resolve_set

    summary = resolve_set(ws.db, request.set_name, request.method)
    exact = list_runs(ws.db, summary.id, context=CONTEXT, estimator="loo")
    if not exact:
        raise UserError(
            f"no complete exact influence run for set {summary.name!r} to compare with: run "
            f"`ddsem influence --set {summary.name}` first (the estimates are scored against it)"
        )
    estimates = [
        r
        for r in list_runs(ws.db, summary.id, context=CONTEXT, estimator=None)
        if r.estimator != "loo"
    ]
    if not estimates:
        raise UserError(
            f"no estimator runs of set {summary.name!r} to compare: run `ddsem influence --set "
            f"{summary.name} --estimator if|tracin|trak` first"
        )
    by_seed = {r.seed: r for r in exact}
    loaded: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def matrix(run: InfluenceRunInfo) -> tuple[np.ndarray, np.ndarray]:
        if run.id not in loaded:
            loaded[run.id] = load_influence(ws.db, run.id)
        return loaded[run.id]

    significant = _Significance(ws, summary.name, request) if request.semantic else None
    out = Path(request.out).expanduser() if request.out else None
    comparisons: list[Comparison] = []

    def compare(a: InfluenceRunInfo, b: InfluenceRunInfo, label: str) -> Comparison:
        """``b`` (the estimate, or a second exact seed) against ``a`` (exact LOO)."""
        (ma, ta), (mb, tb) = matrix(a), matrix(b)
        (ma, mb), common = align([ma, mb], [ta, tb])
        result = Comparison(
            estimator=label,
            seed=b.seed,
            exact_seed=a.seed,
            test_images=len(common),
            fidelity=fidelity(ma, mb, request.top_k),
            cost=_cost(b),
            exact_cost=_cost(a),
        )
        if significant is not None:
            result.answers, result.answers_note = significant.agreement(a, b)
        if out is not None:
            result.figure = str(_figure(out, summary.name, result, ma, mb))
        return result

    with ws.progress.phase("comparing estimates with exact LOO", len(estimates)) as advance:
        for run in estimates:
            reference = by_seed.get(run.seed, exact[0])
            comparisons.append(compare(reference, run, run.estimator))
            advance(1)
    reference = compare(exact[0], exact[1], "loo") if len(exact) > 1 else None
    figures = [c.figure for c in [*comparisons, reference] if c is not None and c.figure]
    return CompareReport(
        summary.name,
        summary.method,
        summary.num_images,
        comparisons,
        [r.seed for r in exact],
        reference,
        figures,
    )


class _Significance:
    """The significant semantic answers of a run's influence, computed once per run."""

    def __init__(self, ws: Workspace, set_name: str, request: CompareRequest) -> None:
        self.ws, self.set_name, self.request = ws, set_name, request
        self.cache: dict[int, tuple[Any, str]] = {}

    def answers(self, run: InfluenceRunInfo) -> tuple[Any, str]:
        """((N, F, A) significant mask and the annotated test images, or None), note."""
        from ddsem.jobs.judging import judge
        from ddsem.jobs.semantic_inputs import load_ranking_inputs
        from ddsem.semantics import score_attributes

        if run.id in self.cache:
            return self.cache[run.id]
        try:
            inputs = load_ranking_inputs(
                self.ws.db, set_name=self.set_name, seed=run.seed, estimator=run.estimator
            )
        except UserError as e:  # not annotated yet, or no attributes: said in the report
            self.cache[run.id] = (None, str(e))
            return self.cache[run.id]
        scores = score_attributes(
            inputs.influence, inputs.test_classes, inputs.labels, inputs.num_classes
        )
        judged = judge(
            scores.ap,
            scores.totals,
            scores.positives,
            alpha=self.request.alpha,
            draws=self.request.draws,
        )
        self.cache[run.id] = ((judged.significant, tuple(inputs.test_indices)), "")
        return self.cache[run.id]

    def agreement(
        self, exact: InfluenceRunInfo, estimate: InfluenceRunInfo
    ) -> tuple[AnswerAgreement | None, str]:
        from ddsem.influence.compare import answer_agreement

        (a, note_a), (b, note_b) = self.answers(exact), self.answers(estimate)
        if a is None or b is None:
            return None, note_a or note_b
        if a[1] != b[1]:
            return None, "the two runs cover different annotated test images"
        family = int(a[0].size)
        return answer_agreement(a[0], b[0]), (
            f"{len(a[1])} annotated test images, {family} (image, class filter, attribute) "
            f"answers, q < {self.request.alpha:g}"
        )


def _figure(out: Path, set_name: str, c: Comparison, exact: np.ndarray, estimate: np.ndarray):
    from ddsem.influence.figures import scatter_check

    name = f"compare_{set_name}_{c.estimator}_seed{c.seed}.png".replace("/", "_")
    other = "exact LOO" if c.estimator == "loo" else c.estimator
    return scatter_check(
        exact,
        estimate,
        c.fidelity.spearman_rows,
        out / name,
        xlabel=f"exact LOO influence (seed {c.exact_seed})",
        ylabel=f"{other} influence (seed {c.seed})",
        title=(
            f"{set_name}: {other} vs exact LOO, Pearson {c.fidelity.pearson:.3f}, "
            f"Spearman {c.fidelity.spearman:.3f}"
        ),
        coefficient="Spearman",
    )
