"""``ddsem curvature``: paper section 4.3, a face over ``ddsem.jobs.curvature``.

Train a ConvNet on real data (batch 256, SGD lr 0.01, momentum 0.9) and measure the Hessian
trace of the loss on every source at every ``--every``-th iteration (and, at chosen iterations,
the eigenvalue density and top eigenvalue). Resumable per (source, iteration).
``ddsem landscape`` (appendix A) lives in ``ddsem.cli.landscape`` and is re-exported here.
"""

from __future__ import annotations

import typer

from ddsem.cli import common
from ddsem.cli.landscape import landscape
from ddsem.config import CurvatureConfig, ModelConfig
from ddsem.jobs.curvature import EVERY, ITERATIONS, OUT

CURVATURE = CurvatureConfig()
MODEL = ModelConfig()

__all__ = ["curvature", "landscape"]


def curvature(
    method: str = common.method_option(
        "Comma-separated methods (bptt,dm,gm,tm): each one's newest set."
    ),
    set_names: str = common.set_option("Comma-separated distilled set names."),
    real: bool = typer.Option(
        False, "--real", help="Also measure on the real training set (--real-samples of it)."
    ),
    iterations: int = typer.Option(
        ITERATIONS, "--iterations", help="Training iterations on real data."
    ),
    every: int = typer.Option(EVERY, "--every", help="Measure at every N-th iteration (and 0)."),
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
    data: str = common.data_option(),
    out: str = typer.Option(OUT, "--out", help="Folder for the PNG figures."),
    as_json: bool = common.json_option(),
    processes: int = common.processes_option(),
) -> None:
    """Hessian trace (Hutchinson) per source along the training of a model on real data;
    eigenvalue density (stochastic Lanczos quadrature) at --density-at. Resumable.
    --processes N (or `accelerate launch -m ddsem curvature ...`) splits the (source,
    checkpoint) points in checkpoint order; each process replays the training up to its last
    point (the training is one trajectory), so the last share replays all of it."""
    from dataclasses import replace

    from ddsem.jobs import curvature as job

    density_its = common.parse_int_list(density_at, "--density-at") if density_at else ()
    request = job.CurvatureRequest(
        methods=common.split_names(method, "--method"),
        set_names=common.split_names(set_names, "--set"),
        real=real,
        iterations=iterations,
        every=every,
        probes=probes,
        rel_err=rel_err,
        real_samples=real_samples,
        density_at=density_its,
        lanczos_steps=lanczos_steps,
        lanczos_runs=lanczos_runs,
        probe_block=probe_block,
        chunk_size=chunk_size,
        train_samples=train_samples,
        width=width,
        depth=depth,
        seed=common.seed(),
        out=out,
    )
    ws = common.workspace(quiet=as_json)
    job.preflight(ws, request)  # refused before the data is looked for (or offered for download)
    source = common.data_source(data)
    common.launch(processes, "curvature")
    result = job.run(ws, replace(request, data=source))
    if as_json:
        common.print_json(result.as_json())
        return
    cfg = result.config
    common.echo(
        f"curvature run {result.run_id}: ConvNet width {width}, depth {depth} trained on "
        f"{cfg['train_images']} real {cfg['dataset']} training images (batch "
        f"{cfg['batch_size']}, SGD lr {cfg['lr']:g}, momentum {cfg['momentum']:g}); "
        f"checkpoints 0..{iterations} every {every}"
    )
    if result.real_note:
        common.echo(result.real_note)
    common.echo(
        f"computed {result.computed} of {result.wanted} points now; the others were stored before"
    )
    rows = [
        [it, *[f"{p.trace:.4g} ± {p.trace_stderr:.2g} ({p.probes})" if p else "-" for p in cells]]
        for it, cells in result.trace_rows()
    ]
    common.table("Hessian trace ± stderr (probes)", ["iteration", *result.source_names], rows)
    for d in result.densities():
        common.echo(
            f"{d.source} at iteration {d.iteration}: top eigenvalue {d.top:.5g} "
            f"(within {d.top_residual:.2g}), lowest {d.bottom:.5g}, "
            f"{100 * d.negative_mass:.1f}% of the spectrum below "
            f"{d.threshold:.2g} (-1% of the spectral radius)"
        )
    common.echo("wrote " + ", ".join(str(f) for f in result.figures))
