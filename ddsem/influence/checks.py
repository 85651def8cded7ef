"""Validation of influence matrices (paper section 5.1, Figures 7 and 8).

- seed consistency: Pearson correlation of two seeds' influences, per distilled image and over
  all pairs (Fig. 8 left);
- context independence: the same between the distilled and the real context (Fig. 8 right);
- pixel similarity: Spearman correlation, per distilled image, between its influence on the test
  images and their closeness in normalised pixel space (faiss exact L2; Fig. 7: weak);
- noise floor: two float32 trainings of the same reference model by different but equally valid
  arithmetic (alone vs inside the population, loop vs batched path); the spread of their test
  losses is the size of an influence that arithmetic alone can produce.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class Correlation:
    """Correlation of two influence matrices over the same distilled and test images."""

    per_image: np.ndarray  # (N,) one coefficient per distilled image
    overall: float  # over all N x T pairs
    mean: float  # mean of per_image (NaN-safe)

    def as_json(self) -> dict[str, Any]:
        return {
            "overall": _num(self.overall),
            "mean_per_image": _num(self.mean),
            "per_image": [_num(v) for v in self.per_image],
        }


def _num(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 6)


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching rows (NaN where a row is constant), in float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(1) / denom, np.nan)


def correlate(a: np.ndarray, b: np.ndarray) -> Correlation:
    """Per-image and overall Pearson correlation of two (N, T) influence matrices."""
    if a.shape != b.shape:
        raise ValueError(f"influence matrices differ in shape: {a.shape} vs {b.shape}")
    per_image = pearson_rows(a, b)
    overall = float(pearson_rows(a.reshape(1, -1), b.reshape(1, -1))[0])
    mean = float(np.nanmean(per_image)) if np.isfinite(per_image).any() else float("nan")
    return Correlation(per_image, overall, mean)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of matching rows (average ranks for ties)."""
    from scipy.stats import rankdata

    return pearson_rows(rankdata(a, axis=1), rankdata(b, axis=1))


def pixel_distances(distilled: np.ndarray, test: np.ndarray) -> np.ndarray:
    """(N, T) Euclidean distances in normalised pixel space, exact (faiss IndexFlatL2).

    Both inputs are (count, C, H, W) float arrays in the same normalised space.
    """
    import faiss

    queries = np.ascontiguousarray(distilled.reshape(len(distilled), -1), dtype=np.float32)
    base = np.ascontiguousarray(test.reshape(len(test), -1), dtype=np.float32)
    index = faiss.IndexFlatL2(base.shape[1])
    index.add(base)
    squared, order = index.search(queries, len(base))  # every test image, nearest first
    out = np.empty((len(queries), len(base)), np.float32)
    np.put_along_axis(out, order, np.sqrt(np.maximum(squared, 0.0)), axis=1)
    return out


def distance_spearman(influence: np.ndarray, distances: np.ndarray) -> Correlation:
    """Spearman correlation of "more influenced" with "closer in pixels", per distilled image.

    Positive: the images a distilled image influences most tend to be its nearest pixels.
    """
    per_image = spearman_rows(influence, -distances)
    from scipy.stats import rankdata

    overall = float(
        pearson_rows(
            rankdata(influence.reshape(1, -1), axis=1), rankdata(-distances.reshape(1, -1), axis=1)
        )[0]
    )
    mean = float(np.nanmean(per_image)) if np.isfinite(per_image).any() else float("nan")
    return Correlation(per_image, overall, mean)


@dataclass
class NoiseFloor:
    """How far two float32 trainings of one model disagree, next to the influence signal."""

    compared: str  # what was trained twice, e.g. "population (loop, cpu) vs alone (batched, cpu)"
    loss_diff_max: float  # max over test images of |loss_a - loss_b|
    loss_diff_std: float  # standard deviation of loss_a - loss_b
    influence_std: float  # standard deviation of all influence values
    influence_abs_median: float  # median |influence|
    above_floor: float  # fraction of influence values with |value| > loss_diff_max
    signal_to_noise: float  # influence_std / loss_diff_std (inf when the floor is 0)

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (v if isinstance(v, str) else _num(v)) for k, v in d.items()}


def noise_floor(
    losses_a: np.ndarray, losses_b: np.ndarray, influence: np.ndarray, compared: str
) -> NoiseFloor:
    """Compare the spread of two trainings' test losses with the spread of the influences."""
    diff = np.asarray(losses_a, np.float64) - np.asarray(losses_b, np.float64)
    values = np.asarray(influence, np.float64).ravel()
    diff_max = float(np.abs(diff).max()) if diff.size else 0.0
    diff_std = float(diff.std()) if diff.size else 0.0
    infl_std = float(values.std()) if values.size else 0.0
    return NoiseFloor(
        compared=compared,
        loss_diff_max=diff_max,
        loss_diff_std=diff_std,
        influence_std=infl_std,
        influence_abs_median=float(np.median(np.abs(values))) if values.size else 0.0,
        above_floor=float((np.abs(values) > diff_max).mean()) if values.size else 0.0,
        signal_to_noise=infl_std / diff_std if diff_std > 0 else float("inf"),
    )


def align(
    matrices: list[np.ndarray], test_indices: list[np.ndarray]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Restrict several (N, T_k) matrices to the test images they all share, in one order."""
    common = test_indices[0]
    for t in test_indices[1:]:
        common = np.intersect1d(common, t)
    common = np.sort(common)
    out = []
    for m, t in zip(matrices, test_indices, strict=True):
        position = {int(v): k for k, v in enumerate(t)}
        out.append(m[:, [position[int(v)] for v in common]])
    return out, common


def seed_mean(
    matrices: list[np.ndarray], test_indices: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The mean of several runs' (N, T_k) matrices over the test images they all share, and
    those test indices (sorted): the seed mean that ``show`` ranks and ``check`` compares."""
    aligned, common = align(matrices, test_indices)
    return np.mean(np.stack(aligned), axis=0), common
