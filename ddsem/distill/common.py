"""What every distillation method shares: the real images by class, the synthetic set's
initialisation, a flat-parameter view of a model for unrolled students, checkpoints, and the
iteration driver with its checkpoint / stop / resume points.

Randomness: one private ``torch.Generator`` drives every random choice of a run (the initial
images, real batches, augmentations, fresh networks, expert picks). Its state is part of a
checkpoint, so a resumed run continues with exactly the draws an uninterrupted run makes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ddsem.config import ModelConfig
from ddsem.data import MEAN, STD
from ddsem.distill import INITS, METHODS, check_method  # noqa: F401  (re-exported)
from ddsem.errors import UserError
from ddsem.models import build_model, has_batch_statistics


def check_model(model_cfg: ModelConfig) -> None:
    """Distillation needs per-sample normalisation (instance norm or none): a BatchNorm model's
    statistics would couple the synthetic images with each other and with the real batch."""
    if has_batch_statistics(build_model(model_cfg)):
        raise UserError(
            f"distillation needs a model without batch statistics; {model_cfg.arch} with "
            f"norm {model_cfg.norm!r} has BatchNorm: use instancenorm or none"
        )


def random_int(generator: torch.Generator) -> int:
    """A non-negative int seed drawn from the run's generator (fresh networks, batch orders)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


# -- real data -------------------------------------------------------------------------------------


def normalise_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float NCHW in the normalised space (same arithmetic as ddsem.data.normalize)."""
    mean = torch.tensor(MEAN, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float().div(255.0) - mean) / std


class RealData:
    """Real training images grouped by class, kept as uint8 on the device and normalised when
    drawn (a full CIFAR-10 train split is 150 MB this way instead of 600 MB)."""

    def __init__(
        self, pixels_nhwc: np.ndarray, labels: np.ndarray, num_classes: int, device: torch.device
    ) -> None:
        self.device = torch.device(device)
        self.pixels = torch.from_numpy(np.ascontiguousarray(pixels_nhwc)).permute(0, 3, 1, 2)
        self.pixels = self.pixels.contiguous().to(self.device)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.num_classes = num_classes
        self.by_class = [torch.nonzero(self.labels == c).flatten() for c in range(num_classes)]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape[1:])  # type: ignore[return-value]

    def count(self, c: int) -> int:
        return len(self.by_class[c])

    def min_count(self) -> int:
        return min(self.count(c) for c in range(self.num_classes))

    def choose(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """Indices (into the split) of n random images of class c (all of them if fewer)."""
        pool = self.by_class[c]
        return pool[torch.randperm(len(pool), generator=generator)[:n]]

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        return normalise_uint8(self.pixels[indices.to(self.device)])

    def sample(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.take(self.choose(c, n, generator))

    def all_images(self) -> torch.Tensor:
        return normalise_uint8(self.pixels)


@dataclass
class InitialSet:
    images: torch.Tensor  # float32 (classes * ipc, C, H, W), class-major order
    labels: torch.Tensor  # int64 [0]*ipc + [1]*ipc + ...
    real_indices: list[int] | None  # the real training images used, for --init real


def initial_set(real: RealData, ipc: int, init: str, generator: torch.Generator) -> InitialSet:
    """The synthetic set before distillation: random real images of each class (the default,
    analysis paper appendix F), standard normal noise (DC/DM/MTT "noise") or Xavier-uniform
    (the original BPTT)."""
    if init not in INITS:
        raise UserError(f"unknown initialisation {init!r}: use one of {', '.join(INITS)}")
    k = real.num_classes
    labels = torch.arange(k).repeat_interleave(ipc)
    shape = (k * ipc, *real.image_shape)
    if init == "real":
        chosen = [real.choose(c, ipc, generator) for c in range(k)]
        indices = torch.cat(chosen)
        return InitialSet(real.take(indices).cpu(), labels, [int(i) for i in indices])
    if init == "noise":
        return InitialSet(torch.randn(shape, generator=generator), labels, None)
    images = torch.empty(shape)
    torch.nn.init.xavier_uniform_(images, generator=generator)
    return InitialSet(images, labels, None)


# -- a model as a function of one flat parameter vector ------------------------------------------


class FlatModel:
    """``model(flat_params, x)`` through torch.func.functional_call: the form unrolled students
    (TM, BPTT) and expert trajectories use. Parameter order is ``named_parameters()``."""

    def __init__(self, model_cfg: ModelConfig, device: torch.device) -> None:
        self.module = build_model(model_cfg).to(device)
        if list(self.module.buffers()):
            raise UserError(f"{model_cfg.arch} keeps buffers (BatchNorm): not usable here")
        named = list(self.module.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.num_params = sum(self.numels)

    def flatten(self, state: dict[str, Any]) -> torch.Tensor:
        return torch.cat([torch.as_tensor(state[n]).reshape(-1).float() for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(flat, self.numels)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        return functional_call(self.module, self.unflatten(flat), (x,))

    def loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(flat, x), y)


# -- the optimiser of the synthetic images -------------------------------------------------------


class ImageSGD:
    """SGD with momentum on one leaf tensor, with a state that checkpoints as plain tensors."""

    def __init__(self, param: torch.Tensor, lr: float, momentum: float) -> None:
        self.param = param
        self.opt = torch.optim.SGD([param], lr=lr, momentum=momentum)

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.opt.step()

    def state(self) -> torch.Tensor | None:
        buf = self.opt.state.get(self.param, {}).get("momentum_buffer")
        return None if buf is None else buf.detach().clone()

    def load(self, buf: torch.Tensor | None) -> None:
        if buf is not None:
            self.opt.state[self.param]["momentum_buffer"] = buf.to(self.param.device).clone()


# -- methods, checkpoints and the driver ---------------------------------------------------------


class Distiller:
    """One distillation method over a synthetic set. Subclasses implement ``step``."""

    method = ""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> None:
        self.device = torch.device(device)
        self.images = images.detach().clone().float().to(self.device).requires_grad_(True)
        self.labels = labels.to(self.device)
        self.last_loss = float("nan")
        self.last_grad_norm = float("nan")

    def step(self, generator: torch.Generator) -> float:
        """One distillation iteration; returns its loss."""
        raise NotImplementedError

    def state(self) -> dict[str, torch.Tensor]:
        """Optimiser (and other learned) state besides the images, for checkpoints."""
        return {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what ``state`` returned."""

    @property
    def synthetic_lr(self) -> float | None:
        return None

    def _record_grad(self) -> None:
        g = self.images.grad
        self.last_grad_norm = float("nan") if g is None else float(g.detach().norm())


@dataclass
class Checkpoint:
    """Everything a run needs to continue exactly: images, optimiser state, RNG, iteration."""

    iteration: int
    images: torch.Tensor
    generator_state: torch.Tensor
    method_state: dict[str, torch.Tensor] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "iteration": np.asarray(self.iteration, dtype=np.int64),
            "images": self.images.detach().cpu().numpy(),
            "generator_state": self.generator_state.cpu().numpy(),
            "wall_seconds": np.asarray(self.wall_seconds, dtype=np.float64),
        }
        for k, v in self.method_state.items():
            arrays[f"method.{k}"] = v.detach().cpu().numpy()
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Checkpoint:
        return cls(
            iteration=int(arrays["iteration"]),
            images=torch.from_numpy(np.array(arrays["images"])),
            generator_state=torch.from_numpy(np.array(arrays["generator_state"])),
            method_state={
                k.removeprefix("method."): torch.from_numpy(np.array(v))
                for k, v in arrays.items()
                if k.startswith("method.")
            },
            wall_seconds=float(arrays["wall_seconds"]),
        )


def checkpoint_of(
    distiller: Distiller, generator: torch.Generator, iteration: int, wall_seconds: float
) -> Checkpoint:
    return Checkpoint(
        iteration=iteration,
        images=distiller.images.detach().cpu().clone(),
        generator_state=generator.get_state().clone(),
        method_state={k: v.detach().cpu().clone() for k, v in distiller.state().items()},
        wall_seconds=wall_seconds,
    )


def restore(distiller: Distiller, generator: torch.Generator, checkpoint: Checkpoint) -> None:
    with torch.no_grad():
        distiller.images.copy_(checkpoint.images.to(distiller.device))
    distiller.load_state({k: v.to(distiller.device) for k, v in checkpoint.method_state.items()})
    generator.set_state(checkpoint.generator_state)


@dataclass
class RunOutcome:
    iteration: int  # iterations done in total (across resumptions)
    finished: bool  # reached the configured number of iterations
    wall_seconds: float  # total across resumptions
    losses: list[float]  # losses of this invocation's iterations


def run(
    distiller: Distiller,
    generator: torch.Generator,
    *,
    start: int,
    total: int,
    wall_offset: float = 0.0,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
    stop_after: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunOutcome:
    """Iterate from ``start`` to ``total``, checkpointing every ``checkpoint_every`` iterations
    and, when ``stop_after`` iterations of this call are done before the end, once more at the
    stopping point (so ``--resume`` continues from there)."""
    t0 = time.perf_counter()
    losses: list[float] = []
    it = start
    while it < total:
        if stop_after is not None and it - start >= stop_after:
            break
        losses.append(distiller.step(generator))
        it += 1
        if progress is not None:
            progress(1)
        wall = wall_offset + time.perf_counter() - t0
        periodic = checkpoint_every and it % checkpoint_every == 0
        stopping = stop_after is not None and it - start >= stop_after
        if on_checkpoint is not None and it < total and (periodic or stopping):
            on_checkpoint(checkpoint_of(distiller, generator, it, wall))
    wall = wall_offset + time.perf_counter() - t0
    return RunOutcome(it, it >= total, wall, losses)
