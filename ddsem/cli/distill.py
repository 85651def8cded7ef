"""``ddsem distill --method dm|gm|tm|bptt`` and ``ddsem distill experts``: make distilled sets.

A face over ``ddsem.jobs.distill`` and ``ddsem.jobs.experts``: everything is checked before the
first write; a run checkpoints every ``--checkpoint-every`` iterations, and ``--resume``
continues it exactly (same images, optimiser state and random stream as an uninterrupted run).
The seed is the global ``--seed``.
"""

from __future__ import annotations

from dataclasses import replace

import typer

from ddsem.cli import common
from ddsem.config import ModelConfig
from ddsem.jobs import distill as distill_job
from ddsem.jobs import experts as experts_job

app = typer.Typer(
    help=(
        "Distil a data set with DM, GM (DC), TM (MTT) or BPTT; `ddsem distill experts` makes "
        "the expert trajectories TM needs."
    ),
)

DATA_HELP = (
    "CIFAR-10: cifar-10-batches-py folder, image folder or its .tar.gz [default: $DDSEM_DATA]."
)


@app.callback(invoke_without_command=True)
def distill(
    ctx: typer.Context,
    method: str = typer.Option(None, "--method", help="dm, gm, tm or bptt."),
    ipc: int = typer.Option(10, "--ipc", help="Images per class (the papers use 1, 10, 50)."),
    dataset: str = typer.Option("cifar10", "--dataset", help="cifar10 or cifar100."),
    data: str = typer.Option(None, "--data", help=DATA_HELP),
    iterations: int = typer.Option(
        None, "--iterations", help="Distillation iterations [default: the method's published]."
    ),
    init: str = typer.Option("real", "--init", help="real (default, appendix F), noise or xavier."),
    name: str = typer.Option(None, "--name", help="Name of the stored set [default: METHOD-ipcN]."),
    width: int = typer.Option(
        ModelConfig.width, "--width", help="ConvNet width (the papers: 128)."
    ),
    depth: int = typer.Option(ModelConfig.depth, "--depth", help="ConvNet depth (the papers: 3)."),
    lr_img: float = typer.Option(
        None, "--lr-img", help="Image learning rate [default: the method's]."
    ),
    batch_real: int = typer.Option(
        None, "--batch-real", help="DM/GM/BPTT: real images per class per iteration."
    ),
    real_limit: int = typer.Option(
        None,
        "--real-limit",
        help="Use a class-stratified subset of this many real training images.",
    ),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every", help="Checkpoint period."),
    stop_after: int = typer.Option(
        None,
        "--stop-after",
        help="Stop (with a checkpoint) after this many iterations; --resume later.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the unfinished run of --name."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a stored set of that name and any unfinished run."
    ),
    param: list[str] = typer.Option(
        None,
        "--param",
        help="Any other field of the method's config, KEY=VALUE (repeatable), "
        "e.g. --param syn_steps=10; see DMConfig/GMConfig/TMConfig/BPTTConfig in ddsem.config.",
    ),
    zca: bool = typer.Option(
        None,
        "--zca/--no-zca",
        help="TM: distil in ZCA space (MTT's --zca) [default: as MTT's published runs, "
        "CIFAR-10 at ipc 1 and 10].",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the stored set as JSON."),
) -> None:
    """Distil with one method; the result is stored as a distilled set with its provenance.

    The same --name distilled by a second process at the same time is refused with one line
    (no unfinished run is left behind); a run that was killed is taken over with --resume."""
    if ctx.invoked_subcommand is not None:
        return
    request = distill_job.DistillRequest(
        method, ipc=ipc, dataset=dataset, iterations=iterations, init=init, seed=common.seed(),
        name=name, width=width, depth=depth, lr_img=lr_img, batch_real=batch_real,
        real_limit=real_limit, checkpoint_every=checkpoint_every, stop_after=stop_after,
        resume=resume, overwrite=overwrite, params=distill_job.parse_params(param), zca=zca,
    )  # fmt: skip
    request = replace(request, data=common.data_source(data, dataset))
    result = distill_job.run(common.workspace(quiet=as_json), request)
    if as_json and result.finished:
        common.print_json(result.as_json())
        return
    render(result)


def render(result: distill_job.DistillResult) -> None:
    """What `ddsem distill` prints after the work (the demo prints the same)."""
    if not result.finished:
        common.echo(
            f"stopped at iteration {result.iteration} of {result.iterations} (checkpoint saved); "
            f"continue with the same options and --resume"
        )
        return
    lr = result.synthetic_lr
    lr_note = f", learned lr {lr:.4g}" if lr is not None else ""
    common.echo(
        f"distilled {result.summary.num_images} images ({result.ipc} per class) with "
        f"{result.method} in {result.iteration} iterations, {result.wall_seconds:.1f} s{lr_note}; "
        f"stored as set {result.set_name!r}"
    )


@app.command("experts")
def experts(
    num_experts: int = typer.Option(
        None, "--num-experts", help="How many experts [default: MTT's 100]."
    ),
    epochs: int = typer.Option(None, "--epochs", help="Epochs per expert [default: MTT's 50]."),
    width: int = typer.Option(
        ModelConfig.width, "--width", help="ConvNet width (the papers: 128)."
    ),
    depth: int = typer.Option(ModelConfig.depth, "--depth", help="ConvNet depth (the papers: 3)."),
    dataset: str = typer.Option("cifar10", "--dataset", help="cifar10 or cifar100."),
    data: str = typer.Option(None, "--data", help=DATA_HELP),
    real_limit: int = typer.Option(
        None, "--real-limit", help="Train on a class-stratified subset of this many images."
    ),
    lr: float = typer.Option(None, "--lr", help="Expert learning rate [default: MTT's 0.01]."),
    batch_size: int = typer.Option(None, "--batch-size", help="Minibatch [default: MTT's 256]."),
    test_limit: int = typer.Option(
        None, "--test-limit", help="Test images for each expert's final accuracy [default: all]."
    ),
    zca: bool = typer.Option(
        None,
        "--zca/--no-zca",
        help="Train on ZCA-whitened images (MTT buffer.py --zca) [default: on for CIFAR-10, "
        "for TM's ZCA runs at ipc 1 and 10].",
    ),
) -> None:
    """Train expert trajectories for TM (parameters after every epoch); re-runs add missing ones."""
    given = {"num_experts": num_experts, "epochs": epochs, "lr": lr, "batch_size": batch_size}
    request = experts_job.ExpertsRequest(
        width=width, depth=depth, dataset=dataset, real_limit=real_limit, test_limit=test_limit,
        seed=common.seed(), zca=zca, **{k: v for k, v in given.items() if v is not None},
    )  # fmt: skip
    request = replace(request, data=common.data_source(data, dataset))
    result = experts_job.run(common.workspace(), request)
    if not result.trained:
        common.echo(f"all {result.num_experts} experts exist (pool {result.pool}); nothing to do")
        return
    common.echo(
        f"trained {len(result.trained)} experts ({result.stored} in pool {result.pool}), "
        f"{result.epochs} epochs each; mean final test accuracy {result.mean_accuracy:.4f}"
    )
