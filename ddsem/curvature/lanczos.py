"""Stochastic Lanczos quadrature (SLQ): the Hessian's eigenvalue density (Ghorbani et al., 2019).

Each run starts Lanczos from a normalised Rademacher vector v and builds an orthonormal Krylov
basis with full reorthogonalisation (classical Gram-Schmidt, twice: "twice is enough"), so the
tridiagonal T stays faithful in floating point. T's eigenvalues (Ritz values) are quadrature
nodes and the squared first components of its eigenvectors the weights:
sum_i w_i f(theta_i) approximates v^T f(H) v / v^T v, exactly for polynomials of degree < 2m.
Averaged over runs and smoothed with a Gaussian this is the spectral density (mass 1); the
extreme Ritz values converge fastest, so the largest is the top eigenvalue, and each Ritz value
has a rigorous bound: some eigenvalue of H lies within |beta_m * s_m| of it.

Several runs are pushed through the operator together as one block. If a run's Krylov space
becomes invariant before m steps (beta = 0), it continues from a fresh random vector orthogonal
to its basis: T splits into blocks and the new blocks carry no quadrature weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ddsem.curvature.hessian import rademacher
from ddsem.curvature.trace import Operator

# PyHessian's density_generate defaults (Yao et al., 2020), which the analysis paper's figures use:
# Gaussian variance sigma_squared * max(1, spread), 10,000 grid points, 0.01 overhead each side.
DENSITY_SIGMA_SQUARED = 1e-5
DENSITY_BINS = 10_000
DENSITY_OVERHEAD = 0.01


@dataclass(frozen=True)
class LanczosResult:
    nodes: np.ndarray  # (runs, m) Ritz values, ascending
    weights: np.ndarray  # (runs, m) quadrature weights; each row sums to 1
    residuals: np.ndarray  # (runs, m) an eigenvalue of H lies within this of each node

    @property
    def top(self) -> float:
        """The largest Ritz value over all runs: an estimate of the largest eigenvalue."""
        return float(self.nodes.max())

    @property
    def top_residual(self) -> float:
        run, col = np.unravel_index(np.argmax(self.nodes), self.nodes.shape)
        return float(self.residuals[run, col])

    @property
    def bottom(self) -> float:
        return float(self.nodes.min())

    def as_array(self) -> np.ndarray:
        """(runs, m, 3) float64: node, weight, residual: what the database stores."""
        return np.stack([self.nodes, self.weights, self.residuals], axis=-1)

    @classmethod
    def from_array(cls, array: np.ndarray) -> LanczosResult:
        array = np.asarray(array, dtype=np.float64)
        return cls(array[..., 0], array[..., 1], array[..., 2])

    def mass_below(self, value: float) -> float:
        """Quadrature estimate of the fraction of eigenvalues below ``value``."""
        return float(np.mean(np.sum(self.weights * (self.nodes < value), axis=1)))


def lanczos(
    op: Operator, steps: int, *, runs: int = 1, generator: torch.Generator
) -> LanczosResult:
    """``runs`` independent Lanczos runs of ``steps`` steps (at most the dimension) together."""
    m = min(steps, op.dim)
    if m < 1 or runs < 1:
        raise ValueError("Lanczos needs at least one step and one run")
    device, dtype = generator.device, op.dtype
    basis = torch.zeros(runs, m, op.dim, device=device, dtype=dtype)
    alphas = np.zeros((runs, m))
    betas = np.zeros((runs, m))  # betas[:, j] couples basis vectors j and j + 1
    v = _normalise(rademacher((runs, op.dim), generator, dtype))
    norm_estimate = 0.0
    tolerance = 100 * torch.finfo(dtype).eps
    for j in range(m):
        basis[:, j] = v
        w = op(v).to(device=device, dtype=dtype)
        alphas[:, j] = (w * v).sum(dim=1).double().cpu().numpy()
        w = _orthogonalise(w, basis[:, : j + 1])
        beta = w.norm(dim=1)
        betas[:, j] = beta.double().cpu().numpy()
        norm_estimate = max(norm_estimate, float(np.abs(alphas[:, j]).max() + betas[:, j].max()))
        if j + 1 == m:
            break
        broken = beta <= tolerance * max(norm_estimate, 1e-30)
        v = w / torch.where(broken, torch.ones_like(beta), beta).unsqueeze(1)
        if bool(broken.any()):
            fresh = _orthogonalise(
                torch.randn(runs, op.dim, generator=generator, device=device, dtype=dtype),
                basis[:, : j + 1],
            )
            v = torch.where(broken.unsqueeze(1), _normalise(fresh), v)
            betas[broken.cpu().numpy(), j] = 0.0
    return _quadrature(alphas, betas)


def _normalise(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=1, keepdim=True)


def _orthogonalise(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """w minus its projection on the rows of basis (per run), done twice for stability."""
    for _ in range(2):
        coefficients = torch.einsum("rkd,rd->rk", basis, w)
        w = w - torch.einsum("rk,rkd->rd", coefficients, basis)
    return w


def _quadrature(alphas: np.ndarray, betas: np.ndarray) -> LanczosResult:
    runs, m = alphas.shape
    nodes, weights, residuals = (np.zeros((runs, m)) for _ in range(3))
    for r in range(runs):
        tri = np.diag(alphas[r]) + np.diag(betas[r, :-1], 1) + np.diag(betas[r, :-1], -1)
        values, vectors = np.linalg.eigh(tri)
        nodes[r], weights[r] = values, vectors[0] ** 2
        residuals[r] = np.abs(betas[r, -1] * vectors[-1])
    return LanczosResult(nodes, weights, residuals)


def spectral_density(
    result: LanczosResult,
    *,
    bins: int = DENSITY_BINS,
    sigma_squared: float = DENSITY_SIGMA_SQUARED,
    overhead: float = DENSITY_OVERHEAD,
    grid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(grid, density): the runs' averaged Gaussian-smoothed quadrature, total mass 1.

    The Gaussian's variance is sigma_squared * max(1, spread of the nodes), as in PyHessian; the
    grid reaches past the extreme nodes by the overhead and by four standard deviations, so
    (unlike PyHessian, which renormalises on its grid) no mass is lost or rescaled.
    """
    low, high = result.bottom, result.top
    variance = sigma_squared * max(1.0, high - low)
    pad = overhead + 4.0 * np.sqrt(variance)
    if grid is None:
        grid = np.linspace(low - pad, high + pad, bins)
    grid = np.asarray(grid, dtype=np.float64)
    density = np.zeros_like(grid)
    for nodes, weights in zip(result.nodes, result.weights, strict=True):
        kernel = np.exp(-((grid[None, :] - nodes[:, None]) ** 2) / (2 * variance))
        density += weights @ kernel
    density /= np.sqrt(2 * np.pi * variance) * len(result.nodes)
    return grid, density
