"""Expert trajectories for trajectory matching (MTT's buffer.py): a model trained on real data
with its parameters kept after every epoch.

Each epoch is one ``ddsem.train.train_population`` call over a freshly DSA-augmented copy of the
real images (per-sample parameters, one family drawn per 256-image chunk, like the reference's
per-batch draw), so the engine is the only training loop. The experts' optimiser has no
momentum (buffer.py: SGD momentum 0), so splitting training at epoch boundaries is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ddsem.config import ExpertConfig, ModelConfig, TrainConfig
from ddsem.distill import augment
from ddsem.distill.common import FlatModel
from ddsem.errors import UserError
from ddsem.models import init_state
from ddsem.train import evaluate_population, train_population


def augmented_epoch(
    images: torch.Tensor, strategy: str, generator: torch.Generator, chunk: int
) -> torch.Tensor:
    families = augment.parse_strategy(strategy)
    if not families:
        return images
    parts = [
        augment.augment(images[s : s + chunk], families, generator)
        for s in range(0, len(images), chunk)
    ]
    return torch.cat(parts)


def train_expert(
    model_cfg: ModelConfig,
    cfg: ExpertConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    seed: int,
    *,
    device: torch.device | str = "cpu",
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, float | None]:
    """Train one expert from seed ``seed``; returns (trajectory float32 (epochs + 1, P) with the
    initial parameters in row 0, test accuracy of the final model or None)."""
    if cfg.momentum:
        raise UserError("expert training splits at epoch boundaries; it needs momentum 0 (MTT's)")
    device = torch.device(device)
    images, labels = images.to(device), labels.to(device)
    flat = FlatModel(model_cfg, torch.device("cpu"))
    generator = torch.Generator().manual_seed(seed)
    state = init_state(model_cfg, seed)
    n = images.shape[0]
    epoch_cfg = TrainConfig(
        steps=math.ceil(n / cfg.batch_size),
        lr=cfg.lr,
        momentum=0.0,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
    )
    rows = [flat.flatten(state).numpy()]
    ones = torch.ones(1, n)
    for _ in range(cfg.epochs):
        with torch.no_grad():
            epoch_images = augmented_epoch(images, cfg.dsa_strategy, generator, cfg.batch_size)
        batch_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        (state,) = train_population(
            model_cfg,
            epoch_images,
            labels,
            ones,
            [state],
            epoch_cfg,
            device=device,
            batch_seed=batch_seed,
        )
        rows.append(flat.flatten(state).numpy())
        if progress is not None:
            progress(1)
    accuracy = None
    if test is not None:
        accuracy = float(
            evaluate_population(model_cfg, [state], test[0], test[1], device=device).accuracy[0]
        )
    return np.stack(rows).astype(np.float32), accuracy
