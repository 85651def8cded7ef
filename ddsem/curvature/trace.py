"""Hutchinson's estimator of the Hessian trace with Rademacher probes (Hutchinson, 1989).

For a Rademacher vector v, E[v^T H v] = tr(H); the mean over n independent probes is reported
with its standard error (sample standard deviation / sqrt(n)). Probes are drawn ``block`` at a
time and pushed through the operator in one pass; the estimate stops once the relative standard
error is at most ``rel_err`` (after at least ``min_probes`` probes) or at ``max_probes``.

The stopping rule uses |mean|, so a negative trace (a saddle) is estimated like a positive one.
Near a zero trace the relative error cannot fall and the estimate runs to ``max_probes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ddsem.curvature.hessian import rademacher


class Operator(Protocol):
    """Anything that maps a block of vectors (B, dim) to (B, dim) symmetrically."""

    @property
    def dim(self) -> int: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def __call__(self, vectors: torch.Tensor) -> torch.Tensor: ...

    def quadratic_forms(self, vectors: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class TraceEstimate:
    trace: float
    stderr: float
    probes: int
    samples: np.ndarray  # float64 (probes,): v^T H v for each probe

    @property
    def rel_err(self) -> float:
        return self.stderr / abs(self.trace) if self.trace else math.inf


def hutchinson_trace(
    op: Operator,
    *,
    max_probes: int = 100,
    rel_err: float = 0.05,
    min_probes: int = 10,
    block: int = 10,
    generator: torch.Generator,
) -> TraceEstimate:
    """Estimate tr(H) from Rademacher probes; see the module docstring for the stopping rule."""
    if max_probes < 2:
        raise ValueError("at least 2 probes are needed for a standard error")
    if block < 1:
        raise ValueError("block must be positive")
    min_probes = max(2, min(min_probes, max_probes))
    samples: list[float] = []
    while len(samples) < max_probes:
        size = min(block, max_probes - len(samples))
        v = rademacher((size, op.dim), generator, op.dtype)
        samples += op.quadratic_forms(v).double().cpu().tolist()
        if len(samples) >= min_probes:
            mean, stderr = _mean_stderr(samples)
            if stderr <= rel_err * abs(mean):
                break
    mean, stderr = _mean_stderr(samples)
    return TraceEstimate(mean, stderr, len(samples), np.asarray(samples, dtype=np.float64))


def _mean_stderr(samples: list[float]) -> tuple[float, float]:
    values = np.asarray(samples, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))
