"""Agreement of predictions between a distilled-trained model and pools of models trained on
real data (paper section 4.1, Fig. 4; appendix B's weight-decay pool; appendix C's test).

Pools (all through the one engine, ``ddsem.train``):
- subset-trained models: model j keeps, per class, a fraction f_j ~ U(0.005, 0.05) of the real
  training images (a 0/1 row over them) and is trained on those alone, in minibatches of 256
  of its own images, as generate_models.py does;
- early-stopped models: one epoch on every real training image, test predictions after every
  iteration (the engine's ``on_step`` hook), one run per seed;
- weight-decay models (optional): every real training image, weight decay ~ U(0.05, 0.13);
- the distilled-trained models: the distilled-data protocol (``TrainConfig()``), several seeds.

Agreement of two models = the number of test images on which they predict the same class.

Why the subset models are not one population with sample weights: a population shares one
minibatch order over all N images, so a model keeping a fraction f would take ceil(N / 256)
steps an epoch on about 256 f of its images each (1 to 13 images at the paper's fractions)
instead of ceil(f N / 256) steps of 256: another optimisation than the paper's. Each model is
therefore a population of one on its own subset (``benchmarks/pool.py`` measures what the
shared order would save and how far its predictions move).

Where this differs from the paper's code, by design:
- the engine's minibatch schedule draws full batches of 256 (a new random order when fewer
  than 256 images are left) where a DataLoader ends an epoch with a partial batch: the same
  number of iterations an epoch, each a full batch;
- compare_models.ipynb compares every early-stopped run at the hand-picked iteration; here the
  iteration is chosen the same way (closest mean accuracy) and the runs at it are then held to
  the same accuracy window as the other pools.

Tensors and configs in, predictions, statistics and a figure out: no storage, no printing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ddsem.config import AgreementConfig, ModelConfig, TrainConfig

if TYPE_CHECKING:
    import torch

__all__ = [
    "AgreementConfig",
    "PoolComparison",
    "agreement_figure",
    "agreements",
    "compare_pool",
    "distilled_predictions",
    "early_run",
    "epoch_config",
    "independent_agreement",
    "model_seed",
    "subset_pool",
    "subset_weights",
    "variability_test",
    "weight_decay_pool",
    "weight_decays",
]

# The pools' initial-state seeds: model j of pool P starts from seed * STRIDE + OFFSET[P] + j.
STRIDE = 10_000_000
OFFSET = {"subset": 0, "early": 5_000_000, "weight-decay": 7_000_000}
POOLS = ("subset", "early", "weight-decay")


def epoch_config(
    num_images: int, epochs: int, batch_size: int, lr: float, momentum: float, wd: float = 0.0
) -> TrainConfig:
    """``epochs`` passes of minibatches over ``num_images``: ceil(N / batch) iterations an
    epoch (the DataLoader's drop_last=False count; 196 for CIFAR-10); full batch when the
    images fit in one."""
    if batch_size >= num_images:
        return TrainConfig(steps=epochs, lr=lr, momentum=momentum, weight_decay=wd)
    steps = epochs * math.ceil(num_images / batch_size)
    return TrainConfig(steps=steps, lr=lr, momentum=momentum, weight_decay=wd,
                       batch_size=batch_size)  # fmt: skip


def model_seed(seed: int, pool: str, index: int) -> int:
    """The initial-state seed of model ``index`` of ``pool`` (independent of the pool's size)."""
    return seed * STRIDE + OFFSET[pool] + index


def subset_weights(
    labels: np.ndarray, indices: Sequence[int], low: float, high: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """0/1 weight rows (K, N) of subset-trained models ``indices`` and their fractions.

    Model j draws f_j ~ U(low, high) and, per class, keeps the first max(1, int(n_c f_j)) of a
    random order of that class's images (generate_models.py: list[:int(len(list) * subset)]),
    from its own generator (seed, j): a model's subset does not depend on the pool's size."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    rows = np.zeros((len(indices), len(labels)), dtype=np.float32)
    fractions = np.zeros(len(indices), dtype=np.float64)
    for r, j in enumerate(indices):
        rng = np.random.default_rng([seed, j])
        f = float(rng.uniform(low, high))
        fractions[r] = f
        for c in classes:
            members = np.flatnonzero(labels == c)
            keep = rng.permutation(members)[: max(1, int(len(members) * f))]
            rows[r, keep] = 1.0
    return rows, fractions


def weight_decays(indices: Sequence[int], low: float, high: float, seed: int) -> np.ndarray:
    """The weight-decay strength of models ``indices``, each U(low, high) from (seed, j)."""
    return np.array(
        [float(np.random.default_rng([seed, 1, j]).uniform(low, high)) for j in indices]
    )


def _uint8(predictions: torch.Tensor) -> np.ndarray:
    return predictions.cpu().numpy().astype(np.uint8)


def subset_steps(weights: np.ndarray, epochs: int, batch_size: int) -> list[int]:
    """Each subset model's iterations: ``epochs`` passes over its own images in minibatches."""
    return [epoch_config(int(n), epochs, batch_size, 0.01, 0.0).steps for n in weights.sum(axis=1)]


def subset_pool(
    model_cfg: ModelConfig,
    real: tuple[torch.Tensor, torch.Tensor],
    weights: np.ndarray,
    seeds: Sequence[int],
    epochs: int,
    cfg: AgreementConfig,
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Train subset-trained models, each on its own subset (the 1 rows of ``weights``) as
    generate_models.py does: shuffled minibatches of ``cfg.batch_size`` of its own images,
    ``epochs`` passes, SGD; its seed gives its initial state and its minibatch order.
    Returns (predictions (K, T) uint8, accuracy (K,))."""
    import torch

    from ddsem.models import init_state
    from ddsem.train import evaluate_population, train_population

    states = []
    for row, seed in zip(weights, seeds, strict=True):
        keep = torch.from_numpy(np.flatnonzero(row))
        train = epoch_config(len(keep), epochs, cfg.batch_size, cfg.lr, cfg.momentum)
        (state,) = train_population(
            model_cfg, real[0][keep], real[1][keep], torch.ones(1, len(keep)),
            [init_state(model_cfg, seed)], train, device=device, batch_seed=seed,
            progress=progress,
        )  # fmt: skip
        states.append(state)
    ev = evaluate_population(model_cfg, states, test[0], test[1], device=device)
    return _uint8(ev.predictions), ev.accuracy.numpy().astype(np.float32)


def weight_decay_pool(
    model_cfg: ModelConfig,
    real: tuple[torch.Tensor, torch.Tensor],
    decays: np.ndarray,
    seeds: Sequence[int],
    train: TrainConfig,
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Models on every real image, each with its own weight decay (the engine takes one
    strength per call, so one call a model, each with its own minibatch order)."""
    import torch

    from ddsem.models import init_state
    from ddsem.train import evaluate_population, train_population

    states = []
    for wd, s in zip(decays, seeds, strict=True):
        (state,) = train_population(
            model_cfg, real[0], real[1], torch.ones(1, len(real[1])), [init_state(model_cfg, s)],
            replace(train, weight_decay=float(wd)), device=device, batch_seed=s,
            progress=progress,
        )  # fmt: skip
        states.append(state)
    ev = evaluate_population(model_cfg, states, test[0], test[1], device=device)
    return _uint8(ev.predictions), ev.accuracy.numpy().astype(np.float32)


def early_run(
    model_cfg: ModelConfig,
    real: tuple[torch.Tensor, torch.Tensor],
    seed: int,
    train: TrainConfig,
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One early-stopping run on every real image (initial state and minibatch order of
    ``seed``): test predictions after every iteration, (steps, T) uint8, and accuracies."""
    import torch

    from ddsem.models import init_state
    from ddsem.train import evaluate_population, train_population

    preds = np.zeros((train.steps, len(test[1])), dtype=np.uint8)
    acc = np.zeros(train.steps, dtype=np.float32)

    def hook(_k: int, step: int, state: dict[str, torch.Tensor]) -> None:
        live = {k: v.detach().clone() for k, v in state.items()}
        ev = evaluate_population(model_cfg, [live], test[0], test[1], device=device)
        preds[step - 1], acc[step - 1] = _uint8(ev.predictions[0]), float(ev.accuracy[0])

    train_population(
        model_cfg, real[0], real[1], torch.ones(1, len(real[1])), [init_state(model_cfg, seed)],
        train, device=device, batch_seed=seed, progress=progress, on_step=hook,
    )  # fmt: skip
    return preds, acc


def distilled_predictions(
    model_cfg: ModelConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    seeds: Sequence[int],
    train: TrainConfig,
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Distilled-trained models, one population of seeds (compare_models.ipynb: 300 full-batch
    iterations, SGD lr 0.01, momentum 0.9): (predictions (S, T) uint8, accuracy (S,))."""
    import torch

    from ddsem.train import evaluate_population, initial_states, train_population

    states = train_population(
        model_cfg, images, labels, torch.ones(len(seeds), len(labels)),
        initial_states(model_cfg, seeds), train, device=device, batch_seed=seeds[0],
        progress=progress,
    )  # fmt: skip
    ev = evaluate_population(model_cfg, states, test[0], test[1], device=device)
    return _uint8(ev.predictions), ev.accuracy.numpy().astype(np.float32)


# -- agreement and its statistics -------------------------------------------------------------------


def agreements(reference: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Test images on which ``reference`` (T,) and each row of ``pool`` (K, T) agree: (K,)."""
    return (np.asarray(pool) == np.asarray(reference)[None, :]).sum(axis=1).astype(np.int64)


def independent_agreement(acc_a: float, acc_b: np.ndarray, classes: int) -> np.ndarray:
    """The agreement share two models of these accuracies would have if their errors were
    independent and uniform over the wrong classes: a b + (1 - a)(1 - b) / (C - 1)."""
    acc_b = np.asarray(acc_b, dtype=np.float64)
    return acc_a * acc_b + (1 - acc_a) * (1 - acc_b) / max(1, classes - 1)


def variability_test(
    reference: np.ndarray, pool: np.ndarray, alpha: float = 0.05
) -> dict[str, Any]:
    """Appendix C, for every model j of ``pool`` (K, T): the agreements of j with the pool's
    other models are checked for normality (Shapiro-Wilk) and fitted by a normal
    distribution; the probability of the reference model's agreement with j under it is the
    two-sided tail 2 min(F(x), 1 - F(x)). Needs 3 models or more (else ``None`` values)."""
    from scipy import stats

    pool = np.asarray(pool)
    k = len(pool)
    probs: list[float | None] = []
    normal_p: list[float | None] = []
    ref = agreements(reference, pool).astype(np.float64)
    if k >= 4:  # Shapiro-Wilk needs 3 values: the others of 4 models
        pair = (pool[:, None, :] == pool[None, :, :]).sum(axis=2).astype(np.float64)
    for j in range(k):
        if k < 4:
            probs.append(None)
            normal_p.append(None)
            continue
        others = np.delete(pair[j], j)
        mu, sd = float(others.mean()), float(others.std(ddof=1))
        if sd == 0:
            probs.append(1.0 if ref[j] == mu else 0.0)
            normal_p.append(None)
            continue
        cdf = float(stats.norm.cdf(ref[j], mu, sd))
        probs.append(2 * min(cdf, 1 - cdf))
        normal_p.append(float(stats.shapiro(others).pvalue))
    known = [p for p in probs if p is not None]
    tested = [p for p in normal_p if p is not None]
    return {
        "probabilities": probs,
        "normality_p": normal_p,
        "median_probability": float(np.median(known)) if known else None,
        "improbable_share": float(np.mean(np.array(known) < alpha)) if known else None,
        "normal_share": float(np.mean(np.array(tested) >= alpha)) if tested else None,
        "tested": len(known),
        "alpha": alpha,
    }


@dataclass
class PoolComparison:
    """One pool against one set's distilled-trained models (all seeds together)."""

    pool: str
    test_images: int
    classes: int
    window: float  # points
    per_seed: list[dict[str, Any]] = field(default_factory=list)  # selection and agreements

    @property
    def counts(self) -> np.ndarray:
        return np.concatenate([np.asarray(s["agreements"], dtype=np.int64) for s in self.per_seed])

    def summary(self, alpha: float = 0.05) -> dict[str, Any]:
        from scipy import stats

        counts = self.counts
        share = counts / self.test_images
        chance = np.concatenate([s["independent"] for s in self.per_seed])
        probs = [p for s in self.per_seed for p in s["test"]["probabilities"] if p is not None]
        normal = [p for s in self.per_seed for p in s["test"]["normality_p"] if p is not None]
        shapiro_p = float(stats.shapiro(counts).pvalue) if len(counts) >= 3 and np.ptp(
            counts) > 0 else None  # fmt: skip
        seed_means = [float(np.mean(s["agreements"])) / self.test_images for s in self.per_seed]
        return {
            "pool": self.pool,
            "compared": int(len(counts)),
            "models": sorted({int(m) for s in self.per_seed for m in s["models"]}),
            "iterations": [s.get("iteration") for s in self.per_seed],
            "agreement_mean": float(share.mean()),
            "agreement_sd": float(share.std(ddof=1)) if len(share) > 1 else 0.0,
            "agreement_seed_sd": float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else 0.0,
            "agreements": counts.tolist(),
            "independent_agreement": float(chance.mean()),
            "pool_accuracy_mean": float(np.mean([a for s in self.per_seed for a in s["accuracy"]])),
            "shapiro_p": shapiro_p,
            "median_probability": float(np.median(probs)) if probs else None,
            "improbable_share": float(np.mean(np.array(probs) < alpha)) if probs else None,
            "normal_share": float(np.mean(np.array(normal) >= alpha)) if normal else None,
            "probabilities": probs,
            "tested": len(probs),
        }


def _within(acc: np.ndarray, target: float, window: float) -> np.ndarray:
    return np.flatnonzero(np.abs(np.asarray(acc, dtype=np.float64) - target) <= window / 100 + 1e-9)


def compare_pool(
    pool: str,
    distilled: tuple[np.ndarray, np.ndarray],
    predictions: np.ndarray,
    accuracy: np.ndarray,
    classes: int,
    window: float,
    alpha: float = 0.05,
) -> PoolComparison:
    """Each distilled-trained model (predictions (S, T), accuracy (S,)) against the models of a
    pool within ``window`` points of its accuracy.

    A plain pool: ``predictions`` (K, T), ``accuracy`` (K,). The early-stopped pool:
    ``predictions`` (R, I, T), ``accuracy`` (R, I): per distilled model, the iteration whose
    mean accuracy over the runs is closest to its accuracy (the paper's BPTT 130, DM 40, GM 35,
    TM 90), then the runs at that iteration within the window."""
    d_pred, d_acc = distilled
    out = PoolComparison(pool, int(d_pred.shape[1]), classes, window)
    for s in range(len(d_acc)):
        target = float(d_acc[s])
        entry: dict[str, Any] = {"seed_index": s, "distilled_accuracy": target}
        if predictions.ndim == 3:
            it = int(np.argmin(np.abs(accuracy.mean(axis=0) - target)))
            entry["iteration"] = it + 1  # iterations count from 1 (after the first update)
            preds, acc = predictions[:, it], accuracy[:, it]
        else:
            preds, acc = predictions, accuracy
        chosen = _within(acc, target, window)
        entry["models"] = chosen.tolist()
        entry["accuracy"] = [float(a) for a in acc[chosen]]
        entry["agreements"] = agreements(d_pred[s], preds[chosen]).tolist()
        entry["independent"] = independent_agreement(target, acc[chosen], classes)
        entry["test"] = variability_test(d_pred[s], preds[chosen], alpha)
        out.per_seed.append(entry)
    return out


def closest_iteration_accuracy(accuracy: np.ndarray, target: float) -> tuple[int, float]:
    """(iteration counted from 1, mean accuracy) of the early-stopped pool closest to target."""
    mean = accuracy.mean(axis=0)
    it = int(np.argmin(np.abs(mean - target)))
    return it + 1, float(mean[it])


def mann_whitney_greater(a: Sequence[float], b: Sequence[float]) -> float | None:
    """One-sided Mann-Whitney U p-value that values ``a`` tend to exceed values ``b``."""
    from scipy import stats

    if len(a) == 0 or len(b) == 0:
        return None
    if np.ptp(np.concatenate([np.asarray(a, float), np.asarray(b, float)])) == 0:
        return None
    return float(stats.mannwhitneyu(a, b, alternative="greater").pvalue)


# -- the figure ---------------------------------------------------------------------------------

COLORS = {"subset": "#FFC20A", "early": "#0C7BDC", "weight-decay": "#40B0A6"}
LABELS = {"subset": "subset", "early": "early stopping", "weight-decay": "weight decay"}


def _density(ax, values: np.ndarray, color: str, label: str) -> None:
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    if len(values) >= 2 and np.ptp(values) > 0:
        span = np.ptp(values)
        xs = np.linspace(values.min() - span, values.max() + span, 200)
        ys = stats.gaussian_kde(values)(xs)
        ax.fill_between(xs, ys, alpha=0.35, color=color, label=label)
        ax.plot(xs, ys, color=color, lw=1)
    else:  # one value, or all equal: a line where a density cannot be estimated
        ax.axvline(values[0], color=color, lw=2, label=f"{label} (n={len(values)})")


def agreement_figure(
    panels: list[tuple[str, dict[str, np.ndarray], dict[str, list[float]]]],
    path: Path,
    title: str,
) -> Path:
    """Fig. 4's layout: one panel per set with the density of agreement shares (distilled-
    trained vs each pool's models); below, appendix C's probabilities (Fig. 22) per pool.

    panels: (set title, pool -> agreement shares, pool -> appendix C probabilities)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    fig, axes = plt.subplots(2, n, figsize=(max(8, 5 * n), 6.5), squeeze=False)
    for col, (name, shares, probs) in enumerate(panels):
        ax = axes[0, col]
        for pool, values in shares.items():
            if len(values):
                _density(ax, values, COLORS[pool], LABELS[pool])
        ax.set_title(name, fontweight="bold")
        ax.set_xlabel("agreement with the distilled-trained model (share of test images)")
        ax.set_yticks([])
        ax.legend(fontsize=8)
        ax = axes[1, col]
        bins = np.linspace(0, 1, 21)
        for pool, values in probs.items():
            if len(values):
                ax.hist(values, bins=bins, alpha=0.5, color=COLORS[pool], label=LABELS[pool])
        ax.set_xlabel("appendix C: probability of the distilled model's agreement")
        ax.set_ylabel("pool models")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
