"""Retrained test accuracy of a distilled set, on any registered architecture, under two
protocols (both through the training engine):

- "paper": the analysis paper's (section 2): SGD lr 0.01, momentum 0.9, 300 full-batch steps.
- "dc": DatasetCondensation's ``evaluate_synset``: batch 256, SGD lr 0.01, momentum 0.9,
  weight decay 5e-4; the reference loop runs epochs 0..E (E + 1 epochs) and after epoch
  E//2 + 1 divides the lr by 10 with a fresh optimiser, which restarts momentum; ddsem runs
  that as two engine calls. Not reproduced: the reference's DSA augmentation while training.

Each run is one model with its own initialisation seed; all runs of a protocol train as one
population (so on a GPU they share a launch), with the same minibatch order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ddsem.config import DCEvalConfig, ModelConfig, TrainConfig
from ddsem.distill import PROTOCOLS
from ddsem.errors import UserError
from ddsem.train import evaluate_population, initial_states, train_population


def protocol_phases(
    protocol: str,
    num_images: int,
    *,
    paper: TrainConfig | None = None,
    dc: DCEvalConfig | None = None,
) -> list[TrainConfig]:
    """The training phases of a protocol for a set of ``num_images`` images."""
    if protocol == "paper":
        return [paper or TrainConfig()]
    if protocol != "dc":
        raise UserError(f"unknown evaluation protocol {protocol!r}: use {', '.join(PROTOCOLS)}")
    dc = dc or DCEvalConfig()
    per_epoch = math.ceil(num_images / dc.batch_size)
    first = dc.epochs // 2 + 2  # epochs 0 .. epochs//2 + 1 at the initial lr
    second = dc.epochs + 1 - first
    common = {"momentum": dc.momentum, "weight_decay": dc.weight_decay, "batch_size": dc.batch_size}
    phases = [TrainConfig(steps=first * per_epoch, lr=dc.lr, **common)]
    if second > 0:
        phases.append(TrainConfig(steps=second * per_epoch, lr=dc.lr * dc.decay_factor, **common))
    return phases


@dataclass
class EvalResult:
    accuracies: list[float]

    @property
    def mean(self) -> float:
        return float(torch.tensor(self.accuracies).mean())

    @property
    def std(self) -> float:
        # population std over runs, as the reference code reports (np.std)
        return float(torch.tensor(self.accuracies).std(unbiased=False)) if self.accuracies else 0.0


def evaluate_set(
    images: torch.Tensor,
    labels: torch.Tensor,
    model_cfg: ModelConfig,
    phases: list[TrainConfig],
    seeds: list[int],
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Train one model per seed on (images, labels) through ``phases``; test accuracy of each."""
    states = initial_states(model_cfg, seeds)
    weights = torch.ones(len(seeds), images.shape[0])
    for i, phase in enumerate(phases):
        states = train_population(
            model_cfg,
            images,
            labels,
            weights,
            states,
            phase,
            device=device,
            batch_seed=seeds[0] * 1000 + i,
            progress=progress,
        )
    accuracy = evaluate_population(model_cfg, states, test_x, test_y, device=device).accuracy
    return EvalResult([float(a) for a in accuracy])


def total_steps(phases: list[TrainConfig], runs: int) -> int:
    return sum(p.steps for p in phases) * runs
