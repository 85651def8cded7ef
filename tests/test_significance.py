"""Chance AP, permutation p-values and q-values against independent references: exhaustive
enumeration, scikit-learn's average precision, scipy's KS test and scipy's BH."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score

from ddsem.semantics import average_precision
from ddsem.significance import (
    chance_ap,
    null_ap,
    permutation_p_values,
    q_values,
    seed_stability,
    tied_share,
)


def _exhaustive(total: int, positives: int) -> np.ndarray:
    """AP (scikit-learn) of every placement of the positives in a fixed tie-free ranking."""
    scores = np.arange(total, 0, -1, dtype=float)  # rank 0 first
    aps = []
    for chosen in combinations(range(total), positives):
        y = np.zeros(total, int)
        y[list(chosen)] = 1
        aps.append(average_precision_score(y, scores))
    return np.asarray(aps)


@pytest.mark.parametrize(("total", "positives"), [(1, 1), (5, 1), (6, 2), (8, 3), (9, 9), (10, 4)])
def test_chance_ap_is_the_exact_mean_over_every_placement(total, positives):
    assert chance_ap(total, positives) == pytest.approx(
        _exhaustive(total, positives).mean(), abs=1e-12
    )


def test_chance_ap_is_nan_without_positives_and_broadcasts():
    out = chance_ap(np.array([50, 50, 1000]), np.array([0, 3, 10]))
    assert np.isnan(out[0]) and out[1] == pytest.approx(0.12712761, abs=1e-8)
    assert out[2] > 10 / 1000  # above the positive rate: AP's bias for rare attributes


@pytest.mark.parametrize(
    ("total", "positives"), [(50, 3), (400, 20), (1000, 50), (1000, 980), (300, 100), (1000, 400)]
)
def test_the_simulated_null_mean_equals_the_closed_form(total, positives):
    """Every sampler: few positives (rank rejection), a small side (Floyd, either way round)
    and the rest (selection sampling)."""
    draws = null_ap(total, positives, 40_000, np.random.default_rng(1))
    se = draws.std() / np.sqrt(len(draws))
    assert abs(draws.mean() - chance_ap(total, positives)) < 4 * se


@pytest.mark.parametrize(("total", "positives"), [(7, 2), (7, 5), (40, 38)])  # each sampler
def test_the_null_distribution_matches_exhaustive_enumeration(total, positives):
    exact = _exhaustive(total, positives)
    values, counts = np.unique(np.round(exact, 10), return_counts=True)
    draws = np.round(null_ap(total, positives, 30_000, np.random.default_rng(2)), 10)
    observed = np.array([(draws == v).sum() for v in values])
    assert observed.sum() == len(draws)  # no value outside the exact support
    expected = counts / counts.sum() * len(draws)
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_p_values_are_uniform_when_influence_ignores_the_attribute():
    rng = np.random.default_rng(3)
    influence = rng.normal(size=(300, 200))
    labels = rng.random((200, 6)) < np.array([0.02, 0.05, 0.1, 0.3, 0.5, 0.8])
    labels[0] = True  # no attribute without positives
    ap = average_precision(influence, labels)  # (N, 1, A)
    result = permutation_p_values(
        ap, np.array([200]), labels.sum(axis=0)[None], min_draws=4000, max_draws=4000
    )
    p = result.p.ravel()
    assert np.isfinite(p).all()
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert (result.draws == 4000).all()


def test_q_values_equal_scipys_benjamini_hochberg_and_keep_nan():
    p = np.array([[0.001, 0.2, np.nan], [0.04, 0.03, 0.9]])
    q = q_values(p)
    finite = np.isfinite(p)
    assert np.isnan(q[~finite]).all()
    np.testing.assert_allclose(q[finite], stats.false_discovery_control(p[finite], method="bh"))


def test_a_planted_signal_is_found_and_the_rest_are_not():
    rng = np.random.default_rng(4)
    n, t = 40, 500
    labels = np.zeros((t, 3), bool)
    labels[rng.choice(t, 60, replace=False), 0] = True
    labels[rng.choice(t, 60, replace=False), 1] = True
    labels[rng.choice(t, 200, replace=False), 2] = True
    influence = rng.normal(size=(n, t))
    influence[7] += 1.5 * labels[:, 0]  # distilled image 7 drives attribute 0
    ap = average_precision(influence, labels)
    pv = permutation_p_values(ap, np.array([t]), labels.sum(axis=0)[None], max_draws=10_000)
    q = q_values(pv.p)
    significant = q < 0.05
    assert significant[7, 0, 0]
    assert significant.sum() == 1
    assert pv.draws[0, 0] == 10_000  # drawn deeper for the extreme AP
    assert pv.p[7, 0, 0] == pytest.approx(1 / 10_001)  # the floor: p < 1/draws
    assert pv.draws[0, 1] == 10_000  # the same (T, P) as attribute 0: the same null
    assert pv.draws[0, 2] == 1000  # nothing there could be significant: not drawn deeper


def test_the_null_does_not_depend_on_which_other_pairs_were_asked():
    ap = np.full((2, 1, 2), 0.3)
    both = permutation_p_values(ap, np.array([100]), np.array([[10, 40]]), min_draws=500)
    one = permutation_p_values(ap[:, :, 1:], np.array([100]), np.array([[40]]), min_draws=500)
    np.testing.assert_array_equal(both.p[:, :, 1:], one.p)


def test_seed_stability_mean_sd_every_seed_and_spearman():
    rng = np.random.default_rng(5)
    base = rng.random((10, 2, 4))
    ap = np.stack([base, base + 0.01 * rng.random(base.shape), rng.random(base.shape)])
    sig = np.zeros(ap.shape, bool)
    sig[:, 3, 1, 2] = True
    sig[0, 4, 0, 0] = True
    st = seed_stability([0, 1, 2], ap, sig)
    np.testing.assert_allclose(st.mean, ap.mean(axis=0))
    np.testing.assert_allclose(st.sd, ap.std(axis=0, ddof=1))
    assert st.significant_in_all[3, 1, 2] and not st.significant_in_all[4, 0, 0]
    rho = {(a, b): r for a, b, r in st.spearman}
    assert rho[(0, 1)] > 0.95 and abs(rho[(0, 2)]) < 0.5
    assert rho[(0, 1)] == pytest.approx(stats.spearmanr(ap[0].ravel(), ap[1].ravel()).statistic)


def test_tied_share_is_the_share_of_values_equal_to_another_in_their_row():
    assert tied_share(np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 2.0], [0.5, 0.2, 0.5]])) == 4 / 9
