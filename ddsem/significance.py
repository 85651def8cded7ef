"""Is an answer better than chance? Chance AP, permutation p-values, Benjamini-Hochberg q-values
and seed stability for the average precision of influence rankings (NumPy and SciPy only).

The null hypothesis for one (distilled image, attribute, class filter): the influence ranking
of the T test images in the filter is independent of which P of them have the attribute. Under
it the positives sit at a uniformly random P-subset of the ranks, so the null distribution of AP
depends only on (T, P) (for rankings without ties; influence values are continuous, and
``tied_rows`` says where that does not hold). One null sample per (T, P) is therefore drawn once
and shared by every distilled image. Draws grow adaptively: each (T, P) starts with
``min_draws`` and is drawn ten times deeper while its most extreme observed AP is exceeded by
fewer than ``resolve_below`` null draws, up to ``max_draws``; the smallest p-value a (T, P)
can give is 1 / (draws + 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RESOLVE_BELOW = 10  # draw deeper while fewer null draws than this reach the most extreme AP


def chance_ap(total: int | np.ndarray, positives: int | np.ndarray) -> np.ndarray:
    """The exact expected AP of a random ranking of ``total`` items of which ``positives`` are
    positive: (1/T) [(P-1)/(T-1) (T - H_T) + H_T], H_T the T-th harmonic number. NaN where
    P = 0 (AP is undefined)."""
    t = np.asarray(total, dtype=np.float64)
    p = np.asarray(positives, dtype=np.float64)
    t_int = np.asarray(total, dtype=np.int64)
    harmonic = _harmonic(t_int)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(t > 1, (p - 1) / np.maximum(t - 1, 1), 0.0)
        value = (ratio * (t - harmonic) + harmonic) / t
    return np.where(p > 0, value, np.nan)


def _harmonic(n: np.ndarray) -> np.ndarray:
    n = np.asarray(n, dtype=np.int64)
    top = int(n.max()) if n.size else 0
    table = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1))])
    return table[n]


def null_ap(total: int, positives: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """``draws`` APs of random rankings: the positives at a uniformly random subset of ranks."""
    if positives * positives > total:  # many positives: selection sampling, all draws at once
        return _selection_sampling_ap(total, positives, draws, rng)
    out = np.empty(draws, dtype=np.float64)
    k = np.arange(1, positives + 1, dtype=np.float64)
    chunk = max(1, min(draws, 4_000_000 // max(positives, 1)))
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        ranks = _distinct_ranks(n, total, positives, rng)  # few positives: redraw repeats
        out[start : start + n] = (k / (ranks + 1)).sum(axis=1) / positives
    return out


def _selection_sampling_ap(total: int, positives: int, draws: int, rng: np.random.Generator):
    """Knuth's selection sampling (Algorithm S) run for all draws side by side: rank i is taken
    with probability (P - taken) / (T - i), which gives every P-subset the same chance, and
    the AP is summed as it goes (taken / (i + 1) at each positive)."""
    taken = np.zeros(draws, np.float64)
    total_ap = np.zeros(draws, np.float64)
    take = np.empty(draws, bool)
    scaled = np.empty(draws, np.float64)
    block = 64
    for first in range(0, total, block):
        uniform = rng.random((min(block, total - first), draws))
        for j, u in enumerate(uniform):
            i = first + j
            np.multiply(u, total - i, out=scaled)
            np.less(scaled, positives - taken, out=take)
            taken += take
            np.multiply(take, taken, out=scaled)
            scaled /= i + 1
            total_ap += scaled
    return total_ap / positives


def _distinct_ranks(n: int, total: int, positives: int, rng: np.random.Generator) -> np.ndarray:
    """(n, P) sorted ranks, each row a uniform P-subset of 0..T-1 (rejection of repeats)."""
    ranks = np.sort(rng.integers(0, total, size=(n, positives)), axis=1)
    bad = (np.diff(ranks, axis=1) == 0).any(axis=1) if positives > 1 else np.zeros(n, bool)
    while bad.any():
        redo = np.sort(rng.integers(0, total, size=(int(bad.sum()), positives)), axis=1)
        ranks[bad] = redo
        bad[bad] = (np.diff(redo, axis=1) == 0).any(axis=1)
    return ranks


@dataclass(frozen=True)
class PValues:
    """One-sided permutation p-values (N, F, A) and the null draws behind each (F, A)."""

    p: np.ndarray  # (N, F, A), NaN where P = 0
    draws: np.ndarray  # (F, A) null draws used for that (T, P); 0 where undefined


def permutation_p_values(
    ap: np.ndarray,
    totals: np.ndarray,
    positives: np.ndarray,
    *,
    min_draws: int = 1000,
    max_draws: int = 100_000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> PValues:
    """p = (1 + #{null AP >= observed AP}) / (1 + draws) for every AP in ``ap`` (N, F, A), with
    ``totals`` (F,) test images per filter and ``positives`` (F, A) positives among them. One
    null per distinct (T, P), drawn with a generator seeded by (seed, T, P), so a result does not
    depend on which other pairs were asked."""
    ap = np.asarray(ap, dtype=np.float64)
    n, f, a = ap.shape
    p = np.full(ap.shape, np.nan)
    draws = np.zeros((f, a), dtype=np.int64)
    pairs: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for fi in range(f):
        for ai in range(a):
            if positives[fi, ai] > 0:
                pairs.setdefault((int(totals[fi]), int(positives[fi, ai])), []).append((fi, ai))
    eps = 1e-12  # AP of a tie-free ranking is a sum of fractions: count equal values as reached
    for (t, pos), cells in pairs.items():
        observed = np.stack([ap[:, fi, ai] for fi, ai in cells], axis=1)  # (N, cells)
        rng = np.random.default_rng([seed, t, pos])
        null = null_ap(t, pos, min_draws, rng)
        while len(null) < max_draws:
            reached = int((null >= np.nanmax(observed) - eps).sum())
            if reached >= RESOLVE_BELOW:
                break
            more = min(max_draws, 10 * len(null)) - len(null)
            null = np.concatenate([null, null_ap(t, pos, more, rng)])
        null.sort()
        exceed = len(null) - np.searchsorted(null, observed - eps, side="left")
        values = (1.0 + exceed) / (1.0 + len(null))
        for j, (fi, ai) in enumerate(cells):
            p[:, fi, ai] = values[:, j]
            draws[fi, ai] = len(null)
        if progress is not None:
            progress(1)
    return PValues(p, draws)


def distinct_pairs(totals: np.ndarray, positives: np.ndarray) -> int:
    """How many nulls ``permutation_p_values`` draws (its progress total)."""
    return len(
        {
            (int(totals[fi]), int(positives[fi, ai]))
            for fi in range(positives.shape[0])
            for ai in range(positives.shape[1])
            if positives[fi, ai] > 0
        }
    )


def q_values(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values over every finite entry of ``p`` (the family), NaN kept."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        q[finite] = false_discovery_control(p[finite], method="bh")
    return q


def tied_rows(influence: np.ndarray) -> int:
    """Distilled images whose influence row has tied values (the shared null assumes none)."""
    s = np.sort(np.asarray(influence), axis=1)
    return int((np.diff(s, axis=1) == 0).any(axis=1).sum())


@dataclass(frozen=True)
class SeedStability:
    """AP of the same answers under several seeds' influence."""

    seeds: list[int]
    mean: np.ndarray  # (N, F, A) AP mean over seeds
    sd: np.ndarray  # (N, F, A) sample standard deviation (ddof 1)
    significant_in_all: np.ndarray  # (N, F, A) bool: q < alpha in every seed
    spearman: list[tuple[int, int, float]]  # (seed a, seed b, Spearman rho of all defined APs)


def seed_stability(
    seeds: list[int], ap_by_seed: np.ndarray, significant_by_seed: np.ndarray
) -> SeedStability:
    """Mean and sd of AP over seeds (S, N, F, A), significance in every seed, and how well two
    seeds agree on the ranking of all answers (Spearman over the defined entries)."""
    from scipy.stats import spearmanr

    ap_by_seed = np.asarray(ap_by_seed, dtype=np.float64)
    defined = np.isfinite(ap_by_seed).all(axis=0)
    pairs = []
    for i in range(len(seeds)):
        for j in range(i + 1, len(seeds)):
            rho = spearmanr(ap_by_seed[i][defined], ap_by_seed[j][defined]).statistic
            pairs.append((seeds[i], seeds[j], float(rho)))
    sd = ap_by_seed.std(axis=0, ddof=1) if len(seeds) > 1 else np.zeros(ap_by_seed.shape[1:])
    return SeedStability(
        seeds=list(seeds),
        mean=ap_by_seed.mean(axis=0),
        sd=sd,
        significant_in_all=np.asarray(significant_by_seed, dtype=bool).all(axis=0),
        spearman=pairs,
    )
