"""Curvature along training: checkpoints of one model trained on real data, measured per source.

The model is trained once with THE engine (``ddsem.train``); its ``on_step`` hook hands over the
weights at the wanted iterations, so every checkpoint lies on one uninterrupted run (momentum
carried through) and a resumed job can replay the same trajectory. Probe vectors are seeded by
(seed, source, iteration), so a point's value does not depend on which other points are
computed in the same call.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ddsem.config import CurvatureConfig, ModelConfig
from ddsem.curvature.hessian import HessianOperator, State
from ddsem.curvature.lanczos import LanczosResult, lanczos
from ddsem.curvature.trace import TraceEstimate, hutchinson_trace
from ddsem.models import build_model, init_state
from ddsem.runtime import generator
from ddsem.train import Progress, train_population


@dataclass(frozen=True)
class PointMeasurement:
    source: str
    iteration: int
    trace: TraceEstimate | None
    spectrum: LanczosResult | None
    seconds: float


def probe_seed(seed: int, source: str, iteration: int, purpose: str) -> int:
    """A stable seed for the probes of one (source, iteration, purpose)."""
    return zlib.crc32(f"{seed}:{source}:{iteration}:{purpose}".encode())


def measure(
    model_cfg: ModelConfig,
    state: State,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: CurvatureConfig,
    *,
    source: str,
    iteration: int,
    seed: int = 0,
    trace: bool = True,
    density: bool = False,
    device: torch.device | str = "cpu",
) -> PointMeasurement:
    """Hutchinson trace and/or SLQ spectrum of the mean loss on (images, labels) at ``state``."""
    device = torch.device(device)
    start = time.perf_counter()
    op = HessianOperator(
        build_model(model_cfg), state, images, labels, chunk_size=cfg.chunk_size, device=device
    )
    estimate = spectrum = None
    if trace:
        estimate = hutchinson_trace(
            op,
            max_probes=cfg.probes,
            rel_err=cfg.rel_err,
            min_probes=cfg.min_probes,
            block=cfg.probe_block,
            generator=generator(probe_seed(seed, source, iteration, "trace"), device),
        )
    if density:
        spectrum = lanczos(
            op,
            cfg.lanczos_steps,
            runs=cfg.lanczos_runs,
            generator=generator(probe_seed(seed, source, iteration, "lanczos"), device),
        )
    return PointMeasurement(source, iteration, estimate, spectrum, time.perf_counter() - start)


def train_with_checkpoints(
    model_cfg: ModelConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: CurvatureConfig,
    iterations: Sequence[int],
    on_checkpoint: Callable[[int, State], None],
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> None:
    """Train one model (initialised and batched by ``seed``) on real data and call
    ``on_checkpoint(iteration, state)`` at each wanted iteration (0 = the initial weights), in
    increasing order. Training stops at the last wanted iteration."""
    wanted = sorted(set(iterations))
    if not wanted:
        return
    if wanted[0] < 0:
        raise ValueError("iterations must be non-negative")
    init = init_state(model_cfg, seed)
    if wanted[0] == 0:
        on_checkpoint(0, {k: v.clone() for k, v in init.items()})
    last = wanted[-1]
    if last == 0:
        return
    keep = set(wanted)

    def hook(_model: int, step: int, live: State) -> None:
        if step in keep:
            on_checkpoint(step, {k: v.detach().clone() for k, v in live.items()})

    train_population(
        model_cfg,
        images,
        labels,
        torch.ones(1, images.shape[0]),
        [init],
        cfg.train_config(last),
        device=device,
        batch_seed=seed,
        progress=progress,
        on_step=hook,
    )
