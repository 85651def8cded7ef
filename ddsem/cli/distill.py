"""``ddsem distill --method dm|gm|tm|bptt`` and ``ddsem distill experts``: make distilled sets.

Everything is checked before the first write; a run checkpoints every ``--checkpoint-every``
iterations into its DistillRun row, and ``--resume`` continues it exactly (same images,
optimiser state and random stream as an uninterrupted run).
"""

from __future__ import annotations

from typing import Any

import typer

from ddsem.cli import common
from ddsem.errors import UserError

app = typer.Typer(
    help=(
        "Distil a data set with DM, GM (DC), TM (MTT) or BPTT; `ddsem distill experts` makes "
        "the expert trajectories TM needs."
    ),
)

DATA_HELP = (
    "CIFAR-10: cifar-10-batches-py folder, image folder or its .tar.gz [default: $DDSEM_DATA]."
)


def _positive(value: int | None, what: str) -> None:
    if value is not None and value < 1:
        raise UserError(f"{what} must be a positive number, got {value}")


def _parse_params(items: list[str] | None, fields: dict[str, Any], method: str) -> dict[str, Any]:
    """``["syn_steps=10", "lr_lr=1e-6"]`` -> typed values for the method's config fields."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--param takes KEY=VALUE, got {item!r}")
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise UserError(f"{method} has no parameter {key!r}; its parameters are: {known}")
        kind = str(fields[key].type)
        text = text.strip()
        try:
            if text.lower() == "none" and "None" in kind:
                value: Any = None
            elif kind.startswith("int"):
                value = int(text)
            elif kind.startswith("float"):
                value = float(text)
            else:
                value = text
        except ValueError:
            raise UserError(f"--param {key} needs a {kind.split()[0]}, got {text!r}") from None
        if isinstance(value, int | float) and value < 0:
            raise UserError(f"--param {key} must not be negative, got {text}")
        out[key] = value
    return out


def _method_config(
    method: str, ipc: int, overrides: dict[str, Any], params: list[str] | None = None
):
    """The method's published defaults with the user's overrides, fully resolved for ``ipc``."""
    from dataclasses import replace

    from ddsem.config import BPTTConfig, DMConfig, GMConfig, TMConfig
    from ddsem.distill import augment

    cls = {"dm": DMConfig, "gm": GMConfig, "tm": TMConfig, "bptt": BPTTConfig}[method]
    fields = cls.__dataclass_fields__
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = [k for k in given if k not in fields]
    if unknown:
        names = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise UserError(f"{names} does not apply to method {method}")
    given.update(_parse_params(params, fields, method))
    cfg = replace(cls(), **given)
    if hasattr(cfg, "dsa_strategy"):
        augment.parse_strategy(cfg.dsa_strategy)
    if method == "tm":
        from ddsem.distill.tm import resolve

        cfg = resolve(cfg, ipc)
    if method == "gm":
        from ddsem.distill.gm import loops_for

        outer, inner = loops_for(ipc, cfg)
        cfg = replace(cfg, outer_loop=outer, inner_loop=inner)
    return cfg


def _real_pool(data: str | None, dataset: str, real_limit: int | None, seed: int = 0):
    """(ImageData, train indices used as the real pool)."""
    from ddsem.data import load_dataset, stratified_indices

    images = load_dataset(data, dataset)
    indices = stratified_indices(images.train_y, real_limit, seed)
    return images, indices


def _config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} {a!r} -> {b!r}")
    return out


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
    seed: int = typer.Option(
        None, "--seed", help="Seed of every random choice [default: global --seed]."
    ),
    name: str = typer.Option(None, "--name", help="Name of the stored set [default: METHOD-ipcN]."),
    width: int = typer.Option(128, "--width", help="ConvNet width (the papers: 128)."),
    depth: int = typer.Option(3, "--depth", help="ConvNet depth (the papers: 3)."),
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
    as_json: bool = typer.Option(False, "--json", help="Print the stored set as JSON."),
) -> None:
    """Distil with one method; the result is stored as a distilled set with its provenance."""
    if ctx.invoked_subcommand is not None:
        return
    from ddsem.distill.common import INITS, check_method

    if method is None:
        raise UserError(
            "name a method: --method dm|gm|tm|bptt (TM needs `ddsem distill experts` first)"
        )
    method = check_method(method)
    if init not in INITS:
        raise UserError(f"unknown initialisation {init!r}: use one of {', '.join(INITS)}")
    for value, what in (
        (ipc, "--ipc"), (iterations, "--iterations"), (width, "--width"), (depth, "--depth"),
        (batch_real, "--batch-real"), (real_limit, "--real-limit"),
        (checkpoint_every, "--checkpoint-every"), (stop_after, "--stop-after"),
    ):  # fmt: skip
        _positive(value, what)
    if lr_img is not None and lr_img <= 0:
        raise UserError(f"--lr-img must be positive, got {lr_img}")
    seed = common.OPTIONS.seed if seed is None else seed
    name = name or f"{method}-ipc{ipc}"
    _distill(
        method=method, ipc=ipc, dataset=dataset, data=data, init=init, seed=seed, name=name,
        width=width, depth=depth, real_limit=real_limit, checkpoint_every=checkpoint_every,
        stop_after=stop_after, resume=resume, overwrite=overwrite, as_json=as_json,
        overrides={"iterations": iterations, "lr_img": lr_img, "batch_real": batch_real},
        params=param,
    )  # fmt: skip


def _distill(
    *,
    method: str,
    ipc: int,
    dataset: str,
    data: str | None,
    init: str,
    seed: int,
    name: str,
    width: int,
    depth: int,
    real_limit: int | None,
    checkpoint_every: int,
    stop_after: int | None,
    resume: bool,
    overwrite: bool,
    as_json: bool,
    overrides: dict[str, Any],
    params: list[str] | None,
) -> None:
    import torch

    from ddsem.config import ModelConfig, to_dict
    from ddsem.db import distill as store
    from ddsem.distill.common import Checkpoint, RealData, check_model, initial_set, restore, run

    # -- everything is checked before anything is written -----------------------------------------
    cfg = _method_config(method, ipc, overrides, params)
    if cfg.iterations < 1:
        raise UserError(f"iterations must be positive, got {cfg.iterations}")
    images_data, pool = _real_pool(data, dataset, real_limit)
    model_cfg = ModelConfig(width=width, depth=depth, num_classes=images_data.num_classes)
    check_model(model_cfg)
    pool_y = images_data.train_y[pool]
    counts = [int((pool_y == c).sum()) for c in range(images_data.num_classes)]
    smallest = min(range(len(counts)), key=lambda c: counts[c])
    if ipc > counts[smallest]:
        raise UserError(
            f"--ipc {ipc} is more than class {images_data.classes[smallest]!r} has "
            f"({counts[smallest]} real training images{' in --real-limit' if real_limit else ''})"
        )
    run_config = {
        "method": method, "ipc": ipc, "init": init, "seed": seed, "dataset": dataset,
        "real_limit": real_limit, "model": to_dict(model_cfg), "params": to_dict(cfg),
    }  # fmt: skip

    db = common.open_database()
    experts = None
    expert_pool = None
    if method == "tm":
        from ddsem.distill.tm import epochs_needed

        pools = store.expert_pools(
            db, {"dataset": dataset, "real_limit": real_limit, "model": to_dict(model_cfg)}
        )
        limit_flag = f" --real-limit {real_limit}" if real_limit else ""
        make = (
            f"ddsem distill experts --width {width} --depth {depth} --dataset {dataset}{limit_flag}"
        )
        if not pools:
            raise UserError(
                f"trajectory matching needs expert trajectories for a width-{width} depth-{depth} "
                f"ConvNet on {dataset}; make them first with `{make}`"
            )
        expert_pool = pools[0]
        need = epochs_needed(cfg)
        if expert_pool.epochs < need:
            raise UserError(
                f"the experts were trained for {expert_pool.epochs} epochs; this run needs {need} "
                f"(max start epoch {cfg.max_start_epoch} + expert epochs {cfg.expert_epochs} - 1): "
                f"make longer ones with `{make} --epochs {max(need, 50)}`"
            )
        experts = [torch.from_numpy(t) for t in store.load_experts(db, expert_pool.key, need)]
        # a resumed run must draw from the same experts
        run_config["experts"] = {"pool": expert_pool.key, "count": expert_pool.count}

    previous = store.unfinished_run(db, name)
    if resume:
        if previous is None:
            done = " (that set is complete)" if store.set_exists(db, name) else ""
            raise UserError(
                f"nothing to resume: no unfinished distillation run for set {name!r}{done}"
            )
        if previous.config != run_config:
            diff = "; ".join(_config_differences(previous.config, run_config))
            raise UserError(
                f"--resume with a different configuration than the unfinished run of {name!r}: "
                f"{diff}. Repeat its options, or start over with --overwrite"
            )
    elif previous is not None and not overwrite:
        raise UserError(
            f"an unfinished {previous.method} run for set {name!r} stopped at iteration "
            f"{previous.iteration}: pass --resume to continue it or --overwrite to start over"
        )
    if store.set_exists(db, name) and not overwrite:
        raise UserError(f"a distilled set named {name!r} exists; pass --overwrite or --name")

    device = common.device()
    real = RealData(images_data.train_x[pool], pool_y, images_data.num_classes, device)
    generator = torch.Generator().manual_seed(seed)
    start = initial_set(real, ipc, init, generator)
    distiller = _make(method, cfg, model_cfg, start, real, experts, ipc, device)
    first, wall = 0, 0.0
    if resume:
        arrays = store.load_checkpoint(db, previous.id)
        if arrays is not None:
            checkpoint = Checkpoint.from_arrays(arrays)
            restore(distiller, generator, checkpoint)
            first, wall = checkpoint.iteration, checkpoint.wall_seconds
        run_info = previous
        common.echo(f"resuming {method} run for {name!r} at iteration {first} of {cfg.iterations}")
    else:
        run_info = store.start_distill_run(
            db, name, method, run_config, replace=previous.id if previous is not None else None
        )

    # -- work --------------------------------------------------------------------------------------
    def save(checkpoint: Checkpoint) -> None:
        store.save_checkpoint(
            db, run_info.id, checkpoint.iteration, checkpoint.wall_seconds, checkpoint.to_arrays()
        )

    todo = cfg.iterations - first if stop_after is None else min(stop_after, cfg.iterations - first)
    with common.progress(todo, f"distill {method} ipc {ipc}") as advance:
        outcome = run(
            distiller, generator, start=first, total=cfg.iterations, wall_offset=wall,
            checkpoint_every=checkpoint_every, on_checkpoint=save, stop_after=stop_after,
            progress=advance,
        )  # fmt: skip
    if not outcome.finished:
        common.echo(
            f"stopped at iteration {outcome.iteration} of {cfg.iterations} (checkpoint saved); "
            f"continue with the same options and --resume"
        )
        return
    provenance = {
        "method": method,
        "config": run_config,
        "iterations": outcome.iteration,
        "wall_seconds": round(outcome.wall_seconds, 3),
        "seed": seed,
        "init": init,
        "init_real_indices": [int(pool[i]) for i in start.real_indices]
        if start.real_indices
        else None,
        "data_source": images_data.source,
        "device": str(device),
        "final_loss": outcome.losses[-1] if outcome.losses else distiller.last_loss,
    }
    if expert_pool is not None:
        provenance["experts"] = run_config["experts"]
    summary = store.finish_distill_run(
        db, run_info.id, name=name, method=method,
        images=distiller.images.detach().cpu().numpy(), labels=distiller.labels.cpu().numpy(),
        dataset=dataset, synthetic_lr=distiller.synthetic_lr, provenance=provenance,
        iteration=outcome.iteration, wall_seconds=outcome.wall_seconds, overwrite=overwrite,
    )  # fmt: skip
    if as_json:
        common.print_json(summary.as_json())
        return
    lr_note = (
        f", learned lr {distiller.synthetic_lr:.4g}" if distiller.synthetic_lr is not None else ""
    )
    common.echo(
        f"distilled {summary.num_images} images ({ipc} per class) with {method} in "
        f"{outcome.iteration} iterations, {outcome.wall_seconds:.1f} s{lr_note}; stored as set "
        f"{summary.name!r}"
    )


def _make(method, cfg, model_cfg, start, real, experts, ipc, device):
    if method == "dm":
        from ddsem.distill.dm import DM

        return DM(start.images, start.labels, real, model_cfg, cfg, device)
    if method == "gm":
        from ddsem.distill.gm import GM

        return GM(start.images, start.labels, real, model_cfg, cfg, device, ipc)
    if method == "tm":
        from ddsem.distill.tm import TM

        return TM(start.images, start.labels, experts, model_cfg, cfg, device)
    from ddsem.distill.bptt import BPTT

    return BPTT(start.images, start.labels, real, model_cfg, cfg, device)


@app.command("experts")
def experts(
    num_experts: int = typer.Option(
        None, "--num-experts", help="How many experts [default: MTT's 100]."
    ),
    epochs: int = typer.Option(None, "--epochs", help="Epochs per expert [default: MTT's 50]."),
    width: int = typer.Option(128, "--width", help="ConvNet width (the papers: 128)."),
    depth: int = typer.Option(3, "--depth", help="ConvNet depth (the papers: 3)."),
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
) -> None:
    """Train expert trajectories for TM (parameters after every epoch); re-runs add missing ones."""
    from dataclasses import replace

    import torch

    from ddsem.config import ExpertConfig, ModelConfig, to_dict
    from ddsem.data import normalize, stratified_indices
    from ddsem.db import distill as store
    from ddsem.db.codec import config_hash
    from ddsem.distill.common import check_model
    from ddsem.distill.experts import train_expert

    for value, what in (
        (num_experts, "--num-experts"), (epochs, "--epochs"), (width, "--width"), (depth, "--depth"),
        (real_limit, "--real-limit"), (batch_size, "--batch-size"), (test_limit, "--test-limit"),
    ):  # fmt: skip
        _positive(value, what)
    if lr is not None and lr <= 0:
        raise UserError(f"--lr must be positive, got {lr}")
    given = {"num_experts": num_experts, "epochs": epochs, "lr": lr, "batch_size": batch_size}
    cfg = replace(ExpertConfig(), **{k: v for k, v in given.items() if v is not None})
    images_data, pool = _real_pool(data, dataset, real_limit)
    model_cfg = ModelConfig(width=width, depth=depth, num_classes=images_data.num_classes)
    check_model(model_cfg)
    training = {k: v for k, v in to_dict(cfg).items() if k != "num_experts"}
    pool_params = {
        "dataset": dataset, "real_limit": real_limit, "model": to_dict(model_cfg), "training": training,
    }  # fmt: skip
    key = config_hash(pool_params)
    db = common.open_database()
    have = store.expert_indices(db, key)
    todo = [i for i in range(cfg.num_experts) if i not in have]
    if not todo:
        common.echo(f"all {cfg.num_experts} experts exist (pool {key}); nothing to do")
        return
    device = common.device()
    x = normalize(images_data.train_x[pool])
    y = torch.from_numpy(images_data.train_y[pool])
    test_idx = stratified_indices(images_data.test_y, test_limit, 0)
    test = (normalize(images_data.test_x[test_idx]), torch.from_numpy(images_data.test_y[test_idx]))
    base_seed = common.OPTIONS.seed
    accuracies = []
    with common.progress(
        len(todo) * cfg.epochs, f"experts ({len(todo)} x {cfg.epochs} epochs)"
    ) as advance:
        for i in todo:
            seed = base_seed * 100_003 + i
            trajectory, accuracy = train_expert(
                model_cfg, cfg, x, y, seed, device=device, test=test, progress=advance
            )
            store.add_expert(db, key, pool_params, i, seed, trajectory, accuracy)
            accuracies.append(accuracy)
    mean = sum(accuracies) / len(accuracies)
    common.echo(
        f"trained {len(todo)} experts ({len(have) + len(todo)} in pool {key}), {cfg.epochs} epochs "
        f"each; mean final test accuracy {mean:.4f}"
    )
