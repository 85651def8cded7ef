"""Figures of the semantic analysis (paper Fig. 9 and Fig. 10), written as PNG with Agg."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ddsem.plots import _pyplot


def pr_curves(
    curves: Sequence[tuple[str, np.ndarray, np.ndarray]],
    positive_rate: float,
    title: str,
    path: str | Path,
) -> Path:
    """Precision-recall curves (label, recall, precision) drawn as the step function whose area
    is the average precision, with the chance level (the positive rate) dashed (Fig. 9)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 4.0))
    for label, recall, precision in curves:
        ax.step(recall, precision, where="pre", label=label, linewidth=1.4)
    ax.axhline(positive_rate, color="grey", linestyle="--", linewidth=1.0, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def influence_grid(
    distilled: np.ndarray,
    distilled_title: str,
    test_images: Sequence[np.ndarray | None],
    test_titles: Sequence[str],
    path: str | Path,
) -> Path:
    """A distilled image beside the 3x3 grid of its most influenced test images (Fig. 10).
    Images are HWC uint8 (or floats in [0, 1]); None draws an empty tile."""
    plt = _pyplot()
    fig = plt.figure(figsize=(5.6, 3.3))
    grid = fig.add_gridspec(3, 5, wspace=0.1, hspace=0.35)
    ax = fig.add_subplot(grid[0:2, 0:2])
    ax.imshow(distilled, interpolation="nearest")
    ax.set_title(distilled_title, fontsize=8)
    ax.axis("off")
    for i in range(9):
        ax = fig.add_subplot(grid[i // 3, 2 + i % 3])
        ax.axis("off")
        if i < len(test_images):
            if test_images[i] is not None:
                ax.imshow(test_images[i], interpolation="nearest")
            ax.set_title(test_titles[i], fontsize=6)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
