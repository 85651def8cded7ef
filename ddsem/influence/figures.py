"""PNG figures of the influence checks: a pooled scatter plus the per-image coefficients."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddsem.plots import _pyplot

MAX_POINTS = 20_000  # scatter points drawn (a seeded subsample of larger matrices)


def scatter_check(
    x: np.ndarray,
    y: np.ndarray,
    per_image: np.ndarray,
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    coefficient: str,
) -> Path:
    """Left: every (distilled, test) pair as a point; right: histogram of per-image coefficients."""
    plt = _pyplot()
    xs, ys = np.ravel(x), np.ravel(y)
    if xs.size > MAX_POINTS:
        keep = np.random.default_rng(0).choice(xs.size, MAX_POINTS, replace=False)
        xs, ys = xs[keep], ys[keep]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    left.scatter(xs, ys, s=2, alpha=0.3, linewidths=0)
    left.set_xlabel(xlabel)
    left.set_ylabel(ylabel)
    left.set_title(title, fontsize=9)
    finite = per_image[np.isfinite(per_image)]
    right.hist(finite, bins=min(30, max(5, len(finite) // 3)), color="tab:orange")
    right.set_xlabel(f"{coefficient} per distilled image")
    right.set_ylabel("distilled images")
    if finite.size:
        right.axvline(float(finite.mean()), color="black", linestyle="--", linewidth=1)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
