"""Retrained test accuracy of a distilled set, on any registered architecture, under three
protocols (all through the training engine):

- "paper": the analysis paper's (section 2): SGD lr 0.01, momentum 0.9, 300 full-batch steps.
- "dc": DatasetCondensation's ``evaluate_synset`` as DC runs it for a CIFAR-10 ConvNet
  (DCEvalConfig): 300 epochs of batch 256, SGD lr 0.01, momentum 0.9, weight decay 5e-4; the
  reference loop runs epochs 0..E (E + 1 epochs) and after epoch E//2 + 1 divides the lr by 10
  with a fresh optimiser, which restarts momentum; ddsem runs that as two engine calls.
- "dsa": the same function as DSA, DM and MTT run it (DSAEvalConfig): 1000 epochs and DSA
  augmentation of every training batch (one family per batch, per-sample parameters), and the
  set's learned learning rate (MTT's syn_lr) instead of 0.01 when the set carries one.

The engine's minibatches are ``batch_size`` images each, a fresh permutation when fewer remain
(the reference's DataLoader also trains on the short last batch of an epoch); at ipc 10 on
CIFAR-10 (100 images, batch 256) both are one full batch per epoch.

Each run is one model with its own initialisation seed; all runs of a protocol train as one
population (so on a GPU they share a launch), with the same minibatch order. Augmentation
draws are per model and step, from a generator seeded by (the model's seed, the step), so a
run is reproducible on either training path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ddsem.config import DCEvalConfig, DSAEvalConfig, ModelConfig, TrainConfig
from ddsem.distill import PROTOCOLS
from ddsem.distill.augment import augment as dsa_augment
from ddsem.distill.augment import parse_strategy
from ddsem.errors import UserError
from ddsem.train import evaluate_population, initial_states, train_population

# The retraining protocols: ddsem.distill.PROTOCOLS plus "dsa" (until that list carries it).
EVAL_PROTOCOLS: tuple[str, ...] = tuple(dict.fromkeys((*PROTOCOLS, "dsa")))


def protocol_phases(
    protocol: str,
    num_images: int,
    *,
    paper: TrainConfig | None = None,
    dc: DCEvalConfig | None = None,
    dsa: DSAEvalConfig | None = None,
) -> list[TrainConfig]:
    """The training phases of a protocol for a set of ``num_images`` images (``dsa``: with the
    lr it is given; ``protocol_lr`` picks the set's learned one)."""
    if protocol == "paper":
        return [paper or TrainConfig()]
    if protocol == "dsa":
        dc = dsa or DSAEvalConfig()
    elif protocol == "dc":
        dc = dc or DCEvalConfig()
    else:
        raise UserError(
            f"unknown evaluation protocol {protocol!r}: use {', '.join(EVAL_PROTOCOLS)}"
        )
    per_epoch = math.ceil(num_images / dc.batch_size)
    first = dc.epochs // 2 + 2  # epochs 0 .. epochs//2 + 1 at the initial lr
    second = dc.epochs + 1 - first
    common = {"momentum": dc.momentum, "weight_decay": dc.weight_decay, "batch_size": dc.batch_size}
    phases = [TrainConfig(steps=first * per_epoch, lr=dc.lr, **common)]
    if second > 0:
        phases.append(TrainConfig(steps=second * per_epoch, lr=dc.lr * dc.decay_factor, **common))
    return phases


def protocol_lr(cfg: DSAEvalConfig, synthetic_lr: float | None) -> tuple[float, str]:
    """The lr of the ``dsa`` protocol for a set and where it comes from: the set's learned
    learning rate (MTT) when it carries one and ``cfg.learned_lr``, else ``cfg.lr``."""
    if cfg.learned_lr and synthetic_lr is not None:
        return float(synthetic_lr), "learned"
    return float(cfg.lr), "config"


def protocol_augmentation(protocol: str, dsa: DSAEvalConfig | None = None) -> str:
    """The augmentation strategy a protocol trains with ("none" for paper and dc)."""
    if protocol != "dsa":
        return "none"
    strategy = (dsa or DSAEvalConfig()).dsa_strategy
    parse_strategy(strategy)  # one clear line for an unknown family
    return strategy


class SeededAugment:
    """A DSA batch transform for the engine (``ddsem.train.Augment``): the draw of model k at
    step s comes from a generator seeded by (seeds[k], offset + s), so it does not depend on
    the training path, chunking or the order models are trained in; ``offset`` continues the
    draws across the phases of a protocol."""

    def __init__(self, strategy: str, seeds: list[int], offset: int = 0) -> None:
        self.families = parse_strategy(strategy)
        self.seeds = list(seeds)
        self.offset = offset

    def seed_for(self, model: int, step: int) -> int:
        return (self.seeds[model] * 1_000_003 + self.offset + step) % (2**63 - 1)

    def __call__(self, x: torch.Tensor, step: int, model: int) -> torch.Tensor:
        if not self.families:
            return x
        g = torch.Generator().manual_seed(self.seed_for(model, step))
        return dsa_augment(x, self.families, g)


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
    augmentation: str = "none",
) -> EvalResult:
    """Train one model per seed on (images, labels) through ``phases``; test accuracy of each.
    ``augmentation``: a DSA strategy applied to every training batch ("none": no transform)."""
    states = initial_states(model_cfg, seeds)
    weights = torch.ones(len(seeds), images.shape[0])
    families = parse_strategy(augmentation)
    done = 0
    for i, phase in enumerate(phases):
        augment = SeededAugment(augmentation, seeds, done) if families else None
        done += phase.steps
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
            augment=augment,
        )
    accuracy = evaluate_population(model_cfg, states, test_x, test_y, device=device).accuracy
    return EvalResult([float(a) for a in accuracy])


def total_steps(phases: list[TrainConfig], runs: int) -> int:
    return sum(p.steps for p in phases) * runs
