"""Leave-one-out influence: the population engine against the paper's sequential loop.

The paper's code (influence.ipynb) retrains one model after another: deep-copy the initial
model, train it with torch.optim.SGD for 300 full-batch steps on the set without image i,
evaluate it on the test images, next i. This script times that loop and ``ddsem``'s engine
(``ddsem.influence.leave_one_out``: one batched torch.func launch on CUDA, the engine's loop on
the CPU) on the same config, data, initial state and machine, in one run, and prints both times,
their ratio and how far their influences agree.

    .venv/bin/python benchmarks/loo.py                       # small CPU run (about a minute)
    .venv/bin/python benchmarks/loo.py --device cuda --paper # N=100, 300 steps, 10,000 tests

Real CIFAR-10 is used when $DDSEM_DATA (or --data) points at it, else Gaussian noise images
(the timing does not depend on the pixels). TF32 is off for both sides (float32 arithmetic).
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from ddsem.config import ModelConfig, TrainConfig
from ddsem.influence.loo import full_float32, influence_from_losses, leave_one_out
from ddsem.models import build_model, init_state
from ddsem.runtime import resolve_device


def make_data(n: int, tests: int, data: str | None, seed: int):
    """(distilled-like images, labels, test images, test labels, source description)."""
    try:
        from ddsem.data import load_dataset, normalize, stratified_indices

        d = load_dataset(data)
        train = stratified_indices(d.train_y, n, seed)[:n]
        test = stratified_indices(d.test_y, tests, seed)[:tests]
        return (
            normalize(d.train_x[train]),
            torch.from_numpy(d.train_y[train]),
            normalize(d.test_x[test]),
            torch.from_numpy(d.test_y[test]),
            f"CIFAR-10 ({d.source})",
        )
    except Exception as e:  # no data here: noise images time the same
        g = torch.Generator().manual_seed(seed)
        return (
            torch.randn(n, 3, 32, 32, generator=g),
            torch.arange(n) % 10,
            torch.randn(tests, 3, 32, 32, generator=g),
            torch.randint(0, 10, (tests,), generator=g),
            f"Gaussian noise ({type(e).__name__}: no CIFAR-10 found)",
        )


def sequential_loo(cfg, train_cfg, x, y, tx, ty, init, device) -> np.ndarray:
    """The paper's loop: deepcopy, SGD, train, evaluate; one model after another.

    Returns the (N+1, T) per-test-image losses, the full-set model first.
    """
    ref_model = build_model(cfg).to(device)
    ref_model.load_state_dict(init)
    x, y, tx, ty = x.to(device), y.to(device), tx.to(device), ty.to(device)
    n = x.shape[0]
    losses = []
    for i in [-1, *range(n)]:
        mask = torch.ones(n, dtype=torch.bool, device=device)
        if i >= 0:
            mask[i] = False
        sx, sy = x[mask], y[mask]
        model = copy.deepcopy(ref_model)
        optim = torch.optim.SGD(model.parameters(), lr=train_cfg.lr, momentum=train_cfg.momentum)
        model.train()
        for _ in range(train_cfg.steps):
            loss = F.cross_entropy(model(sx), sy)
            optim.zero_grad()
            loss.backward()
            optim.step()
        model.eval()
        with torch.no_grad():
            per_sample = [
                F.cross_entropy(model(tx[s : s + 256]), ty[s : s + 256], reduction="none")
                for s in range(0, tx.shape[0], 256)
            ]
        losses.append(torch.cat(per_sample).float().cpu())
    return torch.stack(losses).numpy()


def _times(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20, help="distilled images (N+1 models)")
    p.add_argument("--steps", type=int, default=30, help="full-batch SGD steps (paper: 300)")
    p.add_argument("--width", type=int, default=32, help="ConvNet width (paper: 128)")
    p.add_argument("--tests", type=int, default=1000, help="test images (paper: 10,000)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--paper", action="store_true", help="N=100, 300 steps, width 128, 10k tests")
    p.add_argument("--skip-loop", action="store_true", help="time only the engine")
    p.add_argument("--data", default=None, help="CIFAR-10 source [default: $DDSEM_DATA]")
    p.add_argument("--repeats", type=int, default=1, help="alternate runs; the best is kept")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.paper:
        args.n, args.steps, args.width, args.tests = 100, 300, 128, 10_000
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = ModelConfig(width=args.width)
    train_cfg = TrainConfig(steps=args.steps)
    x, y, tx, ty, source = make_data(args.n, args.tests, args.data, args.seed)
    init = init_state(cfg, args.seed)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device {device} ({name}), {torch.get_num_threads()} CPU threads, torch {torch.__version__}"
    )
    print(
        f"N={args.n} ({args.n + 1} models), {args.steps} steps, ConvNet width {args.width} "
        f"depth 3, {args.tests} test images, data: {source}"
    )

    # Warm-up (kernel selection, allocator) on a 2-step, 2-image problem for both sides.
    warm = TrainConfig(steps=2)
    with full_float32(device):
        sequential_loo(cfg, warm, x[:2], y[:2], tx[:8], ty[:8], init, device)
    leave_one_out(cfg, warm, x[:2], y[:2], tx[:8], ty[:8], init, device=device)

    engine_times, loop_times = [], []
    for _ in range(args.repeats):  # alternate the two, so drifting machine load hits both
        engine, t = timed(
            lambda: leave_one_out(cfg, train_cfg, x, y, tx, ty, init, device=device), device
        )
        engine_times.append(t)
        if not args.skip_loop:
            with full_float32(device):
                losses, t = timed(
                    lambda: sequential_loo(cfg, train_cfg, x, y, tx, ty, init, device), device
                )
            loop_times.append(t)
    t_engine = min(engine_times)
    path = "batched (torch.func/vmap)" if device.type == "cuda" else "loop"
    best = "best of " + str(args.repeats) if args.repeats > 1 else "one run"
    print(f"{'engine (' + path + ')':<28}{t_engine:9.2f} s  ({best}: {_times(engine_times)})")
    if args.skip_loop:
        return
    t_loop = min(loop_times)
    print(
        f"{'sequential loop':<28}{t_loop:9.2f} s  ({best}: {_times(loop_times)}; the paper's code)"
    )
    print(f"{'speed-up':<28}{t_loop / t_engine:9.2f} x")
    reference = influence_from_losses(losses[0], losses[1:], "distilled")
    err = np.linalg.norm(engine.influence - reference) / np.linalg.norm(reference)
    print(
        f"{'agreement':<28}relative error {err:.2e}, max |difference| "
        f"{np.abs(engine.influence - reference).max():.2e}, influence std {reference.std():.2e}"
    )


if __name__ == "__main__":
    main()
