"""Section 3, Fig. 3 left: distilled pixels live outside the range of real ones, and it matters.

- ``pixel_stats``: the set's pixels un-normalised (``ddsem.data.denormalize``) to the [0, 1]
  space of real images: the fraction below 0, above 1 and outside [0, 1], min and max;
- ``clip_images``: the set clipped to [0, 1] in pixel space and normalised again;
- ``set_histogram`` / ``real_histogram``: pixel-intensity densities over a common range (real
  images are uint8 / 255, in [0, 1] by construction);
- ``retrain``: test accuracy of models trained on a set (one population through the engine);
- ``paired_comparison``: mean ± sd of two per-seed accuracy lists, their difference and a
  paired t-test over seeds (``scipy.stats.ttest_rel``);
- ``clipping_figure``: histograms of real vs each set, and bars stored vs clipped.

Tensors and arrays in, results out: no storage, no progress sink but an ``advance`` callable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from ddsem.config import ModelConfig, TrainConfig

__all__ = [
    "PairedComparison",
    "PixelStats",
    "clip_images",
    "clipping_figure",
    "histogram_edges",
    "paired_comparison",
    "pixel_stats",
    "real_histogram",
    "retrain",
    "set_histogram",
]


# -- pixels --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PixelStats:
    """Where a set's pixels lie once un-normalised to the [0, 1] space of real images."""

    values: int  # pixel values counted (images x channels x height x width)
    below: float  # fraction < 0
    above: float  # fraction > 1
    minimum: float
    maximum: float

    @property
    def outside(self) -> float:
        return self.below + self.above

    def as_json(self) -> dict[str, Any]:
        return {
            "values": self.values,
            "outside_fraction": self.outside,
            "below_fraction": self.below,
            "above_fraction": self.above,
            "min": self.minimum,
            "max": self.maximum,
        }


def pixel_values(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Normalised NCHW images -> un-normalised NHWC values (the real images' [0, 1] space)."""
    from ddsem.data import denormalize

    return denormalize(images)


def pixel_stats(images: torch.Tensor | np.ndarray) -> PixelStats:
    v = pixel_values(images)
    n = v.size
    return PixelStats(
        values=int(n),
        below=float(np.count_nonzero(v < 0.0)) / n,
        above=float(np.count_nonzero(v > 1.0)) / n,
        minimum=float(v.min()),
        maximum=float(v.max()),
    )


def _normalised_bounds() -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the normalised values whose un-normalised images (float32, as
    ``denormalize`` computes them) are the closest to 0 and 1 from inside [0, 1]: clamping to
    them makes a clipped set's pixels lie in [0, 1] exactly, not within a rounding of it."""
    from ddsem.data import MEAN, STD

    mean = np.asarray(MEAN, dtype=np.float32)
    std = np.asarray(STD, dtype=np.float32)
    lo = ((np.float32(0.0) - mean) / std).astype(np.float32)
    hi = ((np.float32(1.0) - mean) / std).astype(np.float32)
    for c in range(len(mean)):
        while lo[c] * std[c] + mean[c] < 0:
            lo[c] = np.nextafter(lo[c], np.float32(np.inf))
        while hi[c] * std[c] + mean[c] > 1:
            hi[c] = np.nextafter(hi[c], np.float32(-np.inf))
    return lo, hi


def clip_images(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The set clipped to [0, 1] in pixel space, normalised again (float32 NCHW): un-normalised,
    its pixels equal ``np.clip(denormalize(images), 0, 1)`` up to float32 rounding and lie in
    [0, 1] exactly."""
    import torch

    from ddsem.data import MEAN, STD

    px = np.clip(pixel_values(images), 0.0, 1.0).astype(np.float32)
    mean = np.asarray(MEAN, dtype=np.float32)
    std = np.asarray(STD, dtype=np.float32)
    lo, hi = _normalised_bounds()
    x = np.clip((px - mean) / std, lo, hi).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def histogram_edges(bins: int, value_range: tuple[float, float]) -> np.ndarray:
    """The ``bins + 1`` edges of equal bins over ``value_range``."""
    return np.linspace(value_range[0], value_range[1], bins + 1)


def set_histogram(
    images: torch.Tensor | np.ndarray, bins: int, value_range: tuple[float, float]
) -> np.ndarray:
    """Density of the un-normalised pixel values over ``bins`` equal bins of ``value_range``,
    relative to every value (those beyond the range count in the total, not in a bin)."""
    v = pixel_values(images).ravel()
    counts, edges = np.histogram(v, bins=histogram_edges(bins, value_range))
    return counts / (v.size * np.diff(edges))


def real_histogram(
    pixels: np.ndarray, bins: int, value_range: tuple[float, float]
) -> tuple[np.ndarray, PixelStats]:
    """Density of real uint8 pixels / 255 over the same bins, with their stats (nothing
    outside [0, 1]: uint8 / 255 cannot be). Counted per level (cheap on the 150M values of
    CIFAR-10's training split); each level's count is spread evenly over its quantisation
    step (the width 1/255 around it, cut to [0, 1]), so bins that hold 7 or 8 of the 256 levels
    do not alternate in height."""
    levels = np.bincount(np.asarray(pixels, dtype=np.uint8).ravel(), minlength=256)
    total = int(levels.sum())
    values = np.arange(256) / 255.0
    lo = np.clip((np.arange(256) - 0.5) / 255.0, 0.0, 1.0)
    hi = np.clip((np.arange(256) + 0.5) / 255.0, 0.0, 1.0)
    edges = histogram_edges(bins, value_range)
    # mass of level v below edge e: count_v * the part of [lo_v, hi_v] below e
    below = np.clip((edges[None, :] - lo[:, None]) / (hi - lo)[:, None], 0.0, 1.0)
    cdf = levels.astype(float) @ below
    present = np.flatnonzero(levels)
    stats = PixelStats(
        values=total,
        below=float(levels[values < 0].sum()) / total,
        above=float(levels[values > 1].sum()) / total,
        minimum=float(values[present[0]]),
        maximum=float(values[present[-1]]),
    )
    return np.diff(cdf) / (total * np.diff(edges)), stats


# -- retraining ----------------------------------------------------------------------------------


def retrain(
    images: torch.Tensor,
    labels: torch.Tensor,
    model_cfg: ModelConfig,
    train: TrainConfig,
    init: Sequence[dict[str, torch.Tensor]],
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Test accuracy of one model per initial state, all trained on (images, labels) as one
    population of the engine (full batch unless ``train.batch_size`` says otherwise)."""
    import torch

    from ddsem.train import evaluate_population, train_population

    weights = torch.ones(len(init), images.shape[0])
    states = train_population(
        model_cfg, images, labels, weights, list(init), train, device=device, progress=progress
    )
    ev = evaluate_population(model_cfg, states, test_x, test_y, device=device)
    return [float(a) for a in ev.accuracy]


# -- statistics ----------------------------------------------------------------------------------


def _sd(values: np.ndarray) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


@dataclass(frozen=True)
class PairedComparison:
    """Two per-seed lists (the same seeds in the same order): a, b, and b - a.

    sd is the sample standard deviation over seeds (n - 1; None for one seed); the test is
    ``scipy.stats.ttest_rel(b, a)`` (None for one seed, or when every difference is equal and
    the statistic is undefined)."""

    a: list[float]
    b: list[float]

    @property
    def n(self) -> int:
        return len(self.a)

    def _diff(self) -> np.ndarray:
        return np.asarray(self.b, dtype=float) - np.asarray(self.a, dtype=float)

    @property
    def test(self) -> tuple[float | None, float | None]:
        d = self._diff()
        if len(d) < 2 or np.all(d == d[0]):
            return None, None
        from scipy.stats import ttest_rel

        res = ttest_rel(np.asarray(self.b, dtype=float), np.asarray(self.a, dtype=float))
        return float(res.statistic), float(res.pvalue)

    @staticmethod
    def summary(values: Sequence[float]) -> dict[str, Any]:
        v = np.asarray(values, dtype=float)
        return {"accuracies": [float(x) for x in v], "mean": float(v.mean()), "sd": _sd(v)}

    def difference(self) -> dict[str, Any]:
        d = self._diff()
        t, p = self.test
        return {"mean": float(d.mean()), "sd": _sd(d), "t": t, "p": p, "n": len(d)}


def paired_comparison(a: Sequence[float], b: Sequence[float]) -> PairedComparison:
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired lists must have the same, non-zero length: {len(a)}, {len(b)}")
    return PairedComparison([float(x) for x in a], [float(x) for x in b])


# -- figure --------------------------------------------------------------------------------------


@dataclass
class FigureSet:
    name: str
    density: np.ndarray
    outside: float  # fraction of pixels outside [0, 1]
    stored: tuple[float, float | None]  # mean, sd of the test accuracy
    clipped: tuple[float, float | None]


def clipping_figure(
    edges: np.ndarray,
    real_density: np.ndarray,
    sets: list[FigureSet],
    path: str | Path,
    *,
    chance: float,
    runs: int,
) -> Path:
    """Left: pixel-intensity densities of real images and of each set (paper Fig. 3 left);
    right: retrained test accuracy of each set as stored and clipped to [0, 1]."""
    from ddsem.plots import _pyplot

    plt = _pyplot()
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(10.5, 3.6), gridspec_kw={"width_ratios": [1.4, 1]}
    )
    centres = (edges[:-1] + edges[1:]) / 2
    width = float(edges[1] - edges[0])
    left.bar(centres, real_density, width=width, color="0.75", label="real (in [0, 1])")
    for s in sets:
        left.step(
            centres, s.density, where="mid", lw=1.2,
            label=f"{s.name} ({100 * s.outside:.1f}% outside)",
        )  # fmt: skip
    for x in (0.0, 1.0):
        left.axvline(x, color="k", ls=":", lw=0.8)
    left.set_xlim(edges[0], edges[-1])
    left.set_xlabel("pixel intensity (un-normalised)", fontsize=8)
    left.set_ylabel("density", fontsize=8)
    left.set_title("pixel intensities: real vs distilled", fontsize=9)
    left.legend(fontsize=7)
    left.tick_params(labelsize=7)

    x = np.arange(len(sets))
    bar = 0.38
    for offset, what, colour in ((-bar / 2, "stored", "C0"), (bar / 2, "clipped", "C3")):
        means = [100 * getattr(s, what)[0] for s in sets]
        sds = [100 * (getattr(s, what)[1] or 0.0) for s in sets]
        label = "as stored" if what == "stored" else "clipped to [0, 1]"
        right.bar(x + offset, means, bar, yerr=sds, capsize=3, color=colour, label=label)
    right.axhline(100 * chance, color="0.4", ls="--", lw=0.8, label=f"chance {100 * chance:.0f}%")
    right.set_xticks(x, [s.name for s in sets], fontsize=7, rotation=20, ha="right")
    right.set_ylabel("test accuracy %", fontsize=8)
    right.set_title(f"retrained on the set (mean ± sd, {runs} seeds)", fontsize=9)
    top = max(
        [100 * (m + (sd or 0)) for s in sets for m, sd in (s.stored, s.clipped)] + [100 * chance]
    )
    right.set_ylim(0, min(100.0, top * 1.3 + 5))
    right.legend(fontsize=7, loc="upper right", ncol=3)
    right.tick_params(labelsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
