"""Job ``curvature``: the Hessian of the loss per source along the training of a model on real
data (paper section 4.3): Hutchinson trace at every ``every``-th iteration, and at chosen
iterations the eigenvalue density (stochastic Lanczos quadrature) and top eigenvalue.

A run is keyed by everything that fixes its values (model, training, probe settings, seed,
data); each (source, iteration) point is stored in one transaction, so an interrupted job
resumes by replaying the deterministic training up to the last missing checkpoint and
measuring only what is missing. Also the helpers the landscape job shares: the real training
tensors, a distilled set's tensors checked against the model, the figure folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.config import CurvatureConfig, ModelConfig
from ddsem.errors import UserError
from ddsem.jobs.common import (
    DataSource,
    at_least,
    check,
    convnet_fits,
    finite,
    load_data,
    real_space,
    seed_number,
    whiten,
)

if TYPE_CHECKING:
    import torch

    from ddsem.data import ImageData
    from ddsem.db import Database
    from ddsem.db.curvature import PointInfo
    from ddsem.db.sets import SetSummary
    from ddsem.jobs.workspace import Workspace

CURVATURE = CurvatureConfig()
MODEL = ModelConfig()
REAL = "real"  # the real source's name
ITERATIONS = 300  # paper 4.3: the model trained on real data for 300 iterations
EVERY = 10
OUT = "figures"
NEGATIVE_FRACTION = 0.01  # "clearly negative": below -1% of the spectral radius

__all__ = [
    "CurvaturePlan",
    "CurvatureRequest",
    "CurvatureResult",
    "DensitySummary",
    "MissingPoint",
    "density_summary",
    "distilled_tensors",
    "figure_folder",
    "model_config",
    "plan",
    "preflight",
    "real_training_tensors",
    "run",
]


# -- what several curvature jobs share ------------------------------------------------------------


def model_config(width: int, depth: int) -> ModelConfig:
    finite(width, "--width")
    finite(depth, "--depth")
    check(width >= 1 and depth >= 1, "--width and --depth must be at least 1")
    convnet_fits(width, depth, ModelConfig.image_size)
    return ModelConfig(width=width, depth=depth)


def figure_folder(out: str | Path) -> Path:
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"--out must be a folder; {path} is a file")
    return path


def real_training_tensors(
    source: DataSource, train_samples: int | None = None, seed: int = 0
) -> tuple[ImageData, torch.Tensor, torch.Tensor]:
    """The real CIFAR-10 training images a model is trained on (all, or a class-stratified
    subset of ``train_samples``): (the data set, normalised NCHW images, int64 labels)."""
    import torch

    from ddsem.data import normalize, stratified_indices

    dataset = load_data(source, "cifar10")
    if train_samples is not None and not 1 <= train_samples <= len(dataset.train_y):
        raise UserError(
            f"--train-samples must be between 1 and {len(dataset.train_y)}, got {train_samples}"
        )
    idx = stratified_indices(dataset.train_y, train_samples, seed)
    images = normalize(dataset.train_x[idx])
    labels = torch.from_numpy(dataset.train_y[idx].astype("int64"))
    return dataset, images, labels


def distilled_tensors(
    db: Database, summary: SetSummary, model_cfg: ModelConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """A distilled set's (images, labels) as tensors, refused when the model cannot take them."""
    import torch

    from ddsem.db.sets import set_tensors

    images, labels = set_tensors(db, summary.id)
    shape = (model_cfg.channels, model_cfg.image_size, model_cfg.image_size)
    if tuple(images.shape[1:]) != shape:
        raise UserError(
            f"set {summary.name!r} has images of shape {tuple(images.shape[1:])}, "
            f"the model takes {shape}"
        )
    if labels.min() < 0 or labels.max() >= model_cfg.num_classes:
        raise UserError(f"set {summary.name!r} has labels outside 0..{model_cfg.num_classes - 1}")
    return torch.from_numpy(images), torch.from_numpy(labels)


# -- the request ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurvatureRequest:
    methods: tuple[str, ...] = ()  # each method's newest set
    set_names: tuple[str, ...] = ()
    real: bool = False  # also the real training data (``real_samples`` of it)
    iterations: int = ITERATIONS
    every: int = EVERY
    probes: int = CURVATURE.probes
    rel_err: float = CURVATURE.rel_err
    real_samples: int = CURVATURE.real_samples
    density_at: tuple[int, ...] = ()  # iterations for the eigenvalue density and top eigenvalue
    lanczos_steps: int = CURVATURE.lanczos_steps
    lanczos_runs: int = CURVATURE.lanczos_runs
    probe_block: int = CURVATURE.probe_block
    chunk_size: int = CURVATURE.chunk_size
    train_samples: int | None = None  # None: every real training image
    width: int = MODEL.width
    depth: int = MODEL.depth
    data: DataSource = None
    seed: int = 0
    out: str = OUT  # folder for the figures

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "set_names", tuple(self.set_names))
        object.__setattr__(self, "density_at", tuple(int(i) for i in self.density_at))
        at_least(self.every, 1, "--every")
        seed_number(self.seed)
        at_least(self.train_samples, 1, "--train-samples")
        finite(self.rel_err, "--rel-err")
        check(
            0.0 < self.rel_err < 1.0,
            f"--rel-err must lie strictly between 0 and 1, got {self.rel_err:g}",
        )
        at_least(self.iterations, 0, "--iterations")
        for name, value, least in (
            ("--probes", self.probes, 2),
            ("--probe-block", self.probe_block, 1),
            ("--chunk-size", self.chunk_size, 1),
            ("--real-samples", self.real_samples, 1),
            ("--lanczos-steps", self.lanczos_steps, 1),
            ("--lanczos-runs", self.lanczos_runs, 1),
        ):
            at_least(value, least, name)
        dupes = sorted({i for i in self.density_at if self.density_at.count(i) > 1})
        check(not dupes, f"--density-at lists {', '.join(map(str, dupes))} more than once")
        for it in self.density_at:
            check(
                0 <= it <= self.iterations,
                f"--density-at {it} is beyond the run: checkpoints go from 0 to --iterations "
                f"{self.iterations}",
            )
        check(
            bool(self.methods or self.set_names or self.real),
            "name at least one source: --method, --set or --real",
        )
        model_config(self.width, self.depth)

    @property
    def model(self) -> ModelConfig:
        return model_config(self.width, self.depth)

    @property
    def config(self) -> CurvatureConfig:
        from dataclasses import replace

        return replace(
            CURVATURE,
            probes=self.probes,
            rel_err=self.rel_err,
            real_samples=self.real_samples,
            lanczos_steps=self.lanczos_steps,
            lanczos_runs=self.lanczos_runs,
            probe_block=self.probe_block,
            chunk_size=self.chunk_size,
        )

    @property
    def checkpoints(self) -> list[int]:
        """0, every, 2 every, ... up to iterations, and the density iterations."""
        return sorted(set(range(0, self.iterations + 1, self.every)) | set(self.density_at))


# -- the plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MissingPoint:
    source: str
    iteration: int
    trace: bool  # the trace is missing (so the point is)
    density: bool  # the density is wanted here and missing


@dataclass
class _Inputs:
    """The tensors a run measures on: each source's (images, labels) and the training data."""

    sources: dict[str, tuple[Any, Any]]
    train_x: Any
    train_y: Any


@dataclass
class CurvaturePlan:
    run_id: int | None  # the stored run of this configuration; None: it would be new
    config: dict[str, Any]  # what keys the run
    sources: list[dict[str, Any]]  # one row per source: name, kind, set id, images
    real_note: str  # how the real source was sampled ("" without --real)
    checkpoints: list[int]
    missing: list[MissingPoint]  # in the order they are measured (iteration, then source)
    inputs: _Inputs = field(repr=False)

    @property
    def source_names(self) -> list[str]:
        return [s["source"] for s in self.sources]

    @property
    def wanted(self) -> int:
        """The points the request asks for: every source at every checkpoint."""
        return len(self.sources) * len(self.checkpoints)

    @property
    def train_steps(self) -> int:
        """How far the training is replayed: to the last checkpoint with a missing point."""
        return max((m.iteration for m in self.missing), default=0)


def _find_sets(db: Database, methods: tuple[str, ...], names: tuple[str, ...]) -> list[SetSummary]:
    """The sets named by method (each method's newest set) and by name, without repeats."""
    from ddsem.db.sets import find_set

    found = [find_set(db, method=m) for m in methods] + [find_set(db, name=n) for n in names]
    unique = {s.id: s for s in found}
    if any(s.name == REAL for s in unique.values()):
        raise UserError(f"a distilled set is named {REAL!r}, which is the real source's name")
    return list(unique.values())


def _missing(
    stored: dict[tuple[str, int], bool],
    sources: list[str],
    checkpoints: list[int],
    density_at: tuple[int, ...],
) -> list[MissingPoint]:
    out = []
    for it in checkpoints:
        for src in sources:
            need_trace = (src, it) not in stored
            need_density = it in density_at and not stored.get((src, it), False)
            if need_trace or need_density:
                out.append(MissingPoint(src, it, need_trace, need_density))
    return out


def preflight(ws: Workspace, request: CurvatureRequest) -> None:
    """What can be refused before the real data is looked for: the figure folder, the sets
    (known, not named "real", of the model's image shape). A face calls it before it turns
    ``--data`` into a path (which may offer a download); ``plan`` checks the same again."""
    figure_folder(request.out)
    for s in _find_sets(ws.db, request.methods, request.set_names):
        distilled_tensors(ws.db, s, request.model)


def plan(ws: Workspace, request: CurvatureRequest) -> CurvaturePlan:
    """The sources, the run's configuration and which points are stored or missing (reads only:
    loads the sets and the real data, writes nothing)."""
    from ddsem.config import to_dict

    req, db = request, ws.db
    figure_folder(req.out)
    model_cfg, cfg = req.model, req.config
    sets = _find_sets(db, req.methods, req.set_names)
    tensors = {s.name: distilled_tensors(db, s, model_cfg) for s in sets}
    spaces = {json.dumps(s.zca, sort_keys=True) for s in sets}
    if len(spaces) > 1:
        raise UserError(
            "these sets live in different spaces (ZCA-whitened and normalised, or two ZCA "
            "transforms); one curvature run trains one model on real images in one space: "
            "measure them in separate runs"
        )
    dataset, pool_x, pool_y = real_training_tensors(req.data, req.train_samples, req.seed)
    zca = real_space(db, sets[0]) if sets else None
    pool_x = whiten(zca, pool_x)  # the model learns the real images in the sets' space
    rows: list[dict[str, Any]] = [
        {"source": s.name, "kind": "distilled", "set_id": s.id, "method": s.method,
         "images": s.num_images}
        for s in sets
    ]  # fmt: skip
    real_note = ""
    if req.real:
        import numpy as np

        n_real = min(req.real_samples, len(pool_y))
        rng = np.random.default_rng(req.seed)
        pick = np.sort(rng.choice(len(pool_y), n_real, replace=False))
        tensors[REAL] = (pool_x[pick], pool_y[pick])
        rows.append({"source": REAL, "kind": "real", "images": int(n_real)})
        real_note = (
            f"real: a uniform random subsample of {n_real} of the {len(pool_y)} training images; "
            "its Hessian trace is an unbiased estimate of the full training set's trace "
            "(the ± covers the probes, not the choice of subsample)"
            if n_real < len(pool_y)
            else f"real: all {n_real} training images (the full-set trace)"
        )
    config = {
        "model": to_dict(model_cfg),
        "dataset": dataset.name,
        "train_images": len(pool_y),
        "train_samples": req.train_samples,
        "seed": req.seed,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "momentum": cfg.momentum,
        "probes": cfg.probes,
        "rel_err": cfg.rel_err,
        "min_probes": cfg.min_probes,
        "probe_block": cfg.probe_block,
    }  # the real source's sample count lives in its source row: changing it redoes only "real"
    if zca is not None:
        config["zca"] = sets[0].zca  # a model trained in ZCA space is another run
    checkpoints = req.checkpoints
    stored: dict[tuple[str, int], bool] = {}
    from ddsem.db.curvature import find_curvature_run

    found = find_curvature_run(db, config)
    run_id = None
    if found is not None:
        from ddsem.db.curvature import stored_points

        run_id, known = found
        known_rows = {r["source"]: r for r in known}
        # a source stored under this name with other contents (a replaced set) is redone
        changed = {r["source"] for r in rows if known_rows.get(r["source"], r) != r}
        stored = {k: v for k, v in stored_points(db, run_id).items() if k[0] not in changed}
    names = [r["source"] for r in rows]
    return CurvaturePlan(
        run_id=run_id,
        config=config,
        sources=rows,
        real_note=real_note,
        checkpoints=checkpoints,
        missing=_missing(stored, names, checkpoints, req.density_at),
        inputs=_Inputs(tensors, pool_x, pool_y),
    )


# -- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DensitySummary:
    """One stored eigenvalue density in numbers: the extreme Ritz values and the mass clearly
    below 0 (the bulk of a network's spectrum sits at ~0 and its Ritz node may land just below
    it, so only eigenvalues below -1% of the spectral radius count as negative)."""

    source: str
    iteration: int
    top: float
    top_residual: float  # an eigenvalue lies within this of ``top``
    bottom: float
    threshold: float  # -1% of the spectral radius
    negative_mass: float  # the fraction of the spectrum below ``threshold``


def density_summary(point: PointInfo) -> DensitySummary | None:
    from ddsem.curvature import LanczosResult

    if point.spectrum is None:
        return None
    spectrum = LanczosResult.from_array(point.spectrum)
    threshold = -NEGATIVE_FRACTION * max(abs(spectrum.top), abs(spectrum.bottom))
    return DensitySummary(
        point.source,
        point.iteration,
        spectrum.top,
        spectrum.top_residual,
        spectrum.bottom,
        threshold,
        spectrum.mass_below(threshold),
    )


@dataclass
class CurvatureResult:
    run_id: int
    config: dict[str, Any]
    sources: list[dict[str, Any]]
    real_note: str
    computed: int  # points measured by this run (a density added to a stored point counts)
    wanted: int  # points the request asks for
    checkpoints: list[int]
    points: list[PointInfo]  # the wanted points, by source and iteration
    figures: list[Path]

    @property
    def source_names(self) -> list[str]:
        return [s["source"] for s in self.sources]

    def trace_rows(self) -> list[tuple[int, list[PointInfo | None]]]:
        """Per checkpoint, each source's point (None where there is none)."""
        by_key = {(p.source, p.iteration): p for p in self.points}
        names = self.source_names
        return [(it, [by_key.get((src, it)) for src in names]) for it in self.checkpoints]

    def densities(self) -> list[DensitySummary]:
        return [d for d in map(density_summary, self.points) if d is not None]

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "config": self.config,
            "sources": self.sources,
            "real_note": self.real_note,
            "computed": self.computed,
            "points": [p.as_json() for p in self.points],
            "figures": [str(f) for f in self.figures],
        }


def run(ws: Workspace, request: CurvatureRequest) -> CurvatureResult:
    """Measure and store every missing point (replaying the training to the last missing
    checkpoint), finish the run and draw the trace and density figures."""
    import time

    from ddsem.db import claims
    from ddsem.db.curvature import (
        find_curvature_run,
        finish_curvature_run,
        open_curvature_run,
        read_points,
        stored_points,
    )
    from ddsem.runtime import process_state

    p = plan(ws, request)
    db = ws.db
    db.require_writable()
    shard = process_state()
    shard.wait()  # several processes: every one has planned before anything is written
    if shard.is_main:
        run_id = open_curvature_run(db, p.config, p.sources).id  # drops changed sources' points
    shard.wait()
    if not shard.is_main:
        found = find_curvature_run(db, p.config)
        assert found is not None
        run_id = found[0]

    def still_missing() -> list[MissingPoint]:
        return _missing(
            stored_points(db, run_id), p.source_names, p.checkpoints, request.density_at
        )

    # Each process claims its contiguous share of the missing points (checkpoint order) before
    # any is measured, then replays the training up to its last one: the training is one
    # sequential trajectory, so a share of late checkpoints replays (nearly) all of it.
    owner = claims.new_owner()
    missing = still_missing()
    mine = [m for m in shard.split(missing) if claims.claim(db, _point_key(run_id, m), owner)]
    shard.wait()
    computed = 0
    while True:
        if mine:
            computed += _measure(ws, run_id, request, p.inputs, mine, owner)
        missing = still_missing()
        if not missing:
            break
        # points another process holds: wait; a dead one's: take over (the claims tell which)
        mine = [m for m in missing[::-1] if claims.claim(db, _point_key(run_id, m), owner)][::-1]
        if not mine:
            time.sleep(WAIT_SECONDS)
    if not shard.is_main:  # the main process finishes the run and draws the figures
        return CurvatureResult(
            run_id, p.config, p.sources, p.real_note, computed, p.wanted, p.checkpoints,
            [], [],
        )  # fmt: skip
    finish_curvature_run(db, run_id)
    wanted = {(src, it) for src in p.source_names for it in p.checkpoints}
    points = [pt for pt in read_points(db, run_id) if (pt.source, pt.iteration) in wanted]
    figures = _figures(figure_folder(request.out), run_id, points, p.source_names)
    return CurvatureResult(
        run_id=run_id,
        config=p.config,
        sources=p.sources,
        real_note=p.real_note,
        computed=computed,
        wanted=len(wanted),
        checkpoints=p.checkpoints,
        points=points,
        figures=figures,
    )


WAIT_SECONDS = 1.0  # how often a process whose remaining points others hold looks again


def _point_key(run_id: int, point: MissingPoint) -> str:
    return f"curvature:{run_id}:{point.source}:{point.iteration}"


def _measure(
    ws: Workspace,
    run_id: int,
    req: CurvatureRequest,
    inputs: _Inputs,
    missing: list[MissingPoint],
    owner: str,
) -> int:
    """Replay the training up to the last of ``missing`` (points ``owner`` has claimed) and
    store each as soon as it is measured, releasing its claim; returns how many were stored."""
    import time

    from ddsem.curvature import measure, train_with_checkpoints
    from ddsem.db import claims
    from ddsem.db.curvature import save_point

    device = ws.torch_device()
    model_cfg, cfg = req.model, req.config
    todo: dict[int, list[MissingPoint]] = {}
    for m in missing:
        todo.setdefault(m.iteration, []).append(m)

    held = {_point_key(run_id, m) for m in missing}
    last_beat = [time.monotonic()]
    with ws.progress.phase("curvature", max(todo) + len(missing)) as advance:

        def on_checkpoint(iteration: int, state) -> None:
            if time.monotonic() - last_beat[0] > 60:  # keep the claims fresh on long runs
                for key in held:
                    claims.heartbeat(ws.db, key, owner)
                last_beat[0] = time.monotonic()
            for point in todo.get(iteration, []):
                images, labels = inputs.sources[point.source]
                m = measure(
                    model_cfg, state, images, labels, cfg, source=point.source,
                    iteration=iteration, seed=req.seed, trace=point.trace,
                    density=point.density, device=device,
                )  # fmt: skip
                save_point(
                    ws.db,
                    run_id,
                    point.source,
                    iteration,
                    trace=m.trace.trace if m.trace else None,
                    trace_stderr=m.trace.stderr if m.trace else None,
                    probes=m.trace.probes if m.trace else None,
                    top_eigenvalue=m.spectrum.top if m.spectrum else None,
                    spectrum=m.spectrum.as_array() if m.spectrum else None,
                )
                key = _point_key(run_id, point)
                claims.release(ws.db, key, owner)
                held.discard(key)
                advance(1)

        try:
            train_with_checkpoints(
                model_cfg, inputs.train_x, inputs.train_y, cfg, sorted(todo), on_checkpoint,
                seed=req.seed, device=device, progress=advance,
            )  # fmt: skip
        finally:  # interrupted: the points not measured are free for the next claim
            for key in list(held):
                claims.release(ws.db, key, owner)
    return len(missing)


def _figures(out_dir: Path, run_id: int, points: list[PointInfo], sources: list[str]) -> list[Path]:
    from ddsem.curvature import LanczosResult
    from ddsem.curvature.figures import density_figure, trace_figure

    series = {}
    for src in sources:
        mine = [p for p in points if p.source == src]
        series[src] = (
            [p.iteration for p in mine],
            [p.trace for p in mine],
            [p.trace_stderr for p in mine],
        )
    figures = [trace_figure(series, out_dir / f"curvature-run{run_id}-trace.png")]
    spectra = {
        (p.source, p.iteration): LanczosResult.from_array(p.spectrum)
        for p in points
        if p.spectrum is not None
    }
    if spectra:
        figures.append(density_figure(spectra, out_dir / f"curvature-run{run_id}-density.png"))
    return figures
