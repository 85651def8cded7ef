"""Figures of the curvature analyses, written as PNG (matplotlib Agg via ``ddsem.plots``).

- ``trace_figure``: Hessian trace against training iteration, one panel per source (paper Fig. 6);
- ``density_figure``: log eigenvalue density, a row per source and a column per iteration
  (Figs. 13-14), drawn as PyHessian draws it (semilogy of density + 1e-7);
- ``landscape_figure``: loss contours over appendix A's plane (Fig. 11).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ddsem.curvature.lanczos import LanczosResult, spectral_density
from ddsem.plots import _pyplot


def trace_figure(
    series: dict[str, tuple[Sequence[int], Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    title: str = "Hessian trace along training on real data",
) -> Path:
    """series: source -> (iterations, traces, standard errors)."""
    plt = _pyplot()
    n = max(1, len(series))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.8), squeeze=False, sharex=True)
    for ax, (source, (its, traces, errs)) in zip(axes[0], series.items(), strict=False):
        its, traces, errs = (np.asarray(a, dtype=float) for a in (its, traces, errs))
        ax.axhline(0.0, color="0.7", lw=0.8)
        ax.fill_between(its, traces - errs, traces + errs, alpha=0.3, lw=0)
        ax.plot(its, traces, marker="." if len(its) < 40 else None, lw=1.2)
        ax.set_title(source, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("trace of the Hessian", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, plt, path)


def density_figure(spectra: dict[tuple[str, int], LanczosResult], path: str | Path) -> Path:
    """spectra: (source, iteration) -> Lanczos result; log density panels."""
    plt = _pyplot()
    sources = sorted({s for s, _ in spectra})
    iterations = sorted({i for _, i in spectra})
    fig, axes = plt.subplots(
        len(sources),
        len(iterations),
        figsize=(3.0 * len(iterations), 2.4 * len(sources)),
        squeeze=False,
    )
    for r, source in enumerate(sources):
        for c, iteration in enumerate(iterations):
            ax = axes[r][c]
            result = spectra.get((source, iteration))
            if result is None:
                ax.axis("off")
                continue
            grid, density = spectral_density(result)
            ax.semilogy(grid, density + 1.0e-7, lw=0.8)
            ax.set_title(f"{source}, iteration {iteration}", fontsize=8)
            ax.set_xlabel("eigenvalue", fontsize=7)
            ax.tick_params(labelsize=6)
        axes[r][0].set_ylabel("density (log)", fontsize=7)
    return _save(fig, plt, path)


def landscape_figure(
    xs: np.ndarray,
    ys: np.ndarray,
    losses: dict[str, np.ndarray],
    points: dict[str, tuple[float, float]],
    paths: dict[str, list[tuple[float, float]]],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """One contour panel per loss surface, with the three weight vectors and both trajectories."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(losses), figsize=(4.2 * len(losses), 3.6), squeeze=False)
    gx, gy = np.meshgrid(xs, ys)
    markers = {"init": ("o", "white"), "real": ("s", "tab:blue"), "distilled": ("*", "tab:red")}
    for ax, (name, surface) in zip(axes[0], losses.items(), strict=True):
        top = float(np.percentile(surface, 95))
        low = float(surface.min())
        levels = np.linspace(low, top if top > low else low + 1e-6, 20)
        filled = ax.contourf(gx, gy, np.minimum(surface, top), levels=levels, cmap="viridis")
        ax.contour(gx, gy, surface, levels=levels[::3], colors="k", linewidths=0.4)
        fig.colorbar(filled, ax=ax, shrink=0.85).ax.tick_params(labelsize=6)
        for run, coords in paths.items():
            px, py = zip(*coords, strict=True)
            ax.plot(px, py, color=markers.get(run, ("", "w"))[1], lw=1.0, alpha=0.9)
        for label, (x, y) in points.items():
            marker, color = markers.get(label, ("x", "k"))
            ax.scatter([x], [y], marker=marker, c=color, edgecolors="k", s=50, zorder=5)
            ax.annotate(label, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_title(f"{name} loss", fontsize=9)
        ax.set_xlabel("x: init -> real (1 epoch)", fontsize=7)
        ax.set_ylabel("y: -> distilled (orthogonalised)", fontsize=7)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
