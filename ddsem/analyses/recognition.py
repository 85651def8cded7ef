"""Recognition of distilled data along training on real data (paper section 4.2, Fig. 5).

A ConvNet is trained on real images (the one engine, ``ddsem.train``: batch 256, SGD lr 0.01,
momentum 0.9, 2 epochs); after every ``every``-th iteration (and before the first) its accuracy
is measured on the real test images and on each distilled set with the set's own labels.
Several seeds are one population: the models differ in their initialisation and share the
minibatch order of ``batch_seed``. Per curve, the *settling iteration* is the first checkpoint
from which the accuracy stays within ``tolerance`` of its final value (paper: BPTT/TM distilled
data reach 100% by iteration ~150 while test accuracy keeps rising).

Tensors and configs in, curves and a figure out: no storage, no printing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ddsem.config import ModelConfig, RecognitionConfig, TrainConfig

if TYPE_CHECKING:
    import torch

__all__ = [
    "CurveSummary",
    "SeedCurves",
    "checkpoints",
    "recognition_curves",
    "recognition_figure",
    "recognition_steps",
    "settle_iteration",
    "summarize",
    "train_config",
]


def recognition_steps(num_real: int, cfg: RecognitionConfig) -> int:
    """SGD steps of ``cfg.epochs`` epochs over ``num_real`` images: ceil(N / batch) a epoch,
    as the notebook's DataLoader (drop_last=False) and ``landscape_steps``."""
    return cfg.epochs * math.ceil(num_real / cfg.batch_size)


def train_config(cfg: RecognitionConfig, num_real: int) -> TrainConfig:
    """The engine's training config of the recognition protocol on ``num_real`` images."""
    return TrainConfig(
        steps=recognition_steps(num_real, cfg),
        lr=cfg.lr,
        momentum=cfg.momentum,
        batch_size=cfg.batch_size,
    )


def checkpoints(steps: int, every: int) -> list[int]:
    """The iterations at which accuracy is measured: 0 (the initialisation), every ``every``-th
    update, and the last one."""
    its = list(range(0, steps + 1, every))
    if its[-1] != steps:
        its.append(steps)
    return its


@dataclass
class SeedCurves:
    """One model's accuracies at ``iterations``: on the test images and on each set (in the
    order the sets were given)."""

    seed: int
    iterations: list[int]
    test: list[float]
    sets: list[list[float]]


def recognition_curves(
    model_cfg: ModelConfig,
    train: TrainConfig,
    real: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    sets: Sequence[tuple[torch.Tensor, torch.Tensor]],
    seeds: Sequence[int],
    *,
    every: int = 1,
    batch_seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
    done: Callable[[SeedCurves], None] | None = None,
) -> list[SeedCurves]:
    """Train one population (a model per seed in ``seeds``) on ``real`` and measure accuracy
    on ``test`` and on each of ``sets`` at ``checkpoints(train.steps, every)``.

    ``done(curves)`` is called as soon as a model's last checkpoint is measured (on the CPU the
    models train one after another, so a caller may store each seed as it finishes)."""
    import torch

    from ddsem.train import evaluate_population, initial_states, train_population

    device = torch.device(device)
    its = checkpoints(train.steps, every)
    wanted = set(its)
    # on the device once: every checkpoint evaluates on the same tensors
    targets = [(test[0].to(device), test[1].to(device))]
    targets += [(x.to(device), y.to(device)) for x, y in sets]
    init = initial_states(model_cfg, list(seeds))
    curves = [SeedCurves(int(s), [], [], [[] for _ in sets]) for s in seeds]

    def measure(k: int, step: int, states: list) -> None:
        for k_i, state in zip(range(k, k + len(states)), states, strict=True):
            accs = [
                float(evaluate_population(model_cfg, [state], x, y, device=device).accuracy[0])
                for x, y in targets
            ]
            c = curves[k_i]
            c.iterations.append(step)
            c.test.append(accs[0])
            for j, a in enumerate(accs[1:]):
                c.sets[j].append(a)
            if step == train.steps and done is not None:
                done(c)

    def on_step(k: int, step: int, state: dict) -> None:
        if step in wanted:
            measure(k, step, [state])

    measure(0, 0, init)  # iteration 0: the initialisations
    train_population(
        model_cfg, real[0], real[1], torch.ones(len(init), len(real[1])), init, train,
        device=device, batch_seed=batch_seed, progress=progress, on_step=on_step,
    )  # fmt: skip
    return curves


def settle_iteration(iterations: Sequence[int], curve: Sequence[float], tolerance: float) -> int:
    """The first iteration from which ``curve`` stays within ``tolerance`` of its final value."""
    acc = np.asarray(curve, dtype=float)
    outside = np.nonzero(np.abs(acc - acc[-1]) > tolerance + 1e-9)[0]
    return int(iterations[0 if len(outside) == 0 else outside[-1] + 1])


@dataclass
class CurveSummary:
    """One source (the test images or a set) over the seeds."""

    final: list[float]  # final accuracy per seed
    settled: list[int]  # settling iteration per seed
    settled_of_mean: int  # settling iteration of the mean curve
    mean: list[float]  # the mean curve
    sd: list[float]  # its standard deviation over seeds (0 for one seed)

    @property
    def final_mean(self) -> float:
        return float(np.mean(self.final))

    @property
    def final_sd(self) -> float:
        return _sd(self.final)

    @property
    def settled_mean(self) -> float:
        return float(np.mean(self.settled))

    @property
    def settled_sd(self) -> float:
        return _sd(self.settled)


def _sd(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof 1); 0 for a single value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize(
    iterations: Sequence[int], curves: Sequence[Sequence[float]], tolerance: float
) -> CurveSummary:
    """``curves``: (seeds, checkpoints) accuracies of one source."""
    a = np.asarray(curves, dtype=float)
    mean = a.mean(0)
    sd = a.std(0, ddof=1) if len(a) > 1 else np.zeros_like(mean)
    return CurveSummary(
        final=[float(v) for v in a[:, -1]],
        settled=[settle_iteration(iterations, c, tolerance) for c in a],
        settled_of_mean=settle_iteration(iterations, mean, tolerance),
        mean=[float(v) for v in mean],
        sd=[float(v) for v in sd],
    )


def recognition_figure(
    iterations: Sequence[int],
    series: dict[str, Sequence[Sequence[float]]],
    path: str | Path,
    *,
    plot_iterations: int | None = RecognitionConfig.plot_iterations,
    chance: float | None = None,
    settled: dict[str, int] | None = None,
    title: str = "accuracy of a model trained on real data",
) -> Path:
    """Fig. 5: accuracy (%) against iteration, the first ``plot_iterations`` iterations; the
    first series (the test images) in black, one colour per set; mean over seeds with a band of
    one standard deviation; a dot where each mean curve settles."""
    from ddsem.plots import _pyplot

    plt = _pyplot()
    its = np.asarray(iterations, dtype=float)
    keep = its <= plot_iterations if plot_iterations is not None else np.ones(len(its), bool)
    colours = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # no grey
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    if chance is not None:
        ax.axhline(100 * chance, color="0.6", lw=0.8, ls=":", label=f"chance ({100 * chance:g}%)")
    for i, (label, curves) in enumerate(series.items()):
        a = 100 * np.asarray(curves, dtype=float)
        mean = a.mean(0)
        sd = a.std(0, ddof=1) if len(a) > 1 else np.zeros_like(mean)
        colour = "black" if i == 0 else colours[(i - 1) % len(colours)]
        ax.fill_between(its[keep], (mean - sd)[keep], (mean + sd)[keep], color=colour,
                        alpha=0.2, lw=0)  # fmt: skip
        ax.plot(its[keep], mean[keep], color=colour, lw=1.3, label=label)
        at = None if settled is None else settled.get(label)
        if at is not None and (plot_iterations is None or at <= plot_iterations):
            ax.plot([at], [mean[list(iterations).index(at)]], "o", color=colour, ms=4)
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 102)
    ax.set_xlim(0, its[keep][-1] if keep.any() else 1)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
