"""Vectorised PR-AUC (``ddsem.semantics.score_attributes``) against a loop of scikit-learn's
``average_precision_score`` calls, side by side in one run.

Default size is the paper's: 100 distilled images x 10,000 test images x 60 attributes, over
all classes and within each of 10 classes (100 x 60 x 11 = 66,000 average precisions). The
scikit-learn loop is timed on a random subset of those pairs and extrapolated to all of them
(said in the output); a sample of the vectorised results is checked against it.

Significance is timed beside ranking: permutation p-values from one null per distinct (test
images, positives), drawn adaptively with ``SignificanceConfig``'s draws, and Benjamini-Hochberg
q-values over every score (what ``ddsem rank`` adds to each run). Target: significance costs
at most the ranking itself.

    .venv/bin/python benchmarks/rank.py                      # the paper's size
    .venv/bin/python benchmarks/rank.py --distilled 20 --test 2000   # quicker
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--distilled", type=int, default=100)
    p.add_argument("--test", type=int, default=10_000)
    p.add_argument("--attributes", type=int, default=60)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--sklearn-pairs", type=int, default=300, help="scikit-learn calls timed")
    p.add_argument("--ties", action="store_true", help="round influence to 2 decimals (ties)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-draws", type=int, default=None, help="[default: SignificanceConfig]")
    p.add_argument(
        "--balanced",
        action="store_true",
        help="exactly test/classes images per class, as CIFAR-10's test split (nulls shared)",
    )
    args = p.parse_args()

    from sklearn.metrics import average_precision_score

    from ddsem.config import SignificanceConfig
    from ddsem.semantics import score_attributes
    from ddsem.significance import distinct_pairs, permutation_p_values, q_values

    rng = np.random.default_rng(args.seed)
    n, t, a, c = args.distilled, args.test, args.attributes, args.classes
    influence = rng.standard_normal((n, t)).astype(np.float32)
    if args.ties:
        influence = np.round(influence, 2)
    classes = rng.permutation(np.arange(t) % c) if args.balanced else rng.integers(0, c, t)
    rates = rng.uniform(0.01, 0.3, a)  # attribute prevalences from rare to common
    labels = rng.random((t, a)) < rates

    start, cpu_start = time.perf_counter(), time.process_time()
    scores = score_attributes(influence, classes, labels, c)
    vectorised = time.perf_counter() - start
    vectorised_cpu = time.process_time() - cpu_start
    pairs = scores.ap.size

    # significance: what `ddsem rank` adds to the ranking
    config = SignificanceConfig()
    max_draws = args.max_draws or config.max_draws
    min_draws = min(config.min_draws, max_draws)
    start, cpu_start = time.perf_counter(), time.process_time()
    pv = permutation_p_values(
        scores.ap,
        scores.totals,
        scores.positives,
        min_draws=min_draws,
        max_draws=max_draws,
        seed=config.seed,
    )
    nulls = time.perf_counter() - start
    q = q_values(pv.p)
    significance = time.perf_counter() - start
    significance_cpu = time.process_time() - cpu_start
    drawn = pv.draws[pv.draws > 0]
    depth = {int(d): int((drawn == d).sum()) for d in np.unique(drawn)}

    # the scikit-learn loop: one call per (distilled image, class filter, attribute)
    chosen = rng.choice(pairs, size=min(args.sklearn_pairs, pairs), replace=False)
    filter_masks = [np.ones(t, bool)] + [classes == k for k in range(c)]
    reference = []
    start, cpu_start = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for flat in chosen.tolist():
            k, f, col = np.unravel_index(flat, scores.ap.shape)
            m = filter_masks[f]
            reference.append(average_precision_score(labels[m, col], influence[k, m]))
    loop = time.perf_counter() - start
    loop_cpu = time.process_time() - cpu_start
    per_call = loop / len(chosen)
    loop_all = per_call * pairs

    ours = scores.ap.reshape(-1)[chosen]
    defined = ~np.isnan(ours)
    err = float(np.max(np.abs(ours[defined] - np.asarray(reference)[defined]), initial=0.0))
    print(
        f"size: {n} distilled x {t} test x {a} attributes x ({c} classes + all) = "
        f"{pairs:,} average precisions{' (influence rounded: ties)' if args.ties else ''}"
        f"{'; classes of equal size' if args.balanced else ''}"
    )
    print(f"vectorised score_attributes: {vectorised:.2f} s wall, {vectorised_cpu:.2f} s CPU")
    print(
        f"scikit-learn average_precision_score loop: {per_call * 1e3:.2f} ms per call, timed on "
        f"{len(chosen)} random pairs, extrapolated to all {pairs:,}: {loop_all:.1f} s"
    )
    print(
        f"ratio (sklearn loop / vectorised): {loop_all / vectorised:.0f}x wall, "
        f"{loop_cpu / len(chosen) * pairs / vectorised_cpu:.0f}x CPU time"
    )
    print(f"max |difference| on the timed pairs: {err:.1e}")
    print(
        f"significance: {distinct_pairs(scores.totals, scores.positives):,} nulls (one per "
        f"distinct (test images, positives)), {min_draws:,} to {max_draws:,} draws each "
        f"(cells by draws: {', '.join(f'{d:,}: {c}' for d, c in depth.items())}); "
        f"{significance:.2f} s wall ({nulls:.2f} s nulls and p, {significance - nulls:.2f} s BH "
        f"q), {significance_cpu:.2f} s CPU; {int((q < config.alpha).sum())} of "
        f"{int(np.isfinite(q).sum()):,} at q < {config.alpha} (the influence is random)"
    )
    print(
        f"ratio (significance / ranking): {significance / vectorised:.2f}x wall, "
        f"{significance_cpu / vectorised_cpu:.2f}x CPU time (target: at most 1)"
    )


if __name__ == "__main__":
    main()
