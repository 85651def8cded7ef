"""Appendix A's loss landscape: a plane through three weight vectors of one initialisation.

theta_0 is the initial model, theta_real the model after one epoch on real data and theta_dist
the model after training on the distilled set (Goodfellow et al., 2014; Li et al., 2018, with
training endpoints instead of random directions). The plane is
theta(x, y) = theta_0 + x * d1 + y * d2 with d1 = theta_real - theta_0 and d2 the part of
theta_dist - theta_0 orthogonal to d1, so theta_0 = (0, 0), theta_real = (1, 0) and
theta_dist = (c, 1) exactly, and every grid point is a linear interpolation of the three. The
loss of each grid point is evaluated by the engine's one evaluator (``evaluate_population``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ddsem.config import LandscapeConfig, ModelConfig, TrainConfig
from ddsem.curvature.hessian import State
from ddsem.models import init_state
from ddsem.train import Progress, evaluate_population, train_population


@dataclass(frozen=True)
class Plane:
    origin: torch.Tensor  # (P,) float64: the floating-point entries of theta_0, flattened
    first: torch.Tensor  # d1 = theta_real - theta_0
    second: torch.Tensor  # d2 = (theta_dist - theta_0) minus its projection on d1
    layout: tuple[tuple[str, tuple[int, ...], int], ...]  # (name, shape, size) of those entries
    template: State  # theta_0: non-floating entries (counters) are copied from it

    def state_at(self, x: float, y: float) -> State:
        flat = self.origin + x * self.first + y * self.second
        state = dict(self.template)
        for (name, shape, _), part in zip(
            self.layout, torch.split(flat, [s for *_, s in self.layout]), strict=True
        ):
            state[name] = part.view(shape).to(self.template[name].dtype)
        return state

    def coords(self, state: State) -> tuple[float, float]:
        """Coordinates of the orthogonal projection of ``state`` on the plane."""
        offset = _flatten(state, self.layout) - self.origin
        return (
            float(offset @ self.first / (self.first @ self.first)),
            float(offset @ self.second / (self.second @ self.second)),
        )


def _float_layout(state: State) -> tuple[tuple[str, tuple[int, ...], int], ...]:
    return tuple((k, tuple(v.shape), v.numel()) for k, v in state.items() if v.is_floating_point())


def _flatten(state: State, layout) -> torch.Tensor:
    return torch.cat([state[k].detach().reshape(-1).double().cpu() for k, *_ in layout])


def plane_through(origin: State, first: State, second: State) -> Plane:
    """The plane through ``origin`` with ``first`` at (1, 0) and ``second`` at (c, 1)."""
    layout = _float_layout(origin)
    o = _flatten(origin, layout)
    d1 = _flatten(first, layout) - o
    d2 = _flatten(second, layout) - o
    if float(d1.norm()) == 0.0:
        raise ValueError("the first direction is zero: the training did not move the weights")
    d2 = d2 - (d2 @ d1) / (d1 @ d1) * d1
    if float(d2.norm()) <= 1e-9 * float(d1.norm()):
        raise ValueError("the three weight vectors are collinear: they span no plane")
    template = {k: v.detach().cpu().clone() for k, v in origin.items()}
    return Plane(o, d1, d2, layout, template)


def grid_axes(
    corners: Sequence[tuple[float, float]], grid: int, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """x and y values of a grid x grid lattice covering ``corners`` plus a margin on each side."""
    xs, ys = zip(*corners, strict=True)
    axes = []
    for values in (xs, ys):
        low, high = min(values), max(values)
        pad = margin * (high - low or 1.0)
        axes.append(np.linspace(low - pad, high + pad, grid))
    return axes[0], axes[1]


def grid_losses(
    model_cfg: ModelConfig,
    plane: Plane,
    xs: np.ndarray,
    ys: np.ndarray,
    sources: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Mean cross-entropy of every source at every grid point: name -> (len(ys), len(xs))."""
    out = {name: np.zeros((len(ys), len(xs))) for name in sources}
    for row, y in enumerate(ys):
        states = [plane.state_at(float(x), float(y)) for x in xs]
        for name, (images, labels) in sources.items():
            result = evaluate_population(model_cfg, states, images, labels, device=device)
            out[name][row] = result.losses.double().mean(dim=1).numpy()
        if progress is not None:
            progress(1)
    return out


@dataclass(frozen=True)
class Landscape:
    xs: np.ndarray
    ys: np.ndarray
    losses: dict[str, np.ndarray]  # source -> (len(ys), len(xs)) mean loss
    points: dict[str, tuple[float, float]]  # init, real, distilled
    paths: dict[str, list[tuple[float, float]]]  # real, distilled: projected trajectories
    point_losses: dict[str, dict[str, float]]  # source -> point -> exact loss at the point
    real_steps: int


def landscape_steps(num_real: int, cfg: LandscapeConfig) -> int:
    """SGD steps of ``real_epochs`` epochs over ``num_real`` images at the config's batch size."""
    return cfg.real_epochs * math.ceil(num_real / cfg.batch_size)


def compute_landscape(
    model_cfg: ModelConfig,
    real: tuple[torch.Tensor, torch.Tensor],
    distilled: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    cfg: LandscapeConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Landscape:
    """Train both models from ``init_state(seed)``, span the plane, evaluate the grid.

    ``progress`` advances once per training step and once per grid row.
    """
    init = init_state(model_cfg, seed)
    real_steps = landscape_steps(real[0].shape[0], cfg)
    runs = {
        "real": (real, TrainConfig(real_steps, cfg.lr, cfg.momentum, 0.0, cfg.batch_size)),
        "distilled": (distilled, TrainConfig(cfg.distilled_steps, cfg.distilled_lr, cfg.momentum)),
    }
    ends: dict[str, State] = {}
    paths: dict[str, list[State]] = {}
    for name, ((images, labels), train_cfg) in runs.items():
        every = max(1, train_cfg.steps // cfg.trajectory_points)
        path: list[State] = [init]

        def keep(_k: int, step: int, live: State, path=path, every=every) -> None:
            if step % every == 0:
                path.append({k: v.detach().cpu().clone() for k, v in live.items()})

        (ends[name],) = train_population(
            model_cfg,
            images,
            labels,
            torch.ones(1, images.shape[0]),
            [init],
            train_cfg,
            device=device,
            batch_seed=seed,
            progress=progress,
            on_step=keep,
        )
        paths[name] = path
    plane = plane_through(init, ends["real"], ends["distilled"])
    points = {
        "init": (0.0, 0.0),
        "real": plane.coords(ends["real"]),
        "distilled": plane.coords(ends["distilled"]),
    }
    sources = {"test": test, "distilled": distilled}
    xs, ys = grid_axes(list(points.values()), cfg.grid, cfg.margin)
    losses = grid_losses(model_cfg, plane, xs, ys, sources, device=device, progress=progress)
    states = [init, ends["real"], ends["distilled"]]
    point_losses = {}
    for name, (images, labels) in sources.items():
        values = evaluate_population(model_cfg, states, images, labels, device=device).losses
        point_losses[name] = dict(zip(points, values.double().mean(dim=1).tolist(), strict=True))
    projected = {name: [plane.coords(s) for s in path] for name, path in paths.items()}
    return Landscape(xs, ys, losses, points, projected, point_losses, real_steps)
