"""``ddsem curvature`` and ``ddsem landscape``: paper section 4.3 and appendix A.

curvature: train a ConvNet on real data (batch 256, SGD lr 0.01, momentum 0.9) and measure the
Hessian trace of the loss on every source at every ``--every``-th iteration (and, at chosen
iterations, the eigenvalue density and top eigenvalue). Resumable per (source, iteration).
landscape: appendix A's loss plane through the initial, real-trained and distilled-trained
weights, on the test set and on the distilled set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ddsem.cli import common
from ddsem.config import CurvatureConfig, LandscapeConfig, ModelConfig
from ddsem.errors import UserError

CURVATURE = CurvatureConfig()
LANDSCAPE = LandscapeConfig()
MODEL = ModelConfig()
REAL = "real"
DATA_HELP = "CIFAR-10: torchvision folder, image folder or its .tar.gz [default: $DDSEM_DATA]."


# -- shared input handling -----------------------------------------------------------------------


def _split_names(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _model_config(width: int, depth: int) -> ModelConfig:
    if width < 1 or depth < 1:
        raise UserError("--width and --depth must be at least 1")
    return ModelConfig(width=width, depth=depth)


def _find_sets(db, methods: list[str], names: list[str]) -> list[Any]:
    """Distilled sets named by --method (each method's newest set) and --set, without repeats."""
    from ddsem.db.sets import find_set

    found = [find_set(db, method=m) for m in methods] + [find_set(db, name=n) for n in names]
    unique = {s.id: s for s in found}
    if any(s.name == REAL for s in unique.values()):
        raise UserError(f"a distilled set is named {REAL!r}, which is the real source's name")
    return list(unique.values())


def _set_tensors(db, summary, model_cfg: ModelConfig):
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


def _real_pool(data: str | None, train_samples: int | None, seed: int):
    """The real training images the model is trained on (all, or a class-stratified subset)."""
    import torch

    from ddsem.data import load_dataset, normalize, stratified_indices

    dataset = load_dataset(data, "cifar10")
    if train_samples is not None and not 1 <= train_samples <= len(dataset.train_y):
        raise UserError(
            f"--train-samples must be between 1 and {len(dataset.train_y)}, got {train_samples}"
        )
    idx = stratified_indices(dataset.train_y, train_samples, seed)
    images = normalize(dataset.train_x[idx])
    labels = torch.from_numpy(dataset.train_y[idx].astype("int64"))
    return dataset, images, labels


def _out_dir(out: str) -> Path:
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"--out must be a folder; {path} is a file")
    return path


# -- ddsem curvature -----------------------------------------------------------------------------


def curvature(
    method: str = typer.Option(
        None, "--method", help="Comma-separated methods (bptt,dm,gm,tm): each one's newest set."
    ),
    set_names: str = typer.Option(None, "--set", help="Comma-separated distilled set names."),
    real: bool = typer.Option(
        False, "--real", help="Also measure on the real training set (--real-samples of it)."
    ),
    iterations: int = typer.Option(300, "--iterations", help="Training iterations on real data."),
    every: int = typer.Option(10, "--every", help="Measure at every N-th iteration (and 0)."),
    probes: int = typer.Option(CURVATURE.probes, "--probes", help="Most Hutchinson probes."),
    rel_err: float = typer.Option(
        CURVATURE.rel_err,
        "--rel-err",
        help="Stop once stderr / |trace| is at most this, in (0, 1).",
    ),
    real_samples: int = typer.Option(
        CURVATURE.real_samples, "--real-samples", help="Random real training images for --real."
    ),
    density_at: str = typer.Option(
        None,
        "--density-at",
        help="Iterations for the eigenvalue density and top eigenvalue: 0,25,300.",
    ),
    lanczos_steps: int = typer.Option(CURVATURE.lanczos_steps, "--lanczos-steps"),
    lanczos_runs: int = typer.Option(
        CURVATURE.lanczos_runs, "--lanczos-runs", help="Independent SLQ runs averaged."
    ),
    probe_block: int = typer.Option(
        CURVATURE.probe_block,
        "--probe-block",
        help="Probes per pass (they share one forward pass).",
    ),
    chunk_size: int = typer.Option(
        CURVATURE.chunk_size,
        "--chunk-size",
        help="Images per Hessian-vector pass (memory grows with it and --probe-block).",
    ),
    train_samples: int = typer.Option(
        None, "--train-samples", help="Train on a class-stratified subset [default: all]."
    ),
    width: int = typer.Option(MODEL.width, "--width", help="ConvNet width."),
    depth: int = typer.Option(MODEL.depth, "--depth", help="ConvNet depth."),
    data: str = typer.Option(None, "--data", help=DATA_HELP),
    out: str = typer.Option("figures", "--out", help="Folder for the PNG figures."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Hessian trace (Hutchinson) per source along the training of a model on real data;
    eigenvalue density (stochastic Lanczos quadrature) at --density-at. Resumable."""
    from dataclasses import replace

    if every < 1:
        raise UserError(f"--every must be at least 1, got {every}")
    if not 0.0 < rel_err < 1.0:
        raise UserError(f"--rel-err must lie strictly between 0 and 1, got {rel_err:g}")
    if iterations < 0:
        raise UserError(f"--iterations must be at least 0, got {iterations}")
    for name, value, least in (
        ("--probes", probes, 2),
        ("--probe-block", probe_block, 1),
        ("--chunk-size", chunk_size, 1),
        ("--real-samples", real_samples, 1),
        ("--lanczos-steps", lanczos_steps, 1),
        ("--lanczos-runs", lanczos_runs, 1),
    ):
        if value < least:
            raise UserError(f"{name} must be at least {least}, got {value}")
    density_its = common.parse_int_list(density_at, "--density-at") if density_at else []
    for it in density_its:
        if not 0 <= it <= iterations:
            raise UserError(
                f"--density-at {it} is beyond the run: checkpoints go from 0 to --iterations "
                f"{iterations}"
            )
    methods, names = _split_names(method), _split_names(set_names)
    if not (methods or names or real):
        raise UserError("name at least one source: --method, --set or --real")
    model_cfg = _model_config(width, depth)
    cfg = replace(
        CURVATURE,
        probes=probes,
        rel_err=rel_err,
        real_samples=real_samples,
        lanczos_steps=lanczos_steps,
        lanczos_runs=lanczos_runs,
        probe_block=probe_block,
        chunk_size=chunk_size,
    )
    out_dir = _out_dir(out)
    device = common.device()
    seed = common.OPTIONS.seed

    db = common.open_database()
    sets = _find_sets(db, methods, names)
    sources = {s.name: _set_tensors(db, s, model_cfg) for s in sets}
    dataset, pool_x, pool_y = _real_pool(data, train_samples, seed)
    source_rows: list[dict[str, Any]] = [
        {
            "source": s.name,
            "kind": "distilled",
            "set_id": s.id,
            "method": s.method,
            "images": s.num_images,
        }
        for s in sets
    ]
    real_note = ""
    if real:
        import numpy as np

        n_real = min(real_samples, len(pool_y))
        pick = np.sort(np.random.default_rng(seed).choice(len(pool_y), n_real, replace=False))
        sources[REAL] = (pool_x[pick], pool_y[pick])
        source_rows.append({"source": REAL, "kind": "real", "images": int(n_real)})
        real_note = (
            f"real: a uniform random subsample of {n_real} of the {len(pool_y)} training images; "
            "its Hessian trace is an unbiased estimate of the full training set's trace "
            "(the ± covers the probes, not the choice of subsample)"
            if n_real < len(pool_y)
            else f"real: all {n_real} training images (the full-set trace)"
        )

    from ddsem.config import to_dict
    from ddsem.db.curvature import open_curvature_run

    run_config = {
        "model": to_dict(model_cfg),
        "dataset": dataset.name,
        "train_images": len(pool_y),
        "train_samples": train_samples,
        "seed": seed,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "momentum": cfg.momentum,
        "probes": cfg.probes,
        "rel_err": cfg.rel_err,
        "min_probes": cfg.min_probes,
        "probe_block": cfg.probe_block,
    }  # the real source's sample count lives in its source row: changing it redoes only "real"
    run = open_curvature_run(db, run_config, source_rows)
    checkpoints = sorted(set(range(0, iterations + 1, every)) | set(density_its))
    computed = _compute_points(
        db, run.id, model_cfg, cfg, sources, checkpoints, set(density_its), pool_x, pool_y,
        seed=seed, device=device,
    )  # fmt: skip

    from ddsem.db.curvature import finish_curvature_run, read_points

    finish_curvature_run(db, run.id)
    wanted = {(src, it) for src in sources for it in checkpoints}
    points = [p for p in read_points(db, run.id) if (p.source, p.iteration) in wanted]
    figures = _curvature_figures(out_dir, run.id, points, list(sources))
    header = (
        f"curvature run {run.id}: ConvNet width {width}, depth {depth} trained on {len(pool_y)} "
        f"real {dataset.name} training images (batch {cfg.batch_size}, SGD lr {cfg.lr:g}, "
        f"momentum {cfg.momentum:g}); checkpoints 0..{iterations} every {every}"
    )
    if as_json:
        common.print_json(
            {
                "run_id": run.id,
                "config": run_config,
                "sources": source_rows,
                "real_note": real_note,
                "computed": computed,
                "points": [p.as_json() for p in points],
                "figures": [str(f) for f in figures],
            }
        )
        return
    common.echo(header)
    if real_note:
        common.echo(real_note)
    common.echo(f"computed {computed} of {len(wanted)} points now; the others were stored before")
    _print_points(points, list(sources), checkpoints)
    common.echo("wrote " + ", ".join(str(f) for f in figures))


def _compute_points(
    db,
    run_id: int,
    model_cfg: ModelConfig,
    cfg: CurvatureConfig,
    sources: dict[str, Any],
    checkpoints: list[int],
    density_its: set[int],
    pool_x,
    pool_y,
    *,
    seed: int,
    device,
) -> int:
    """Replay the training up to the last missing checkpoint and measure what is missing."""
    from ddsem.curvature import measure, train_with_checkpoints
    from ddsem.db.curvature import save_point, stored_points

    stored = stored_points(db, run_id)
    todo: dict[int, list[tuple[str, bool, bool]]] = {}
    for it in checkpoints:
        for src in sources:
            need_trace = (src, it) not in stored
            need_density = it in density_its and not stored.get((src, it), False)
            if need_trace or need_density:
                todo.setdefault(it, []).append((src, need_trace, need_density))
    if not todo:
        return 0
    units = sum(len(v) for v in todo.values())
    train_steps = max(todo)

    with common.progress(train_steps + units, "curvature") as advance:

        def on_checkpoint(iteration: int, state) -> None:
            for src, need_trace, need_density in todo.get(iteration, []):
                images, labels = sources[src]
                m = measure(
                    model_cfg, state, images, labels, cfg, source=src, iteration=iteration,
                    seed=seed, trace=need_trace, density=need_density, device=device,
                )  # fmt: skip
                save_point(
                    db,
                    run_id,
                    src,
                    iteration,
                    trace=m.trace.trace if m.trace else None,
                    trace_stderr=m.trace.stderr if m.trace else None,
                    probes=m.trace.probes if m.trace else None,
                    top_eigenvalue=m.spectrum.top if m.spectrum else None,
                    spectrum=m.spectrum.as_array() if m.spectrum else None,
                )
                advance(1)

        train_with_checkpoints(
            model_cfg, pool_x, pool_y, cfg, sorted(todo), on_checkpoint,
            seed=seed, device=device, progress=advance,
        )  # fmt: skip
    return units


def _print_points(points, sources: list[str], checkpoints: list[int]) -> None:
    from ddsem.curvature import LanczosResult

    by_key = {(p.source, p.iteration): p for p in points}
    rows = []
    for it in checkpoints:
        cells = []
        for src in sources:
            p = by_key.get((src, it))
            cells.append(
                f"{p.trace:.4g} ± {p.trace_stderr:.2g} ({p.probes})" if p is not None else "-"
            )
        rows.append([it, *cells])
    common.table("Hessian trace ± stderr (probes)", ["iteration", *sources], rows)
    for p in points:
        if p.spectrum is not None:
            spectrum = LanczosResult.from_array(p.spectrum)
            # the bulk of a network's spectrum sits at ~0 and its Ritz node may land just below
            # 0: count only eigenvalues clearly negative, below -1% of the spectral radius
            threshold = -0.01 * max(abs(spectrum.top), abs(spectrum.bottom))
            common.echo(
                f"{p.source} at iteration {p.iteration}: top eigenvalue {spectrum.top:.5g} "
                f"(within {spectrum.top_residual:.2g}), lowest {spectrum.bottom:.5g}, "
                f"{100 * spectrum.mass_below(threshold):.1f}% of the spectrum below "
                f"{threshold:.2g} (-1% of the spectral radius)"
            )


def _curvature_figures(out_dir: Path, run_id: int, points, sources: list[str]) -> list[Path]:
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


# -- ddsem landscape -----------------------------------------------------------------------------


def landscape(
    method: str = typer.Option(None, "--method", help="The method's newest distilled set."),
    set_name: str = typer.Option(None, "--set", help="A distilled set by name."),
    grid: int = typer.Option(LANDSCAPE.grid, "--grid", help="Grid points per axis."),
    margin: float = typer.Option(
        LANDSCAPE.margin, "--margin", help="Room around the three points (fraction of a span)."
    ),
    distilled_steps: int = typer.Option(
        LANDSCAPE.distilled_steps, "--distilled-steps", help="Full-batch steps on the set."
    ),
    test_samples: int = typer.Option(
        None, "--test-samples", help="Class-stratified test images [default: all]."
    ),
    train_samples: int = typer.Option(
        None, "--train-samples", help="Real training images (stratified) [default: all]."
    ),
    width: int = typer.Option(MODEL.width, "--width", help="ConvNet width."),
    depth: int = typer.Option(MODEL.depth, "--depth", help="ConvNet depth."),
    data: str = typer.Option(None, "--data", help=DATA_HELP),
    out: str = typer.Option("figures", "--out", help="Folder for the PNG figure."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Loss plane through the initial weights, one epoch on real data and training on the
    distilled set (appendix A, Fig. 11): test and distilled loss on a grid, stored and drawn."""
    from dataclasses import replace

    if grid < 2:
        raise UserError(f"--grid must be at least 2, got {grid}")
    if margin < 0:
        raise UserError(f"--margin must be at least 0, got {margin:g}")
    if distilled_steps < 1:
        raise UserError(f"--distilled-steps must be at least 1, got {distilled_steps}")
    if test_samples is not None and test_samples < 1:
        raise UserError(f"--test-samples must be at least 1, got {test_samples}")
    if not (method or set_name):
        raise UserError("name the distilled set: --method METHOD or --set NAME")
    model_cfg = _model_config(width, depth)
    cfg = replace(
        LANDSCAPE,
        grid=grid,
        margin=margin,
        distilled_steps=distilled_steps,
        test_samples=test_samples,
    )
    out_dir = _out_dir(out)
    device = common.device()
    seed = common.OPTIONS.seed

    from ddsem.db.sets import find_set

    db = common.open_database()
    summary = find_set(db, set_name, None if set_name else method)
    distilled = _set_tensors(db, summary, model_cfg)
    dataset, real_x, real_y = _real_pool(data, train_samples, seed)

    from ddsem.config import to_dict
    from ddsem.db.curvature import find_landscape, save_landscape, set_landscape_figure

    params = {
        "model": to_dict(model_cfg),
        "landscape": to_dict(cfg),
        "set_id": summary.id,
        "set": summary.name,
        "dataset": dataset.name,
        "train_images": len(real_y),
        "train_samples": train_samples,
        "seed": seed,
    }
    stored = find_landscape(db, params)
    if stored is None:
        import numpy as np
        import torch

        from ddsem.curvature import compute_landscape
        from ddsem.curvature.landscape import landscape_steps
        from ddsem.data import normalize, stratified_indices

        pick = stratified_indices(dataset.test_y, test_samples, seed)
        test = (
            normalize(dataset.test_x[pick]),
            torch.from_numpy(dataset.test_y[pick].astype("int64")),
        )
        total = landscape_steps(len(real_y), cfg) + cfg.distilled_steps + cfg.grid
        with common.progress(total, "landscape") as advance:
            result = compute_landscape(
                model_cfg, (real_x, real_y), distilled, test, cfg,
                seed=seed, device=device, progress=advance,
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
        grid_losses = np.stack([result.losses[k] for k in record["sources"]])
        analysis_id = save_landscape(db, params, record, grid_losses, None)
        reused = False
    else:
        record, grid_losses, analysis_id, reused = (
            stored.result,
            stored.losses,
            stored.id,
            True,
        )
    figure = _landscape_figure(out_dir, analysis_id, summary.name, record, grid_losses)
    set_landscape_figure(db, analysis_id, str(figure))
    if as_json:
        common.print_json(
            {"analysis_id": analysis_id, "reused": reused, "params": params, **record,
             "figure": str(figure)}
        )  # fmt: skip
        return
    what = "stored before" if reused else "computed"
    common.echo(
        f"landscape {analysis_id} ({what}): set {summary.name!r}, {grid}x{grid} grid, "
        f"{record['test_images']} test images; real model after {record['real_steps']} steps "
        f"(1 epoch of {len(real_y)} images), distilled model after {distilled_steps} steps"
    )
    rows = []
    for point, (x, y) in record["points"].items():
        losses = [record["point_losses"][src][point] for src in record["sources"]]
        rows.append(
            [
                point,
                f"({round(x, 3) + 0.0:.3f}, {round(y, 3) + 0.0:.3f})",
                *[f"{v:.4f}" for v in losses],
            ]
        )
    common.table(
        "loss at the three weight vectors",
        ["weights", "plane (x, y)", *[f"{s} loss" for s in record["sources"]]],
        rows,
    )
    common.echo(f"wrote {figure}")


def _landscape_figure(out_dir: Path, analysis_id: int, set_name: str, record, grid_losses):
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
