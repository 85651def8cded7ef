"""Figures written as PNG with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_grid(
    images_hwc: np.ndarray,
    path: str | Path,
    *,
    titles: list[str] | None = None,
    cols: int = 10,
    scale: float = 1.0,
) -> Path:
    """A grid of HWC images in [0, 1] (clipped for display) with optional titles."""
    plt = _pyplot()
    n = len(images_hwc)
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * 1.1 * scale, rows * 1.25 * scale), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        ax = axes.flat[i]
        ax.imshow(np.clip(images_hwc[i], 0, 1), interpolation="nearest")
        if titles:
            ax.set_title(titles[i], fontsize=6)
    fig.tight_layout(pad=0.2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
