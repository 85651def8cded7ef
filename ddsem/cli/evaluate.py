"""``ddsem evaluate``: retrained test accuracy of a distilled set across architectures and
protocols (the cross-architecture table of the analysis paper's appendix F), stored so a re-run
prints what is done and trains only what is missing."""

from __future__ import annotations

import typer

from ddsem.cli import common
from ddsem.errors import UserError


def evaluate(
    name: str = typer.Option(
        None, "--set", help="The distilled set [or --method: its newest set]."
    ),
    method: str = typer.Option(None, "--method", help="Evaluate the newest set of this method."),
    arch: str = typer.Option(
        "convnet",
        "--arch",
        help="Comma-separated: convnet, alexnet, vgg11, resnet18 (+ vgg11bn, resnet18bn).",
    ),
    protocol: str = typer.Option(
        "paper,dc",
        "--protocol",
        help="paper (300 full-batch steps) and/or dc (300 epochs, decay, wd).",
    ),
    runs: int = typer.Option(5, "--runs", help="Models per architecture and protocol (seeds)."),
    width: int = typer.Option(
        128, "--width", help="Width: ConvNet channels; others scale by width/128."
    ),
    test_limit: int = typer.Option(
        None,
        "--test-limit",
        help="Class-stratified test subset size [default: the whole test split].",
    ),
    data: str = typer.Option(None, "--data", help="CIFAR data [default: $DDSEM_DATA]."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Train models on a distilled set and report mean and std of their test accuracy."""
    import torch

    from ddsem.config import DCEvalConfig, ModelConfig, TrainConfig, to_dict
    from ddsem.data import load_dataset, normalize, stratified_indices
    from ddsem.db import distill as store
    from ddsem.db.sets import find_set, set_tensors
    from ddsem.distill.evaluate import PROTOCOLS, evaluate_set, protocol_phases, total_steps
    from ddsem.models import reference_config

    archs = [a.strip().lower() for a in arch.split(",") if a.strip()]
    protocols = [p.strip().lower() for p in protocol.split(",") if p.strip()]
    if not archs:
        raise UserError("--arch is empty")
    for p in protocols:
        if p not in PROTOCOLS:
            raise UserError(f"unknown evaluation protocol {p!r}: use {', '.join(PROTOCOLS)}")
    if not protocols:
        raise UserError("--protocol is empty")
    for value, what in ((runs, "--runs"), (width, "--width"), (test_limit, "--test-limit")):
        if value is not None and value < 1:
            raise UserError(f"{what} must be a positive number, got {value}")
    model_cfgs = {a: reference_config(a, ModelConfig(width=width)) for a in archs}
    db = common.open_database()
    summary = find_set(db, name, method)
    images_np, labels_np = set_tensors(db, summary.id)
    d = load_dataset(data, summary.dataset)
    if tuple(images_np.shape[1:]) != (3, 32, 32):
        raise UserError(
            f"set {summary.name!r} has images of shape {images_np.shape[1:]}, not 3x32x32"
        )
    images, labels = torch.from_numpy(images_np), torch.from_numpy(labels_np)
    test_idx = stratified_indices(d.test_y, test_limit, 0)
    test_x, test_y = normalize(d.test_x[test_idx]), torch.from_numpy(d.test_y[test_idx])
    seeds = [common.OPTIONS.seed * 1000 + r for r in range(runs)]

    units = []
    for a in archs:
        cfg = ModelConfig(**{**to_dict(model_cfgs[a]), "num_classes": d.num_classes})
        for p in protocols:
            phases = protocol_phases(p, len(labels), paper=TrainConfig(), dc=DCEvalConfig())
            params = {
                "set_id": summary.id, "set": summary.name, "arch": a, "model": to_dict(cfg),
                "protocol": p, "phases": [to_dict(ph) for ph in phases], "seeds": seeds,
                "test_limit": test_limit, "dataset": summary.dataset,
            }  # fmt: skip
            units.append((a, p, cfg, phases, params, store.find_evaluation(db, params)))
    todo = [u for u in units if u[5] is None]
    device = common.device()
    results: dict[tuple[str, str], dict] = {
        (a, p): r for a, p, _, _, _, r in units if r is not None
    }
    steps = sum(total_steps(u[3], runs) for u in todo)
    with common.progress(steps, f"evaluate {summary.name}") as advance:
        for a, p, cfg, phases, params, _ in todo:
            res = evaluate_set(
                images, labels, cfg, phases, seeds, test_x, test_y, device=device, progress=advance
            )
            result = {"accuracies": res.accuracies, "mean": res.mean, "std": res.std}
            store.add_evaluation(db, params, result)
            results[(a, p)] = result
    if as_json:
        common.print_json(
            {
                "set": summary.name,
                "method": summary.method,
                "runs": runs,
                "test_images": len(test_idx),
                "results": [
                    {"arch": a, "protocol": p, **results[(a, p)]} for a in archs for p in protocols
                ],
            }  # fmt: skip
        )
        return
    rows = []
    for a in archs:
        cells = []
        for p in protocols:
            r = results[(a, p)]
            cells.append(f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}")
        rows.append([a, *cells])
    common.table(
        f"{summary.name} ({summary.method}, {summary.num_images} images): test accuracy %, "
        f"{runs} runs, {len(test_idx)} test images",
        ["arch", *protocols],
        rows,
    )
