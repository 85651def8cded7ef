"""How well an approximate influence matrix agrees with exact leave-one-out (issue 20).

Pearson (values) and Spearman (ranks) per distilled image and over all pairs, and the top-k
overlap of the most influenced test images, each with the level a random matrix would reach;
and, when the test images are annotated, how many of exact LOO's significant semantic answers
an estimate also finds. The exact runs of two seeds give the reference: how much exact LOO
itself moves with the initialisation (an estimate of seed S starts from the same initial state
as seed S's exact run, so its agreement with it can exceed another seed's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ddsem.influence.checks import pearson_rows, spearman_rows


def _num(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 6)


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


@dataclass
class Fidelity:
    """Agreement of an estimate with exact LOO over the same (N, T) distilled x test images."""

    pearson_rows: np.ndarray  # (N,)
    spearman_rows: np.ndarray  # (N,)
    pearson: float  # over all N x T pairs
    spearman: float  # over all N x T pairs
    top_k: int
    overlap_rows: np.ndarray  # (N,) |top-k(estimate) & top-k(exact)| / k
    chance_overlap: float  # k / T: the expected overlap of a random ranking

    @property
    def pearson_mean(self) -> float:
        return _nanmean(self.pearson_rows)

    @property
    def spearman_mean(self) -> float:
        return _nanmean(self.spearman_rows)

    @property
    def overlap(self) -> float:
        return float(self.overlap_rows.mean())

    def as_json(self) -> dict[str, Any]:
        return {
            "pearson": _num(self.pearson),
            "spearman": _num(self.spearman),
            "pearson_mean_per_image": _num(self.pearson_mean),
            "spearman_mean_per_image": _num(self.spearman_mean),
            "pearson_per_image": [_num(v) for v in self.pearson_rows],
            "spearman_per_image": [_num(v) for v in self.spearman_rows],
            "top_k": self.top_k,
            "top_k_overlap": _num(self.overlap),
            "top_k_overlap_per_image": [_num(v) for v in self.overlap_rows],
            "chance_top_k_overlap": _num(self.chance_overlap),
        }


def top_sets(matrix: np.ndarray, k: int) -> np.ndarray:
    """(N, k) positions of each row's k largest values (ties: lower position first)."""
    return np.argsort(-matrix, axis=1, kind="stable")[:, :k]


def fidelity(exact: np.ndarray, estimate: np.ndarray, k: int) -> Fidelity:
    """Compare two (N, T) matrices; ``k`` is clipped to T."""
    from scipy.stats import rankdata

    if exact.shape != estimate.shape:
        raise ValueError(f"influence matrices differ in shape: {exact.shape} vs {estimate.shape}")
    t = exact.shape[1]
    k = max(1, min(k, t))
    a, b = exact.reshape(1, -1), estimate.reshape(1, -1)  # every pair
    top_a, top_b = top_sets(exact, k), top_sets(estimate, k)
    overlap = np.asarray([len(np.intersect1d(x, y)) / k for x, y in zip(top_a, top_b, strict=True)])
    return Fidelity(
        pearson_rows=pearson_rows(exact, estimate),
        spearman_rows=spearman_rows(exact, estimate),
        pearson=float(pearson_rows(a, b)[0]),
        spearman=float(pearson_rows(rankdata(a.ravel())[None], rankdata(b.ravel())[None])[0]),
        top_k=k,
        overlap_rows=overlap,
        chance_overlap=k / t,
    )


@dataclass
class AnswerAgreement:
    """Significant semantic answers, (distilled image, class filter, attribute) at q < alpha."""

    exact: int  # significant under exact LOO
    estimate: int  # significant under the estimate
    found: int  # significant under both
    added: int  # significant under the estimate only

    @property
    def recall(self) -> float:
        """The share of exact LOO's significant answers the estimate also finds."""
        return self.found / self.exact if self.exact else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {
            "exact_significant": self.exact,
            "estimate_significant": self.estimate,
            "found": self.found,
            "added": self.added,
            "recall": _num(self.recall),
        }


def answer_agreement(exact: np.ndarray, estimate: np.ndarray) -> AnswerAgreement:
    """Two boolean masks of significant answers of the same shape."""
    exact, estimate = np.asarray(exact, bool), np.asarray(estimate, bool)
    return AnswerAgreement(
        exact=int(exact.sum()),
        estimate=int(estimate.sum()),
        found=int((exact & estimate).sum()),
        added=int((estimate & ~exact).sum()),
    )
