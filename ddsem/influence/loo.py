"""Exact leave-one-out influence by retraining (paper section 5.1; DESIGN sections 3 and 4).

For a distilled set of N images, N+1 models train from ONE shared initial state: the reference
model and one model per distilled image i. Their per-sample test losses give

    distilled context: influence(i, j) = loss_j(all but i) - loss_j(all)
    real context:      influence(i, j) = loss_j(R real) - loss_j(R real + distilled i)

so in both contexts a positive value means "image i helps test image j". Every model is one
row of per-sample weights over one shared image tensor, trained by the population engine
(``ddsem.train``): batched with torch.func on CUDA, a loop on the CPU.

Influences are small differences of losses, so the arithmetic stays float32 end to end and, on
CUDA, TF32 is switched off while a run trains (``full_float32``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ddsem.config import ModelConfig, TrainConfig
from ddsem.errors import UserError
from ddsem.train import PopulationEval, Progress, State, evaluate_population, train_population

REFERENCE = -1  # model index of the reference model (all distilled images, or the real sample)
CONTEXTS = ("distilled", "real")
ACTIVATION_BYTES = 2**31  # CUDA evaluation: one layer's activations of one launch, at most


@dataclass
class Population:
    """The shared training tensor and one weight row per model, in model order.

    ``model_indices[k]`` says what row k is: ``REFERENCE`` or the distilled image index i.
    """

    context: str
    images: torch.Tensor  # (M, C, H, W): the distilled images, or the real sample + distilled
    labels: torch.Tensor  # (M,)
    weights: torch.Tensor  # (N + 1, M) in {0, 1}
    model_indices: list[int]

    @property
    def num_models(self) -> int:
        return len(self.model_indices)

    def rows_of(self, model_indices: Sequence[int]) -> list[int]:
        position = {m: k for k, m in enumerate(self.model_indices)}
        return [position[m] for m in model_indices]


def build_population(
    distilled_x: torch.Tensor,
    distilled_y: torch.Tensor,
    context: str = "distilled",
    real_x: torch.Tensor | None = None,
    real_y: torch.Tensor | None = None,
) -> Population:
    """The N+1 training sets of a leave-one-out run as weight rows over one tensor."""
    n = distilled_x.shape[0]
    if n < 2:
        raise UserError(
            f"leave-one-out needs a set of at least 2 images, this one has {n}: "
            "without its only image nothing is left to train on"
        )
    indices = [REFERENCE, *range(n)]
    if context == "distilled":
        weights = torch.ones(n + 1, n)
        weights[1:] -= torch.eye(n)
        return Population(context, distilled_x, distilled_y, weights, indices)
    if context == "real":
        if real_x is None or real_y is None or real_x.shape[0] == 0:
            raise UserError("the real context needs real training images")
        r = real_x.shape[0]
        weights = torch.zeros(n + 1, r + n)
        weights[:, :r] = 1.0
        weights[1:, r:] = torch.eye(n)
        images = torch.cat([real_x.to(distilled_x.dtype), distilled_x])
        labels = torch.cat([real_y.to(distilled_y.dtype), distilled_y])
        return Population(context, images, labels, weights, indices)
    raise UserError(f"unknown context {context!r}: use {' or '.join(CONTEXTS)}")


def eval_chunk_size(device: torch.device, num_models: int, model_cfg: ModelConfig) -> int:
    """Test images per evaluation launch: on CUDA all models see the chunk at once (vmap), so
    models x images x the first layer's activation size stays under ``ACTIVATION_BYTES``."""
    if device.type == "cuda":
        per_sample = 4 * model_cfg.width * model_cfg.image_size**2
        return max(1, ACTIVATION_BYTES // (per_sample * max(1, num_models)))
    return 256  # measured on the CPU: 500-image chunks evaluate slower (cache) than 256


def train_and_evaluate(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    population: Population,
    model_indices: Sequence[int],
    init: State,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    path: str = "auto",
    progress: Progress | None = None,
    max_models_per_launch: int | None = None,
    tf32: bool = False,
) -> PopulationEval:
    """Train the named models of a population from ``init`` and evaluate them on the test set.

    Results come back in the order of ``model_indices``; losses are float32 per test image.
    ``tf32=True`` leaves TF32 on for CUDA (only to measure what it does to the noise floor).
    """
    device = torch.device(device)
    rows = population.rows_of(model_indices)
    precision = tf32_mode(True) if tf32 and device.type == "cuda" else full_float32(device)
    with precision:
        states = train_population(
            model_cfg,
            population.images,
            population.labels,
            population.weights[rows],
            [init] * len(rows),
            train_cfg,
            device=device,
            path=path,
            max_models_per_launch=max_models_per_launch,
            progress=progress,
        )
        return evaluate_population(
            model_cfg,
            states,
            test_x,
            test_y,
            device=device,
            path=path,
            chunk_size=eval_chunk_size(device, len(rows), model_cfg),
        )


def influence_from_losses(
    reference_losses: np.ndarray, model_losses: np.ndarray, context: str
) -> np.ndarray:
    """(N, T) float32 influence from the reference losses (T,) and the N models' losses (N, T)."""
    ref = np.asarray(reference_losses, dtype=np.float32)[None, :]
    per_model = np.asarray(model_losses, dtype=np.float32)
    if context == "distilled":
        return (per_model - ref).astype(np.float32)
    if context == "real":
        return (ref - per_model).astype(np.float32)
    raise UserError(f"unknown context {context!r}: use {' or '.join(CONTEXTS)}")


def top_k(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the positions and values of the k largest entries, largest first (ties: lower
    position first)."""
    k = min(k, matrix.shape[1])
    order = np.argsort(-matrix, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(matrix, order, axis=1)


@contextmanager
def full_float32(device: torch.device | str) -> Iterator[None]:
    """Switch TF32 off for matmuls and convolutions on CUDA while the block runs, then restore.

    TF32 keeps 10 mantissa bits (about 1e-3 relative) in matmul/conv inputs; losses would then
    differ between two trainings of one model by far more than the float32 floor, which can
    swamp the small loss differences that influences are.
    """
    if torch.device(device).type != "cuda":
        yield
        return
    with tf32_mode(False):
        yield


@contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """Set TF32 for CUDA matmuls and cuDNN convolutions inside the block (new API if present)."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "conv"):
        saved = (matmul.fp32_precision, conv.conv.fp32_precision)
        matmul.fp32_precision = "tf32" if enabled else "ieee"
        conv.conv.fp32_precision = "tf32" if enabled else "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision, conv.conv.fp32_precision = saved
        return
    saved_legacy = (matmul.allow_tf32, conv.allow_tf32)
    matmul.allow_tf32 = conv.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32, conv.allow_tf32 = saved_legacy


@dataclass
class LooResult:
    """Everything one seed's leave-one-out run produces."""

    influence: np.ndarray  # (N, T) float32
    reference_losses: np.ndarray  # (T,) float32
    model_losses: np.ndarray  # (N, T) float32: model without (distilled) / with (real) image i
    reference_accuracy: float
    model_accuracy: np.ndarray  # (N,)


def leave_one_out(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    distilled_x: torch.Tensor,
    distilled_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    init: State,
    *,
    context: str = "distilled",
    real_x: torch.Tensor | None = None,
    real_y: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    path: str = "auto",
    progress: Progress | None = None,
    max_models_per_launch: int | None = None,
) -> LooResult:
    """One seed's whole leave-one-out run in memory (ddsem.jobs.influence does the same in
    stored chunks)."""
    population = build_population(distilled_x, distilled_y, context, real_x, real_y)
    result = train_and_evaluate(
        model_cfg,
        train_cfg,
        population,
        population.model_indices,
        init,
        test_x,
        test_y,
        device=device,
        path=path,
        progress=progress,
        max_models_per_launch=max_models_per_launch,
    )
    losses = result.losses.numpy()
    return LooResult(
        influence=influence_from_losses(losses[0], losses[1:], context),
        reference_losses=losses[0],
        model_losses=losses[1:],
        reference_accuracy=float(result.accuracy[0]),
        model_accuracy=result.accuracy[1:].numpy(),
    )
