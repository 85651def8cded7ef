"""Is an answer better than chance? Chance AP, permutation p-values, Benjamini-Hochberg q-values
and seed stability for the average precision of influence rankings (NumPy and SciPy only).

The null hypothesis for one (distilled image, attribute, class filter): the influence ranking
of the T test images in the filter is independent of which P of them have the attribute. Under
it the positives sit at a uniformly random P-subset of the ranks, so the null distribution of AP
depends only on (T, P) (for rankings without ties; influence values are continuous, and
``tied_share`` says how far that does not hold). One null sample per (T, P) is therefore drawn once
and shared by every distilled image. Draws grow adaptively: each (T, P) starts with
``min_draws`` and is drawn ten times deeper, up to ``max_draws``, only while it holds an answer
that fewer than 10 null draws reach and that could still be significant over the family; the
smallest p-value a (T, P) can give is 1 / (draws + 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RESOLVE_BELOW = 10  # an answer is resolved once this many null draws reach its AP
# The optimistic p of an unresolved answer is this lower quantile of its p given the draws so
# far (Clopper-Pearson). A 90% bound: 1 of 1,000 draws reaching it then means p >= 1.05e-4,
# above the 10,000-draw floor, so pure noise does not deepen every null (the answers with no
# draw reaching them, 1 in 1,000, are too few to pass BH at the floor) while a real signal does.
LOWER_BOUND = 0.1


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
    """``draws`` APs of random rankings: the positives at a uniformly random subset of ranks.
    Three exact samplers, by what is cheapest (measured; benchmarks/rank.py): few positives
    (P^2 <= T) draw ranks and redraw repeats; a small side (min(P, T-P) <= T/16) runs Floyd's
    algorithm; otherwise selection sampling walks the T ranks once for all draws."""
    kind = _sampler(total, positives)
    if kind == "selection":
        return _selection_sampling_ap(total, positives, draws, rng)
    few = kind == "ranks"
    out = np.empty(draws, dtype=np.float64)
    budget = 4_000_000 // positives if few else 20_000_000 // total  # rows per chunk
    chunk = max(1, min(draws, budget))
    k = np.arange(1, positives + 1, dtype=np.float64)
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        if few:
            ranks = _distinct_ranks(n, total, positives, rng)
        else:
            ranks = _subset_ranks(n, total, positives, rng)
        out[start : start + n] = (k / (ranks + 1)).sum(axis=1) / positives
    return out


def _selection_sampling_ap(total: int, positives: int, draws: int, rng: np.random.Generator):
    """Selection sampling for one P (see ``selection_sampling_ap``)."""
    return selection_sampling_ap(total, [positives], draws, rng)[0]


def selection_sampling_ap(
    total: int, positives: list[int], draws: int, rng: np.random.Generator
) -> np.ndarray:
    """(len(positives), draws) null APs by Knuth's selection sampling (Algorithm S), for several
    P at once on one stream of uniforms: rank i is taken for P with probability
    (P - taken_P) / (T - i), which gives every P-subset the same chance (each P's draws depend
    on the uniforms and P only, not on the other P), and the AP is summed as it goes."""
    want = np.asarray(positives, dtype=np.float64)[None, :]
    out = np.empty((want.shape[1], draws), np.float64)
    chunk = max(1, min(draws, 2_000_000 // want.shape[1]))
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        taken = np.zeros((n, want.shape[1]), np.float64)
        total_ap = np.zeros_like(taken)
        take = np.empty(taken.shape, bool)
        scaled = np.empty_like(taken)
        block = 64
        for first in range(0, total, block):
            uniform = rng.random((min(block, total - first), n, 1))
            for j, u in enumerate(uniform):
                i = first + j
                np.multiply(u, total - i, out=scaled)
                np.less(scaled, want - taken, out=take)
                taken += take
                np.multiply(take, taken, out=scaled)
                scaled /= i + 1
                total_ap += scaled
        out[:, start : start + n] = (total_ap / want).T
    return out


def _sampler(total: int, positives: int) -> str:
    """Which exact sampler is cheapest for (T, P): "ranks", "floyd" or "selection"."""
    if positives * positives <= total:
        return "ranks"
    return "floyd" if 16 * min(positives, total - positives) <= total else "selection"


def _distinct_ranks(n: int, total: int, positives: int, rng: np.random.Generator) -> np.ndarray:
    """(n, P) sorted ranks, each row a uniform P-subset of 0..T-1 (rejection of repeats)."""
    ranks = np.sort(rng.integers(0, total, size=(n, positives)), axis=1)
    bad = (np.diff(ranks, axis=1) == 0).any(axis=1) if positives > 1 else np.zeros(n, bool)
    while bad.any():
        redo = np.sort(rng.integers(0, total, size=(int(bad.sum()), positives)), axis=1)
        ranks[bad] = redo
        bad[bad] = (np.diff(redo, axis=1) == 0).any(axis=1)
    return ranks


def _subset_ranks(n: int, total: int, positives: int, rng: np.random.Generator) -> np.ndarray:
    """(n, P) sorted ranks, each row a uniform P-subset of 0..T-1, by Floyd's algorithm run for
    all rows side by side on a (n, T) mask: min(P, T - P) steps (the complement when P > T/2)."""
    size = min(positives, total - positives)
    chosen = np.zeros((n, total), dtype=bool)
    rows = np.arange(n)
    for j in range(total - size, total):
        pick = rng.integers(0, j + 1, size=n)
        pick[chosen[rows, pick]] = j  # already taken: take j instead (Floyd)
        chosen[rows, pick] = True
    if size != positives:
        np.logical_not(chosen, out=chosen)
    return np.nonzero(chosen)[1].reshape(n, positives)  # row-major: sorted within each row


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
    max_draws: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> PValues:
    """p = (1 + #{null AP >= observed AP}) / (1 + draws) for every AP in ``ap`` (N, F, A), with
    ``totals`` (F,) test images per filter and ``positives`` (F, A) positives among them.

    One null per distinct (T, P), drawn with a generator seeded by (seed, T, P), so deeper draws
    extend shallower ones and a p-value does not depend on which other pairs were asked. Every
    null starts with ``min_draws``; a null is drawn ten times deeper only while it holds an
    answer that is not resolved (fewer than 10 null draws reach it) and that could still be
    significant at ``alpha`` over the family: Benjamini-Hochberg applied to optimistic p-values
    (a 90% lower bound from the draws so far, at least 1 / (max_draws + 1)) keeps it.
    """
    from scipy.stats import beta

    ap = np.asarray(ap, dtype=np.float64)
    n, f, a = ap.shape
    pairs: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for fi in range(f):
        for ai in range(a):
            if positives[fi, ai] > 0:
                pairs.setdefault((int(totals[fi]), int(positives[fi, ai])), []).append((fi, ai))
    keys = list(pairs)
    eps = 1e-12  # AP of a tie-free ranking is a sum of fractions: count equal values as reached
    observed = [np.stack([ap[:, fi, ai] for fi, ai in pairs[key]], axis=1) for key in keys]
    rngs = [np.random.default_rng([seed, t, pos]) for t, pos in keys]
    nulls: list[np.ndarray] = [np.zeros(0)] * len(keys)

    def draw(which: list[int], depth: int, report: bool = False) -> None:
        """Extend the nulls ``which`` to ``depth`` draws. Pairs for selection sampling that share
        T share one walk over the ranks (uniforms seeded by (seed, T, draws so far))."""
        shared: dict[tuple[int, int], list[int]] = {}
        for k in which:
            t, pos = keys[k]
            if _sampler(t, pos) == "selection":
                shared.setdefault((t, len(nulls[k])), []).append(k)
                continue
            extra = null_ap(t, pos, depth - len(nulls[k]), rngs[k])
            nulls[k] = np.sort(np.concatenate([nulls[k], extra]))
            if report and progress is not None:
                progress(1)
        for (t, done), group in shared.items():
            rng = np.random.default_rng([seed, t, done, 1])
            extra = selection_sampling_ap(t, [keys[k][1] for k in group], depth - done, rng)
            for k, row in zip(group, extra, strict=True):
                nulls[k] = np.sort(np.concatenate([nulls[k], row]))
            if report and progress is not None:
                progress(len(group))

    draw(list(range(len(keys))), min_draws, report=True)  # the progress: one step per null
    floor = 1.0 / (max_draws + 1)

    def counts(k: int) -> np.ndarray:
        null = nulls[k]
        return len(null) - np.searchsorted(null, observed[k] - eps, side="left")

    while True:
        exceed = [counts(k) for k in range(len(keys))]
        optimistic, unresolved = [], []
        for k, c in enumerate(exceed):
            d = len(nulls[k])
            open_ = (c < RESOLVE_BELOW) & (d < max_draws)
            low = np.where(c > 0, beta.ppf(LOWER_BOUND, np.maximum(c, 1), d - c + 1), 0.0)
            optimistic.append(np.where(open_, np.maximum(low, floor), (1.0 + c) / (1.0 + d)))
            unresolved.append(open_)
        flat = np.concatenate([o[np.isfinite(o)] for o in optimistic]) if keys else np.zeros(0)
        if not flat.size:
            break
        threshold = _bh_threshold(flat, alpha)
        deepen = [
            k for k in range(len(keys)) if (unresolved[k] & (optimistic[k] <= threshold)).any()
        ]
        if not deepen:
            break
        by_depth: dict[int, list[int]] = {}
        for k in deepen:
            by_depth.setdefault(min(max_draws, 10 * len(nulls[k])), []).append(k)
        for depth, which in by_depth.items():
            draw(which, depth)

    p = np.full(ap.shape, np.nan)
    draws = np.zeros((f, a), dtype=np.int64)
    for k, key in enumerate(keys):
        values = (1.0 + counts(k)) / (1.0 + len(nulls[k]))
        for j, (fi, ai) in enumerate(pairs[key]):
            p[:, fi, ai] = values[:, j]
            draws[fi, ai] = len(nulls[k])
    return PValues(p, draws)


def _bh_threshold(p: np.ndarray, alpha: float) -> float:
    """The largest p that Benjamini-Hochberg rejects at ``alpha`` (0 when it rejects none)."""
    ordered = np.sort(p)
    ok = ordered <= alpha * np.arange(1, len(ordered) + 1) / len(ordered)
    return float(ordered[np.nonzero(ok)[0][-1]]) if ok.any() else 0.0


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


def tied_share(influence: np.ndarray) -> float:
    """The share of influence values equal to another in their row (the shared null assumes a
    tie-free ranking; float32 losses tie a few values in 10,000, which changes nothing)."""
    s = np.sort(np.asarray(influence), axis=1)
    equal = np.diff(s, axis=1) == 0
    tied = np.zeros(s.shape, bool)
    tied[:, 1:] |= equal
    tied[:, :-1] |= equal
    return float(tied.mean()) if tied.size else 0.0


TIES_WORTH_A_NOTE = 0.01  # above this share of tied values the p-values' assumption is noted


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
