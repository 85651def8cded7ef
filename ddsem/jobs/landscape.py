"""Job ``landscape``: appendix A's loss plane (Fig. 11) through the initial weights, the weights
after one epoch on real data and the weights after training on a distilled set (same
initialisation), with the test loss and the distilled loss on a grid over it.

A landscape is stored once per parameter set (model, grid, training, set, data, seed): a
second identical request reuses the stored grid and only redraws the figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.config import LandscapeConfig, ModelConfig
from ddsem.jobs.common import (
    DataSource,
    at_least,
    check,
    real_space,
    resolve_set,
    seed_number,
    whiten,
)
from ddsem.jobs.curvature import (
    OUT,
    distilled_tensors,
    figure_folder,
    model_config,
    real_training_tensors,
)

if TYPE_CHECKING:
    from ddsem.db.curvature import LandscapeInfo
    from ddsem.db.sets import SetSummary
    from ddsem.jobs.workspace import Workspace

LANDSCAPE = LandscapeConfig()
MODEL = ModelConfig()
# ours: more room than this many spans of the three points leaves them in a corner of the plot,
# and far enough out (1e300) the losses overflow
MAX_MARGIN = 100.0
MAX_GRID = 1001  # ours: a million points of two losses each; the paper's figure has 21 a side

__all__ = ["LandscapePlan", "LandscapeRequest", "LandscapeResult", "plan", "preflight", "run"]


@dataclass(frozen=True)
class LandscapeRequest:
    method: str | None = None  # the method's newest set
    set_name: str | None = None  # (neither: the only set in the database)
    grid: int = LANDSCAPE.grid
    margin: float = LANDSCAPE.margin
    distilled_steps: int = LANDSCAPE.distilled_steps
    test_samples: int | None = LANDSCAPE.test_samples  # None: the whole test split
    train_samples: int | None = None  # None: every real training image
    width: int = MODEL.width
    depth: int = MODEL.depth
    data: DataSource = None
    seed: int = 0
    out: str = OUT

    def __post_init__(self) -> None:
        at_least(self.grid, 2, "--grid")
        check(self.grid <= MAX_GRID, f"--grid must be at most {MAX_GRID}, got {self.grid}")
        at_least(self.margin, 0, "--margin")
        check(
            self.margin <= MAX_MARGIN,
            f"--margin must be at most {MAX_MARGIN:g} (spans of room around the three points), "
            f"got {self.margin:g}",
        )
        at_least(self.distilled_steps, 1, "--distilled-steps")
        seed_number(self.seed)
        at_least(self.train_samples, 1, "--train-samples")
        at_least(self.test_samples, 1, "--test-samples")
        model_config(self.width, self.depth)

    @property
    def model(self) -> ModelConfig:
        return model_config(self.width, self.depth)

    @property
    def config(self) -> LandscapeConfig:
        from dataclasses import replace

        return replace(
            LANDSCAPE,
            grid=self.grid,
            margin=self.margin,
            distilled_steps=self.distilled_steps,
            test_samples=self.test_samples,
        )


@dataclass
class _Inputs:
    dataset: Any  # ImageData
    real: tuple[Any, Any]  # the real training (images, labels)
    distilled: tuple[Any, Any]
    zca: Any = None  # the set's ZCA transform (jobs.common.real_space), or None


@dataclass
class LandscapePlan:
    set: SetSummary
    params: dict[str, Any]  # what keys the stored landscape
    stored: LandscapeInfo | None = field(repr=False)  # the stored landscape; None: to compute
    inputs: _Inputs = field(repr=False)

    @property
    def stored_id(self) -> int | None:
        return self.stored.id if self.stored is not None else None


def preflight(ws: Workspace, request: LandscapeRequest) -> None:
    """What can be refused before the real data is looked for: the figure folder and the set
    (known, of the model's image shape); ``plan`` checks the same again."""
    figure_folder(request.out)
    distilled_tensors(ws.db, resolve_set(ws.db, request.set_name, request.method), request.model)


def plan(ws: Workspace, request: LandscapeRequest) -> LandscapePlan:
    """The set, the parameters and whether a landscape of them is stored (reads only)."""
    from ddsem.config import to_dict
    from ddsem.db.curvature import find_landscape

    req = request
    figure_folder(req.out)
    summary = resolve_set(ws.db, req.set_name, req.method)
    distilled = distilled_tensors(ws.db, summary, req.model)
    dataset, real_x, real_y = real_training_tensors(req.data, req.train_samples, req.seed)
    zca = real_space(ws.db, summary)  # a ZCA set: the real images are whitened the same way
    real_x = whiten(zca, real_x)
    params = {
        "model": to_dict(req.model),
        "landscape": to_dict(req.config),
        "set_id": summary.id,
        "set": summary.name,
        "dataset": dataset.name,
        "train_images": len(real_y),
        "train_samples": req.train_samples,
        "seed": req.seed,
    }
    if zca is not None:
        params["zca"] = summary.zca
    stored = find_landscape(ws.db, params)
    inputs = _Inputs(dataset, (real_x, real_y), distilled, zca)
    return LandscapePlan(summary, params, stored, inputs)


@dataclass
class LandscapeResult:
    analysis_id: int
    reused: bool  # stored before: nothing was computed
    params: dict[str, Any]
    record: dict[str, Any]  # sources, xs, ys, points, paths, point_losses, real_steps, test_images
    figure: Path

    @property
    def set_name(self) -> str:
        return self.params["set"]

    def point_rows(self) -> list[tuple[str, tuple[float, float], list[float]]]:
        """Per weight vector (init, real, distilled): its plane coordinates and its loss on
        each source (in ``record["sources"]`` order)."""
        r = self.record
        return [
            (point, (x, y), [r["point_losses"][src][point] for src in r["sources"]])
            for point, (x, y) in r["points"].items()
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "analysis_id": self.analysis_id,
            "reused": self.reused,
            "params": self.params,
            **self.record,
            "figure": str(self.figure),
        }


def run(ws: Workspace, request: LandscapeRequest) -> LandscapeResult:
    """Compute and store the landscape unless it is stored, then draw its figure."""
    from ddsem.db.curvature import save_landscape, set_landscape_figure

    p = plan(ws, request)
    stored = p.stored
    ws.db.require_writable()  # the figure's path is stored even when the grid is
    if stored is None:
        record, grid_losses = _compute(ws, request, p.inputs)
        analysis_id = save_landscape(ws.db, p.params, record, grid_losses, None)
    else:
        record, grid_losses, analysis_id = stored.result, stored.losses, stored.id
    figure = _figure(figure_folder(request.out), analysis_id, p.set.name, record, grid_losses)
    set_landscape_figure(ws.db, analysis_id, str(figure))
    return LandscapeResult(analysis_id, stored is not None, p.params, record, figure)


def _compute(ws: Workspace, req: LandscapeRequest, inputs: _Inputs):
    import numpy as np
    import torch

    from ddsem.curvature import compute_landscape
    from ddsem.curvature.landscape import landscape_steps
    from ddsem.data import normalize, stratified_indices

    cfg, dataset = req.config, inputs.dataset
    pick = stratified_indices(dataset.test_y, req.test_samples, req.seed)
    test = (
        whiten(inputs.zca, normalize(dataset.test_x[pick])),
        torch.from_numpy(dataset.test_y[pick].astype("int64")),
    )
    total = landscape_steps(len(inputs.real[1]), cfg) + cfg.distilled_steps + cfg.grid
    with ws.progress.phase("landscape", total) as advance:
        result = compute_landscape(
            req.model, inputs.real, inputs.distilled, test, cfg,
            seed=req.seed, device=ws.torch_device(), progress=advance,
        )  # fmt: skip
    record = {
        "sources": list(result.losses),
        "xs": result.xs.tolist(),
        "ys": result.ys.tolist(),
        "points": {k: list(v) for k, v in result.points.items()},
        "paths": {k: [list(p) for p in v] for k, v in result.paths.items()},
        "point_losses": result.point_losses,
        "real_steps": result.real_steps,
        "test_images": len(pick),
    }
    return record, np.stack([result.losses[k] for k in record["sources"]])


def _figure(out_dir: Path, analysis_id: int, set_name: str, record, grid_losses) -> Path:
    import numpy as np

    from ddsem.curvature.figures import landscape_figure

    losses = {
        ("test" if src == "test" else f"distilled ({set_name})"): np.asarray(grid_losses[i])
        for i, src in enumerate(record["sources"])
    }
    return landscape_figure(
        np.asarray(record["xs"]),
        np.asarray(record["ys"]),
        losses,
        {k: tuple(v) for k, v in record["points"].items()},
        {k: [tuple(p) for p in v] for k, v in record["paths"].items()},
        out_dir / f"landscape-{analysis_id}.png",
        title=f"loss plane: init, 1 epoch on real data, trained on {set_name}",
    )
