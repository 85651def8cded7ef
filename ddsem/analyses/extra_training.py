"""Appendix E (Fig. 24): how much a distilled set still teaches a model already trained on real
data. A ConvNet trained on real images for 300 iterations is trained further on each set with
the distilled-data protocol (300 full-batch steps, SGD lr 0.01, momentum 0.9); its test accuracy
before and after (paper: BPTT and TM change little, DM and GM lose 5-7 points).

The further training starts from the real model's weights with a fresh optimiser (the momentum
buffer restarts), as the paper's code builds a new SGD for it.

- ``continue_training``: test accuracy after training each real model further on a set (one
  population through the engine);
- ``extra_training_figure``: bars before and after per set.

The statistics (mean ± sd, the change and a paired t-test over seeds) are
``ddsem.analyses.clipping.paired_comparison``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ddsem.analyses.clipping import PairedComparison, paired_comparison

if TYPE_CHECKING:
    import torch

    from ddsem.config import ModelConfig, TrainConfig

__all__ = ["PairedComparison", "continue_training", "extra_training_figure", "paired_comparison"]


def continue_training(
    images: torch.Tensor,
    labels: torch.Tensor,
    model_cfg: ModelConfig,
    train: TrainConfig,
    real_states: Sequence[dict[str, torch.Tensor]],
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Test accuracy of each real-data model after ``train`` on (images, labels): the models
    are one population of the engine, each starting from its real state (fresh momentum)."""
    from ddsem.analyses.clipping import retrain

    return retrain(
        images, labels, model_cfg, train, real_states, test_x, test_y,
        device=device, progress=progress,
    )  # fmt: skip


@dataclass
class FigureSet:
    name: str
    before: tuple[float, float | None]  # mean, sd of the real models' test accuracy
    after: tuple[float, float | None]  # after the further training on this set
    p: float | None  # paired t-test of the change


def extra_training_figure(
    sets: list[FigureSet],
    path: str | Path,
    *,
    chance: float,
    runs: int,
    real_iterations: int,
) -> Path:
    """Bars per set: the real models' test accuracy before and after training on the set."""
    from ddsem.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(sets) + 2.0), 3.4))
    x = np.arange(len(sets))
    bar = 0.38
    for offset, what, colour, label in (
        (-bar / 2, "before", "0.65", f"real data only ({real_iterations} iterations)"),
        (bar / 2, "after", "C0", "then trained on the set"),
    ):
        means = [100 * getattr(s, what)[0] for s in sets]
        sds = [100 * (getattr(s, what)[1] or 0.0) for s in sets]
        ax.bar(x + offset, means, bar, yerr=sds, capsize=3, color=colour, label=label)
    for i, s in enumerate(sets):
        change = 100 * (s.after[0] - s.before[0])
        top = 100 * max(s.before[0] + (s.before[1] or 0), s.after[0] + (s.after[1] or 0))
        note = f"{change:+.1f}" + ("" if s.p is None else f"\np={s.p:.2g}")
        ax.text(i, top + 1, note, ha="center", va="bottom", fontsize=7)
    ax.axhline(100 * chance, color="0.4", ls="--", lw=0.8, label=f"chance {100 * chance:.0f}%")
    ax.set_xticks(x, [s.name for s in sets], fontsize=7, rotation=20, ha="right")
    ax.set_ylabel("test accuracy %", fontsize=8)
    top = max([100 * (m + (sd or 0)) for s in sets for m, sd in (s.before, s.after)] + [10.0])
    ax.set_ylim(0, min(105.0, top + 12))
    ax.set_title(f"extra training on distilled data (mean ± sd, {runs} seeds)", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    ax.tick_params(labelsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
