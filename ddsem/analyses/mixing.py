"""Section 3, Fig. 3 right (appendix B): a distilled set mixed with real images.

A classifier trained on the distilled set plus k real images per class, k in {0, 2, 10, 50,
250}, against one trained on the same number of real images alone (as many random real images
per class as the set has distilled ones, plus the same k). The paper: adding 2-50 real images
to 10 distilled images per class lowers the accuracy; only 250 real images help.

- ``class_permutations`` / ``draw_extra`` / ``draw_base``: the real images, drawn class-stratified
  from one seeded permutation per class. The extra images of count k are the first k of each
  class's permutation (nested: the images of k = 2 are among those of k = 10, as in the paper's
  notebook); the random-real baseline's own images are the last ones of the same permutation,
  so they never repeat an extra image;
- ``check_counts``: counts beyond the images a class has (beside the baseline's) are refused;
- ``mixed_accuracies``: one model per initial state (one population of the engine), trained
  with the distilled-data protocol on the mixed images, tested on the real test images;
- ``summary`` / ``paired``: mean ± sd over seeds, and paired differences (the same seeds, the
  same initial states) with ``scipy.stats.ttest_rel``;
- ``mixing_figure``: accuracy against "ipc + k" on a symlog axis, one line per set, the
  random-real baseline dashed.

Tensors and arrays in, results out: no storage, no progress sink but an ``advance`` callable.
Its configuration is ``ddsem.config.MixingConfig``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ddsem.config import ModelConfig, TrainConfig

__all__ = [
    "MixingLine",
    "check_counts",
    "class_permutations",
    "draw_base",
    "draw_extra",
    "mixed_accuracies",
    "mixing_figure",
    "paired",
    "summary",
]


# -- the real images -----------------------------------------------------------------------------


def class_permutations(labels: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """Class -> a seeded random permutation of the indices of its images (classes in order,
    one generator: the same labels and seed give the same draw)."""
    import numpy as np

    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    return {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}


def draw_extra(perms: dict[int, np.ndarray], count: int) -> np.ndarray:
    """The extra real images of ``count`` per class: the first ``count`` of each class's
    permutation, class by class (nested over counts)."""
    import numpy as np

    if count == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([p[:count] for _, p in sorted(perms.items())]).astype(np.int64)


def draw_base(perms: dict[int, np.ndarray], per_class: Sequence[int]) -> np.ndarray:
    """The random-real baseline's own images: ``per_class[c]`` of class c, the last ones of its
    permutation (never among the extra images while the counts fit, see ``check_counts``)."""
    import numpy as np

    chosen = [perms[c][len(perms[c]) - n :] for c, n in enumerate(per_class) if n > 0]
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(chosen).astype(np.int64)


def check_counts(
    labels: np.ndarray,
    counts: Sequence[int],
    base_per_class: Sequence[Sequence[int]],
    classes: Sequence[str],
) -> None:
    """Refuse (one line) a count larger than the real training images a class has beside the
    random-real baselines' own images, or a baseline larger than its class."""
    import numpy as np

    have = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    base = np.zeros(len(have), dtype=np.int64)
    for b in base_per_class:
        base = np.maximum(base, np.asarray(b, dtype=np.int64))
    if (base > have).any():
        c = int(np.argmax(base - have))
        raise UserError(
            f"the random-real baseline needs {int(base[c])} real images of class {c} "
            f"({classes[c]}) as the set has distilled ones, the training split has {int(have[c])}"
        )
    room = have - base
    most = max((int(k) for k in counts), default=0)
    c = int(np.argmin(room))
    if most > int(room[c]):
        raise UserError(
            f"--counts {most} exceeds the real images available per class: class {c} "
            f"({classes[c]}) has {int(have[c])} training images, {int(base[c])} of them the "
            f"random-real baseline's own, so at most {int(room[c])} can be added"
        )


# -- training ------------------------------------------------------------------------------------


def mixed_accuracies(
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
    population of the engine (every image kept: weights 1)."""
    import torch

    from ddsem.train import evaluate_population, train_population

    weights = torch.ones(len(init), images.shape[0])
    states = train_population(
        model_cfg, images, labels, weights, list(init), train, device=device, progress=progress
    )
    ev = evaluate_population(model_cfg, states, test_x, test_y, device=device)
    return [float(a) for a in ev.accuracy]


# -- statistics ----------------------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample sd (n - 1; None for one seed) over seeds."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    sd = float(np.std(v, ddof=1)) if len(v) >= 2 else None
    return {"accuracies": [float(x) for x in v], "mean": float(v.mean()), "sd": sd, "n": len(v)}


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """b - a over the same seeds: mean, sd, and ``scipy.stats.ttest_rel(b, a)`` (t and p None
    for one seed, or when every difference is equal)."""
    import numpy as np

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) != len(y) or not len(x):
        raise ValueError(f"paired lists must have the same, non-zero length: {len(x)}, {len(y)}")
    d = y - x
    t = p = None
    if len(d) >= 2 and not np.all(d == d[0]):
        from scipy.stats import ttest_rel

        res = ttest_rel(y, x)
        t, p = float(res.statistic), float(res.pvalue)
    sd = float(np.std(d, ddof=1)) if len(d) >= 2 else None
    return {"mean": float(d.mean()), "sd": sd, "t": t, "p": p, "n": len(d)}


# -- figure --------------------------------------------------------------------------------------


@dataclass
class MixingLine:
    label: str
    baseline: bool  # the random-real subset: dashed
    counts: list[int]
    means: list[float]
    sds: list[float | None]


def mixing_figure(
    lines: list[MixingLine],
    path: str | Path,
    *,
    base: int | None,
    chance: float,
    runs: int,
    title: str,
) -> Path:
    """Test accuracy against the real images added per class (symlog axis, ticks "base + k"),
    one line per set, the random-real subset dashed (paper Fig. 3 right)."""
    from ddsem.plots import _pyplot

    plt = _pyplot()
    colours = ["#E69F00", "#0072B2", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442"]
    markers = ["s", "o", "*", "^", "v", "P", "X"]
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    k = 0
    for line in lines:
        means = [100 * m for m in line.means]
        sds = [100 * (s or 0.0) for s in line.sds]
        if line.baseline:
            style = dict(color="#000000", marker="D", linestyle="--")
        else:
            style = dict(color=colours[k % len(colours)], marker=markers[k % len(markers)])
            k += 1
        ax.errorbar(
            line.counts, means, yerr=sds, capsize=3, markeredgecolor="black", label=line.label,
            **style,
        )  # fmt: skip
    ax.axhline(100 * chance, color="0.5", ls=":", lw=0.8, label=f"chance {100 * chance:.0f}%")
    ax.set_xscale("symlog", linthresh=1)
    ticks = sorted({c for line in lines for c in line.counts})
    ax.set_xticks(ticks, [f"{base}\n+{c}" if base is not None else f"+{c}" for c in ticks])
    ax.minorticks_off()
    ax.set_xlabel(
        "images per class: distilled (or random real) + real added"
        if base is not None
        else "real images added per class",
        fontsize=8,
    )
    ax.set_ylabel("test accuracy %", fontsize=8)
    ax.set_title(f"{title} (mean ± sd, {runs} seeds)", fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
