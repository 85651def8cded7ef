"""Exact leave-one-out influence of distilled images on real test images, and its checks."""

from ddsem.influence.checks import (
    Correlation,
    NoiseFloor,
    correlate,
    distance_spearman,
    noise_floor,
    pixel_distances,
)
from ddsem.influence.loo import (
    CONTEXTS,
    REFERENCE,
    LooResult,
    Population,
    build_population,
    full_float32,
    influence_from_losses,
    leave_one_out,
    tf32_mode,
    top_k,
    train_and_evaluate,
)

__all__ = [
    "CONTEXTS",
    "REFERENCE",
    "Correlation",
    "LooResult",
    "NoiseFloor",
    "Population",
    "build_population",
    "correlate",
    "distance_spearman",
    "full_float32",
    "influence_from_losses",
    "leave_one_out",
    "noise_floor",
    "pixel_distances",
    "tf32_mode",
    "top_k",
    "train_and_evaluate",
]
