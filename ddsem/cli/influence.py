"""``ddsem influence``: exact leave-one-out influence of distilled images on real test images.

``ddsem influence --method bptt`` computes and stores it (paper section 5.1), resumably;
``ddsem influence show`` prints the most influenced test images or a summary of the runs;
``ddsem influence check`` validates the runs (seed consistency, context independence, pixel
similarity, numerical noise floor; paper Figures 7 and 8).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ddsem.cli import common
from ddsem.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from ddsem.data import ImageData
    from ddsem.db import Database
    from ddsem.db.influence import InfluenceRunInfo
    from ddsem.db.sets import SetSummary

app = typer.Typer(
    help=(
        "Exact leave-one-out influence: `ddsem influence --method bptt [--seeds 0,1,2]` computes "
        "it; `show` and `check` read it."
    ),
    invoke_without_command=True,
)

METHOD_HELP = "The newest distilled set of this method (bptt, dm, gm, tm, ...)."
SET_HELP = "The distilled set by name (instead of --method)."
DATA_HELP = "CIFAR data: torchvision folder, JPEG folder or .tar.gz [default: $DDSEM_DATA]."
DEVICE_HELP = "auto, cpu or cuda[:N] [default: the global --device]."
CPU_CHUNK = 4  # models trained and stored per transaction on the CPU (a few minutes of work)


@app.callback(invoke_without_command=True)
def influence(
    ctx: typer.Context,
    method: str = typer.Option(None, "--method", help=METHOD_HELP),
    set_name: str = typer.Option(None, "--set", help=SET_HELP),
    seeds: str = typer.Option("0", "--seeds", help="Initialisation seeds, e.g. 0,1,2."),
    context: str = typer.Option(
        "distilled",
        "--context",
        help="distilled: the set without image i; real: 100 real images with image i added.",
    ),
    test_limit: int = typer.Option(
        None,
        "--test-limit",
        help="Class-stratified subset of the test split, the same one `ddsem annotate --limit N` takes [default: all].",
    ),
    width: int = typer.Option(128, "--width", help="ConvNet width (paper: 128)."),
    depth: int = typer.Option(3, "--depth", help="ConvNet depth (paper: 3)."),
    steps: int = typer.Option(300, "--steps", help="Full-batch SGD steps (paper: 300)."),
    lr: float = typer.Option(0.01, "--lr", help="SGD learning rate (paper: 0.01)."),
    momentum: float = typer.Option(0.9, "--momentum", help="SGD momentum (paper: 0.9)."),
    real_images: int = typer.Option(
        100, "--real-images", help="Real context: real training images (paper: 100)."
    ),
    top_k: int = typer.Option(100, "--top-k", help="Top-k table size per distilled image."),
    chunk: int = typer.Option(
        0,
        "--chunk",
        help=f"Models trained and stored per transaction [default: all on CUDA, {CPU_CHUNK} on CPU].",
    ),
    data: str = typer.Option(None, "--data", help=DATA_HELP),
    device: str = typer.Option(None, "--device", help=DEVICE_HELP),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace runs of this set/seed/context with another config."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable summary."),
) -> None:
    """Train N+1 models per seed from one initialisation, store influence(i, j) =
    loss_j(without i) - loss_j(with all); a killed run resumes, a repeated one is a no-op."""
    if ctx.invoked_subcommand is not None:
        return
    if method is None and set_name is None:
        typer.echo(ctx.get_help())
        return
    if as_json:
        common.OPTIONS.quiet = True  # stdout carries the JSON only
    from ddsem.config import InfluenceConfig, ModelConfig, TrainConfig

    seed_list = common.parse_int_list(seeds, "--seeds")
    if any(s < 0 for s in seed_list):
        raise UserError("--seeds must be non-negative integers")
    _check_context(context)
    if test_limit is not None and test_limit <= 0:
        raise UserError(f"--test-limit must be a positive number of test images, got {test_limit}")
    for name, value in (
        ("--width", width),
        ("--depth", depth),
        ("--steps", steps),
        ("--real-images", real_images),
        ("--top-k", top_k),
    ):
        if value <= 0:
            raise UserError(f"{name} must be positive, got {value}")
    if lr <= 0 or momentum < 0:
        raise UserError("--lr must be positive and --momentum non-negative")
    if chunk < 0:
        raise UserError(f"--chunk must be 0 (automatic) or a positive number, got {chunk}")
    dev = _device(device)

    db = common.open_database()
    job = _prepare(db, method, set_name, data)
    model_cfg = ModelConfig(
        width=width,
        depth=depth,
        channels=job.shape[0],
        image_size=job.shape[1],
        num_classes=len(job.data.classes),
    )
    train_cfg = TrainConfig(steps=steps, lr=lr, momentum=momentum)
    infl_cfg = InfluenceConfig(
        context=context,
        # only the real context uses it: keep it out of the distilled context's config key
        real_images=real_images if context == "real" else InfluenceConfig.real_images,
        test_limit=test_limit,
        selection_seed=common.OPTIONS.seed,
        top_k=top_k,
    )
    plan = _plan(job, model_cfg, train_cfg, infl_cfg)

    # Refuse before writing anything: a different config under the same (set, seed, context).
    from ddsem.db.influence import find_run

    for seed in seed_list:
        old = find_run(db, job.set.id, seed, context)
        if old is not None and old.config_hash != plan.config_hash and not overwrite:
            raise UserError(
                f"set {job.set.name!r} already has a {old.status} {context}-context run for seed "
                f"{seed} with another configuration ({_config_diff(old.config, plan.config)}); "
                "pass --overwrite to replace it"
            )

    _register_images(db, job, plan)
    summaries = [_run_seed(db, job, plan, seed, dev, chunk, overwrite) for seed in seed_list]
    if as_json:
        common.print_json(summaries)


# -- preparation ---------------------------------------------------------------------------------


@dataclass
class Job:
    """The set and the real data of a command, validated."""

    set: SetSummary
    images: np.ndarray  # (N, C, H, W) float32, normalised
    labels: np.ndarray  # (N,) int64
    data: ImageData
    shape: tuple[int, int, int]


@dataclass
class Plan:
    """What one `ddsem influence` call computes for every seed."""

    model_cfg: Any
    train_cfg: Any
    infl_cfg: Any
    config: dict[str, Any]
    config_hash: str
    test_indices: np.ndarray
    real_indices: np.ndarray | None


def _check_context(context: str) -> None:
    from ddsem.influence.loo import CONTEXTS

    if context not in CONTEXTS:
        raise UserError(f"unknown --context {context!r}: use {' or '.join(CONTEXTS)}")


def _device(name: str | None):
    from ddsem.runtime import resolve_device

    return resolve_device(name or common.OPTIONS.device)


def _prepare(db: Database, method: str | None, set_name: str | None, data_path: str | None) -> Job:
    """Find the set and the real data; refuse sets leave-one-out cannot use."""
    from ddsem.data import load_dataset
    from ddsem.db.sets import find_set, set_tensors

    summary = find_set(db, common.default_set_name(db, set_name, method), method)
    images, labels = set_tensors(db, summary.id)
    if len(labels) < 2:
        raise UserError(
            f"set {summary.name!r} has {len(labels)} image: leave-one-out needs at least 2 "
            "(without its only image nothing is left to train on)"
        )
    data = load_dataset(data_path, summary.dataset)
    classes = len(data.classes)
    if labels.min() < 0 or labels.max() >= classes:
        bad = sorted({int(v) for v in labels if v < 0 or v >= classes})
        raise UserError(
            f"set {summary.name!r} has labels {bad} outside {summary.dataset}'s {classes} classes "
            f"(0..{classes - 1})"
        )
    shape = tuple(int(v) for v in images.shape[1:])
    real_shape = (data.test_x.shape[3], data.test_x.shape[1], data.test_x.shape[2])
    if shape != real_shape:
        raise UserError(
            f"set {summary.name!r} has images of shape {list(shape)} but {summary.dataset}'s are "
            f"{list(real_shape)}"
        )
    return Job(summary, images.astype("float32"), labels.astype("int64"), data, shape)  # type: ignore[arg-type]


def _plan(job: Job, model_cfg, train_cfg, infl_cfg) -> Plan:
    from ddsem.config import to_dict
    from ddsem.data import stratified_indices
    from ddsem.db.codec import config_hash

    # Seed 0, always: the same test subset as `ddsem annotate --limit N`, so they join.
    test_indices = stratified_indices(job.data.test_y, infl_cfg.test_limit, 0)
    real_indices = None
    config: dict[str, Any] = {
        "model": to_dict(model_cfg),
        "train": to_dict(train_cfg),
        "influence": to_dict(infl_cfg),
        "dataset": job.set.dataset,
        "test_split": "test",
        "num_distilled": len(job.labels),
    }
    if infl_cfg.context == "real":
        real_indices = stratified_indices(
            job.data.train_y, infl_cfg.real_images, infl_cfg.selection_seed
        )
        config["real_indices"] = [int(v) for v in real_indices]
    return Plan(
        model_cfg,
        train_cfg,
        infl_cfg,
        config,
        config_hash(config),
        test_indices.astype("int64"),
        real_indices,
    )


def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """ "train.steps 300 -> 20, ..." for the keys that differ (nested dicts flattened)."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            elif k == "real_indices":
                out[prefix + k] = "(list)" if v == new.get("real_indices") else "(other list)"
            else:
                out[prefix + k] = v
        return out

    a, b = flat(old), flat(new)
    diffs = [
        f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]
    return ", ".join(diffs[:4]) + (", ..." if len(diffs) > 4 else "") if diffs else "same values"


def _register_images(db: Database, job: Job, plan: Plan) -> None:
    """Register the test images (and the real context's training images) as Image rows."""
    from ddsem.db.sets import ensure_dataset, ensure_images

    d = job.data
    row = ensure_dataset(db, job.set.dataset, d.source, d.classes, len(d.train_y), len(d.test_y))
    ensure_images(db, row.id or 0, "test", plan.test_indices, d.test_x, d.test_y)
    if plan.real_indices is not None:
        ensure_images(db, row.id or 0, "train", plan.real_indices, d.train_x, d.train_y)


# -- the computation -----------------------------------------------------------------------------


def _population(job: Job, plan: Plan):
    import torch

    from ddsem.data import normalize
    from ddsem.influence.loo import build_population

    real_x = real_y = None
    if plan.real_indices is not None:
        real_x = normalize(job.data.train_x[plan.real_indices])
        real_y = torch.from_numpy(job.data.train_y[plan.real_indices].astype("int64"))
    return build_population(
        torch.from_numpy(job.images),
        torch.from_numpy(job.labels),
        plan.infl_cfg.context,
        real_x,
        real_y,
    )


def _test_tensors(job: Job, test_indices: np.ndarray):
    import torch

    from ddsem.data import normalize

    return (
        normalize(job.data.test_x[test_indices]),
        torch.from_numpy(job.data.test_y[test_indices].astype("int64")),
    )


def _run_seed(
    db: Database, job: Job, plan: Plan, seed: int, dev, chunk: int, overwrite: bool
) -> dict[str, Any]:
    """Train what is missing of one seed's run, chunk by chunk, then finish it."""
    import torch

    from ddsem.db.codec import state_to_blob
    from ddsem.db.influence import (
        add_models,
        done_models,
        find_run,
        run_init_state,
        start_influence_run,
    )
    from ddsem.influence.loo import train_and_evaluate
    from ddsem.models import init_state

    context = plan.infl_cfg.context
    old = find_run(db, job.set.id, seed, context)
    if old is not None and old.config_hash == plan.config_hash and old.status == "complete":
        common.echo(
            f"seed {seed}: already complete ({old.num_models} models, "
            f"{_accuracy_text(old.full_accuracy, context)}); nothing to do"
        )
        return _summary(job, old, skipped=True)
    n = len(job.labels)
    run_id = start_influence_run(
        db,
        set_id=job.set.id,
        seed=seed,
        context=context,
        config=plan.config,
        config_hash=plan.config_hash,
        test_indices=plan.test_indices,
        num_models=n + 1,
        init_state=state_to_blob(init_state(plan.model_cfg, seed)),
        device=str(dev),
        replace=overwrite and old is not None and old.config_hash != plan.config_hash,
    )
    init = {k: torch.from_numpy(v) for k, v in run_init_state(db, run_id).items()}
    population = _population(job, plan)
    test_x, test_y = _test_tensors(job, plan.test_indices)
    done = done_models(db, run_id)
    missing = [m for m in population.model_indices if m not in done]
    size = chunk or (len(missing) if dev.type == "cuda" else CPU_CHUNK)
    if missing:
        with common.progress(
            len(missing) * plan.train_cfg.steps, f"seed {seed}: model-steps"
        ) as advance:
            for start in range(0, len(missing), max(1, size)):
                part = missing[start : start + size]
                t0 = time.perf_counter()
                result = train_and_evaluate(
                    plan.model_cfg,
                    plan.train_cfg,
                    population,
                    part,
                    init,
                    test_x,
                    test_y,
                    device=dev,
                    progress=advance,
                )
                add_models(
                    db,
                    run_id,
                    part,
                    result.losses.numpy(),
                    result.accuracy.numpy(),
                    seconds=time.perf_counter() - t0,
                    device=str(dev),
                )
    info = _finish(db, job, plan, run_id)
    common.echo(
        f"seed {seed}: {info.num_models} models on {info.num_test} test images, "
        f"{_accuracy_text(info.full_accuracy, context)}, {info.wall_seconds or 0:.1f} s training"
    )
    return _summary(job, info, skipped=False)


def _finish(db: Database, job: Job, plan: Plan, run_id: int) -> InfluenceRunInfo:
    """Influence matrix, top-k table and status "complete", in one transaction."""
    from ddsem.db.influence import finish_influence_run, model_results
    from ddsem.db.influence import list_runs as _list
    from ddsem.influence.loo import REFERENCE, influence_from_losses, top_k

    indices, losses, accuracy = model_results(db, run_id)
    n = len(job.labels)
    if indices != [REFERENCE, *range(n)]:
        raise UserError(f"run {run_id} is missing models; re-run the command to finish it")
    influence = influence_from_losses(losses[0], losses[1:], plan.infl_cfg.context)
    positions, values = top_k(influence, plan.infl_cfg.top_k)
    finish_influence_run(
        db,
        run_id,
        influence,
        plan.test_indices,
        job.data.test_y[plan.test_indices],
        positions,
        values,
        float(accuracy[0]),
    )
    return next(r for r in _list(db, job.set.id, complete_only=True) if r.id == run_id)


def _accuracy_text(accuracy: float | None, context: str) -> str:
    what = "full-set" if context == "distilled" else "real-sample"
    value = "n/a" if accuracy is None else f"{100 * accuracy:.2f}%"
    return f"{what} model test accuracy {value}"


def _summary(job: Job, info: InfluenceRunInfo, *, skipped: bool) -> dict[str, Any]:
    return {
        "set": job.set.name,
        "run_id": info.id,
        "seed": info.seed,
        "context": info.context,
        "status": info.status,
        "skipped": skipped,
        "num_models": info.num_models,
        "num_test": info.num_test,
        "full_accuracy": info.full_accuracy,
        "device": info.device,
        "wall_seconds": info.wall_seconds,
    }


# -- show ----------------------------------------------------------------------------------------


@app.command("show")
def show(
    method: str = typer.Option(None, "--method", help=METHOD_HELP),
    set_name: str = typer.Option(None, "--set", help=SET_HELP),
    image: int = typer.Option(
        None, "--image", help="A distilled image: its most influenced test images."
    ),
    seed: int = typer.Option(
        None, "--seed", help="With --image: this seed's run [default: mean over seeds]."
    ),
    context: str = typer.Option("distilled", "--context", help="distilled or real."),
    top: int = typer.Option(10, "--top", help="With --image: how many test images."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The runs of a set, or (--image K) the test images distilled image K influences most."""
    from ddsem.db.influence import list_runs
    from ddsem.db.sets import find_set

    _check_context(context)
    if top <= 0:
        raise UserError(f"--top must be positive, got {top}")
    db = common.open_database(create=False)
    summary = find_set(db, common.default_set_name(db, set_name, method), method)
    if image is None:
        runs = list_runs(db, summary.id, complete_only=False)
        rows = [_run_json(r) for r in runs]
        if as_json:
            common.print_json({"set": summary.name, "runs": rows})
            return
        if not runs:
            common.echo(
                f"no influence runs for set {summary.name!r}: "
                f"`ddsem influence --method {summary.method}`"
            )
            return
        common.table(
            f"influence runs of set {summary.name!r} ({summary.num_images} images)",
            ["seed", "context", "status", "models", "tests", "ref. accuracy", "device", "train s"],
            [
                [
                    r["seed"],
                    r["context"],
                    r["status"],
                    f"{r['models_done']}/{r['num_models']}",
                    r["num_test"],
                    "-" if r["full_accuracy"] is None else f"{100 * r['full_accuracy']:.2f}%",
                    r["device"],
                    f"{r['wall_seconds'] or 0:.1f}",
                ]
                for r in rows
            ],
        )
        return
    _show_image(db, summary, image, seed, context, top, as_json)


def _run_json(r: InfluenceRunInfo) -> dict[str, Any]:
    return {
        "run_id": r.id,
        "seed": r.seed,
        "context": r.context,
        "status": r.status,
        "models_done": r.models_done,
        "num_models": r.num_models,
        "num_test": r.num_test,
        "full_accuracy": r.full_accuracy,
        "device": r.device,
        "wall_seconds": r.wall_seconds,
        "width": r.config.get("model", {}).get("width"),
        "steps": r.config.get("train", {}).get("steps"),
    }


def _complete_runs(db: Database, summary: SetSummary, context: str) -> list[InfluenceRunInfo]:
    from ddsem.db.influence import list_runs

    runs = list_runs(db, summary.id, context=context)
    if not runs:
        flag = " --context real" if context == "real" else ""
        raise UserError(
            f"no complete {context}-context influence run for set {summary.name!r}: "
            f"run `ddsem influence --set {summary.name}{flag}` first"
        )
    return runs


def _show_image(
    db: Database,
    summary: SetSummary,
    image: int,
    seed: int | None,
    context: str,
    top: int,
    as_json: bool,
) -> None:
    import numpy as np

    from ddsem.db.influence import load_influence
    from ddsem.db.sets import dataset_classes, get_dataset, set_tensors
    from ddsem.db.views import top_influenced
    from ddsem.influence.checks import align
    from ddsem.influence.loo import top_k

    _, labels = set_tensors(db, summary.id)
    if not 0 <= image < len(labels):
        raise UserError(f"--image must be in 0..{len(labels) - 1} for set {summary.name!r}")
    runs = _complete_runs(db, summary, context)
    dataset = get_dataset(db, summary.dataset)
    classes = dataset_classes(dataset) if dataset else []
    if seed is not None:
        chosen = [r for r in runs if r.seed == seed]
        if not chosen:
            have = ", ".join(str(r.seed) for r in runs)
            raise UserError(f"no complete {context}-context run for seed {seed} (seeds: {have})")
        scope = f"seed:{seed}"
        page = top_influenced(db, chosen[0].id, image, limit=top)
        rows = [(h.rank, h.test_index, h.label, h.value) for h in page.items]
        if top > len(rows) and len(rows) < chosen[0].num_test:
            common.echo(f"(the stored top-k table holds {len(rows)} per image)")
    else:
        loaded = [load_influence(db, r.id) for r in runs]
        matrices, common_idx = align([m for m, _ in loaded], [t for _, t in loaded])
        mean = np.mean(np.stack(matrices), axis=0)
        positions, values = top_k(mean[image : image + 1], top)
        _, test_labels = _stored_test_labels(db, summary, common_idx)
        scope = "seed:" + str(runs[0].seed) if len(runs) == 1 else "mean"
        rows = [
            (rank, int(common_idx[p]), int(test_labels[p]), float(v))
            for rank, (p, v) in enumerate(zip(positions[0], values[0], strict=True))
        ]
    label = int(labels[image])
    out = {
        "set": summary.name,
        "image": image,
        "label": label,
        "class": classes[label] if label < len(classes) else str(label),
        "context": context,
        "scope": scope,
        "seeds": [r.seed for r in runs] if seed is None else [seed],
        "top": [
            {
                "rank": r,
                "test_index": t,
                "label": lbl,
                "class": classes[lbl] if lbl < len(classes) else str(lbl),
                "value": v,
            }
            for r, t, lbl, v in rows
        ],
    }
    if as_json:
        common.print_json(out)
        return
    seeds_text = ",".join(str(s) for s in out["seeds"])
    what = "mean over seeds" if scope == "mean" else "seed"
    common.echo(
        f"distilled image {image} ({out['class']}) of set {summary.name!r}: the test images it "
        f"influences most ({context} context, {what} {seeds_text})"
    )
    common.table(
        "",
        ["rank", "test index", "class", "influence"],
        [[t["rank"], t["test_index"], t["class"], f"{t['value']:+.5f}"] for t in out["top"]],
    )


def _stored_test_labels(
    db: Database, summary: SetSummary, indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Labels of registered test images (registered by `ddsem influence` itself)."""
    import numpy as np

    from ddsem.db.sets import get_dataset, image_rows

    dataset = get_dataset(db, summary.dataset)
    if dataset is None:
        raise UserError(f"data set {summary.dataset!r} is not registered in this database")
    rows = image_rows(db, dataset.id or 0, "test", [int(i) for i in indices])
    by_index = {r.index: r.label for r in rows}
    return indices, np.asarray([by_index[int(i)] for i in indices], dtype=np.int64)


# -- check ---------------------------------------------------------------------------------------


@app.command("check")
def check(
    method: str = typer.Option(None, "--method", help=METHOD_HELP),
    set_name: str = typer.Option(None, "--set", help=SET_HELP),
    out: str = typer.Option(None, "--out", help="Folder for the PNG scatter plots."),
    data: str = typer.Option(None, "--data", help=DATA_HELP),
    noise: bool = typer.Option(
        True,
        "--noise/--no-noise",
        help="Retrain the reference model once to measure the numerical noise floor.",
    ),
    device: str = typer.Option(None, "--device", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Seed consistency and context independence (Pearson; paper Fig. 8), influence vs pixel
    distance (Spearman, faiss; Fig. 7) and the numerical noise floor of the stored runs."""
    import numpy as np

    from ddsem.db.influence import list_runs, load_influence
    from ddsem.influence.checks import align, correlate, distance_spearman, pixel_distances

    if as_json:
        common.OPTIONS.quiet = True  # stdout carries the JSON only
    dev = _device(device)
    db = common.open_database(create=False)
    job = _prepare(db, method, set_name, data)
    out_dir = Path(out).expanduser() if out else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out is a file, not a folder: {out_dir}")
    runs = {c: list_runs(db, job.set.id, context=c) for c in ("distilled", "real")}
    if not runs["distilled"] and not runs["real"]:
        raise UserError(
            f"no complete influence run for set {job.set.name!r}: "
            f"run `ddsem influence --set {job.set.name} --seeds 0,1` first"
        )
    loaded = {c: [load_influence(db, r.id) for r in rs] for c, rs in runs.items()}
    report: dict[str, Any] = {"set": job.set.name, "runs": {}, "figures": []}
    for c, rs in runs.items():
        report["runs"][c] = [r.seed for r in rs]
    lines: list[str] = [f"set {job.set.name!r}: {job.set.num_images} distilled images"]

    # Seed consistency (Fig. 8 left).
    seeds_report = []
    if len(loaded["distilled"]) >= 2:
        ms, _ = align([m for m, _ in loaded["distilled"]], [t for _, t in loaded["distilled"]])
        rs = runs["distilled"]
        for a in range(len(ms)):
            for b in range(a + 1, len(ms)):
                corr = correlate(ms[a], ms[b])
                seeds_report.append({"seeds": [rs[a].seed, rs[b].seed], **corr.as_json()})
                lines.append(
                    f"seed {rs[a].seed} vs seed {rs[b].seed}: Pearson overall "
                    f"{corr.overall:.3f}, per image mean {corr.mean:.3f} "
                    f"(min {np.nanmin(corr.per_image):.3f})"
                )
                if out_dir is not None and a == 0 and b == 1:
                    report["figures"].append(
                        _figure(
                            out_dir / "seeds.png",
                            ms[a],
                            ms[b],
                            corr.per_image,
                            f"influence, seed {rs[a].seed}",
                            f"influence, seed {rs[b].seed}",
                            f"seed consistency: Pearson {corr.overall:.3f}",
                            "Pearson r",
                        )
                    )
    else:
        lines.append("seed consistency: needs two distilled-context seeds (--seeds 0,1)")
    report["seed_consistency"] = seeds_report

    # Context independence (Fig. 8 right): seed means of each context.
    if loaded["distilled"] and loaded["real"]:
        all_m = [m for m, _ in loaded["distilled"] + loaded["real"]]
        all_t = [t for _, t in loaded["distilled"] + loaded["real"]]
        ms, _ = align(all_m, all_t)
        k = len(loaded["distilled"])
        dist_mean, real_mean = np.mean(ms[:k], axis=0), np.mean(ms[k:], axis=0)
        corr = correlate(dist_mean, real_mean)
        report["context"] = corr.as_json()
        lines.append(
            f"distilled vs real context: Pearson overall {corr.overall:.3f}, "
            f"per image mean {corr.mean:.3f}"
        )
        if out_dir is not None:
            report["figures"].append(
                _figure(
                    out_dir / "context.png",
                    dist_mean,
                    real_mean,
                    corr.per_image,
                    "influence, distilled context",
                    "influence, real context",
                    f"context independence: Pearson {corr.overall:.3f}",
                    "Pearson r",
                )
            )
    else:
        report["context"] = None
        lines.append("context independence: needs a distilled and a real-context run")

    # Influence vs pixel distance (Fig. 7).
    base = "distilled" if loaded["distilled"] else "real"
    ms, common_idx = align([m for m, _ in loaded[base]], [t for _, t in loaded[base]])
    mean_infl = np.mean(ms, axis=0)
    from ddsem.data import normalize

    distances = pixel_distances(job.images, normalize(job.data.test_x[common_idx]).numpy())
    pix = distance_spearman(mean_infl, distances)
    report["pixel_distance"] = {"context": base, **pix.as_json()}
    lines.append(
        f"influence vs pixel closeness ({base} context): Spearman per image mean {pix.mean:.3f}, "
        f"overall {pix.overall:.3f} (the paper finds only a weak correlation)"
    )
    if out_dir is not None:
        report["figures"].append(
            _figure(
                out_dir / "pixel_distance.png",
                distances,
                mean_infl,
                pix.per_image,
                "L2 distance in normalised pixels",
                "influence",
                f"influence vs pixel distance: Spearman {pix.overall:.3f}",
                "Spearman rho",
            )
        )

    # Numerical noise floor.
    if noise:
        first = runs[base][0]
        floors = _noise_floors(db, job, first, loaded[base][0][0], dev)
        report["noise_floor"] = [f.as_json() for f in floors]
        for f in floors:
            lines.append(
                f"noise floor, {f.compared}: test losses differ by up to {f.loss_diff_max:.2e} "
                f"(std {f.loss_diff_std:.2e}); influence std {f.influence_std:.2e}, median "
                f"|influence| {f.influence_abs_median:.2e}; {100 * f.above_floor:.1f}% of the "
                f"influences exceed the largest difference; signal/noise {f.signal_to_noise:.3g}"
            )
    else:
        report["noise_floor"] = None
    report["tf32"] = _tf32_note(dev)
    lines.append(report["tf32"])
    if as_json:
        common.print_json(report)
        return
    for line in lines:
        common.echo(line)
    for f in report["figures"]:
        common.echo(f"wrote {f}")


def _figure(path: Path, x, y, per_image, xlabel: str, ylabel: str, title: str, coef: str) -> str:
    from ddsem.influence.figures import scatter_check

    return str(
        scatter_check(
            x, y, per_image, path, xlabel=xlabel, ylabel=ylabel, title=title, coefficient=coef
        )
    )


def _noise_floors(
    db: Database, job: Job, run: InfluenceRunInfo, influence: np.ndarray, dev
) -> list:
    """Retrain the run's reference model alone by the other arithmetic path (and, on CUDA,
    with TF32 on) and compare its test losses with the stored population model's."""
    import numpy as np
    import torch

    from ddsem.config import InfluenceConfig, ModelConfig, TrainConfig, from_dict
    from ddsem.db.influence import load_influence, model_results, run_init_state
    from ddsem.influence.checks import noise_floor
    from ddsem.influence.loo import REFERENCE, train_and_evaluate

    cfg = run.config
    model_cfg = from_dict(ModelConfig, cfg["model"])
    train_cfg = from_dict(TrainConfig, cfg["train"])
    infl_cfg = from_dict(InfluenceConfig, cfg["influence"])
    real = cfg.get("real_indices")
    plan = Plan(
        model_cfg,
        train_cfg,
        infl_cfg,
        cfg,
        run.config_hash,
        np.zeros(0, np.int64),
        np.asarray(real, np.int64) if real is not None else None,
    )
    indices, losses, _ = model_results(db, run.id)
    stored = losses[indices.index(REFERENCE)]
    _, test_indices = load_influence(db, run.id)
    init = {k: torch.from_numpy(v) for k, v in run_init_state(db, run.id).items()}
    population = _population(job, plan)
    test_x, test_y = _test_tensors(job, test_indices)
    run_path = "batched" if "cuda" in run.device else "loop"
    run_device = run.device.split(",")[0]
    alone_path = "loop" if run_path == "batched" else "batched"
    trials: list[tuple[str, bool]] = [(alone_path, False)]
    if dev.type == "cuda":
        trials.append(("loop", True))
    floors = []
    for path, tf32 in trials:
        with common.progress(
            train_cfg.steps, f"noise floor: reference model alone ({path})"
        ) as adv:
            result = train_and_evaluate(
                model_cfg,
                train_cfg,
                population,
                [REFERENCE],
                init,
                test_x,
                test_y,
                device=dev,
                path=path,
                progress=adv,
                tf32=tf32,
            )
        compared = (
            f"seed {run.seed} reference model in the population ({run_path}, {run_device}) vs "
            f"alone ({path}, {dev.type}{', TF32 on' if tf32 else ''})"
        )
        floors.append(noise_floor(stored, result.losses[0].numpy(), influence, compared))
    return floors


def _tf32_note(dev) -> str:
    if dev.type == "cuda":
        return (
            "TF32: influence runs switch it off (float32 matmuls and convolutions); the TF32 line "
            "above shows the noise floor it would add."
        )
    return (
        "TF32: not used on the CPU. On an NVIDIA GPU (Ampere or newer) PyTorch runs cuDNN "
        "convolutions in TF32 by default (10-bit mantissa, ~1e-3 relative), which raises the "
        "noise floor; influence runs switch it off, and `check --device cuda` measures it."
    )
