"""How ``rank``, ``query`` and ``report`` judge an average precision: better than chance?

Chance is the exact expected AP of a random ranking of the T test images of a class filter with
P positives. The p-value of an AP is one-sided, from a permutation null (the positives at a
uniformly random P-subset of the ranks) drawn once per (T, P) with ``SignificanceConfig.seed``
and shared by every distilled image, so one (T, P) draws the same null in every job. An answer is
significant when its Benjamini-Hochberg q-value over the job's family is below ``alpha``: for
``rank`` the scores one run stores for a set and scope, for a question the N distilled images
ranked for it. Here too: the request checks for ``--alpha`` and ``--draws``, and how a p-value
at the floor of its draws is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from ddsem.config import SignificanceConfig
from ddsem.errors import UserError
from ddsem.significance import SeedStability, chance_ap, permutation_p_values, q_values
from ddsem.significance import seed_stability as _seed_stability

SIGNIFICANCE = SignificanceConfig()
ALPHA = SIGNIFICANCE.alpha
DRAWS = SIGNIFICANCE.max_draws
PHASE = "significance"


def check_alpha(alpha: object) -> None:
    """``--alpha``: a false discovery rate strictly between 0 and 1."""
    ok = (
        isinstance(alpha, Real)
        and not isinstance(alpha, bool)
        and math.isfinite(float(alpha))
        and 0 < float(alpha) < 1
    )
    if not ok:
        raise UserError(f"--alpha must be a number strictly between 0 and 1, got {alpha}")


def check_draws(draws: object) -> None:
    """``--draws``: the most null draws per (test images, positives), a positive integer."""
    if not isinstance(draws, Integral) or isinstance(draws, bool) or int(draws) < 1:
        raise UserError(f"--draws must be a positive integer, got {draws}")


def draw_range(draws: int) -> tuple[int, int]:
    """(first, most) null draws per (T, P) for a request's ``draws``: the config's first draw
    count, lowered to ``draws`` when that is smaller."""
    return min(SIGNIFICANCE.min_draws, int(draws)), int(draws)


@dataclass
class Judged:
    """Chance, p and q of every AP of one family."""

    chance: np.ndarray  # (F, A) exact expected AP of a random ranking; NaN without positives
    p: np.ndarray  # (N, F, A) one-sided permutation p-values; NaN where AP is undefined
    q: np.ndarray  # (N, F, A) Benjamini-Hochberg over every defined entry (the family)
    draws: np.ndarray  # (F, A) null draws behind each p (0 where undefined)
    alpha: float

    @property
    def significant(self) -> np.ndarray:
        """(N, F, A) bool: q < alpha (False where undefined)."""
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(self.q, nan=1.0) < self.alpha

    @property
    def family(self) -> int:
        """How many p-values the q-values correct for."""
        return int(np.isfinite(self.p).sum())


def judge(
    ap: np.ndarray,
    totals: np.ndarray,
    positives: np.ndarray,
    *,
    alpha: float,
    draws: int,
    progress: Callable[[int], None] | None = None,
) -> Judged:
    """Chance AP, permutation p and BH q (family: every defined entry of ``ap`` (N, F, A)) for
    ``totals`` (F,) test images per filter and ``positives`` (F, A)."""
    totals = np.asarray(totals, dtype=np.int64)
    positives = np.asarray(positives, dtype=np.int64)
    first, most = draw_range(draws)
    pv = permutation_p_values(
        ap,
        totals,
        positives,
        min_draws=first,
        max_draws=most,
        seed=SIGNIFICANCE.seed,
        progress=progress,
    )
    chance = chance_ap(np.broadcast_to(totals[:, None], positives.shape), positives)
    return Judged(chance, pv.p, q_values(pv.p), pv.draws, float(alpha))


def seed_stability(
    seeds: list[int], ap_by_seed: np.ndarray, significant_by_seed: np.ndarray
) -> SeedStability:
    """``ddsem.significance.seed_stability``, quietly: a Spearman rho of constant APs (a tiny
    filter) is NaN, not a warning on the terminal (jobs never print)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _seed_stability(seeds, ap_by_seed, significant_by_seed)


def p_floor(draws: int) -> float:
    """The smallest p-value ``draws`` null draws can give: 1 / (draws + 1)."""
    return 1.0 / (int(draws) + 1)


def format_p(p: float | None, draws: int | None) -> str:
    """A p-value in two significant digits; at the floor of its draws "<1/(draws+1)", e.g.
    "<1.0e-04" for 10,000 draws (no null draw reached the AP); "-" when not stored."""
    if p is None or draws is None or not math.isfinite(p):
        return "-"
    floor = p_floor(draws)
    if p <= floor * (1 + 1e-9):
        return f"<{floor:.1e}"
    return f"{p:.2g}"


def format_q(q: float | None) -> str:
    """A q-value in two significant digits; "-" when not stored."""
    if q is None or not math.isfinite(q):
        return "-"
    return f"{q:.2g}"
