"""The agreement analysis' subset pool: the paper's protocol against one shared population.

``ddsem analyze agreement`` trains each subset-trained model on its own subset (paper section
4.1, generate_models.py: per-class fraction ~ U(0.005, 0.05), minibatches of 256 of its own
images, SGD lr 0.01, momentum 0.9). The population engine could instead train the whole pool in
ONE ``train_population`` call with a 0/1 sample-weight row per model (vmapped on CUDA), but its
models share one minibatch order over all N images: a model then takes ceil(N / 256) steps an
epoch on the ~256 f of its images that fall in each batch, another optimisation. This script
trains the same pool (same subsets, initial states, epochs) both ways, side by side in one run,
and prints their times, their ratio and how far the shared order moves the predictions.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pool.py              # small CPU run
    .venv/bin/python benchmarks/pool.py --device cuda --models 64 --width 128 --train 50000 \
        --tests 10000 --epochs 1                                       # one GPU epoch, 64 models

Real CIFAR-10 is used when $DDSEM_DATA (or --data) points at it, else Gaussian noise images
(the timing does not depend on the pixels).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from ddsem.analyses.agreement import (
    AgreementConfig,
    epoch_config,
    model_seed,
    subset_pool,
    subset_weights,
)
from ddsem.config import ModelConfig
from ddsem.runtime import resolve_device


def make_data(n: int, tests: int, data: str | None, seed: int):
    try:
        from ddsem.data import load_dataset, normalize, stratified_indices

        d = load_dataset(data)
        train = stratified_indices(d.train_y, n, seed)[:n]
        test = stratified_indices(d.test_y, tests, seed)[:tests]
        return (
            normalize(d.train_x[train]),
            torch.from_numpy(d.train_y[train].astype("int64")),
            normalize(d.test_x[test]),
            torch.from_numpy(d.test_y[test].astype("int64")),
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    cfg = AgreementConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--train", type=int, default=2000, help="real training images")
    ap.add_argument("--tests", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=2, help="passes over each subset")
    ap.add_argument("--low", type=float, default=cfg.fraction_low)
    ap.add_argument("--high", type=float, default=cfg.fraction_high)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    device = resolve_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    x, y, tx, ty, source = make_data(args.train, args.tests, args.data, args.seed)
    model = ModelConfig(width=args.width, depth=args.depth)
    idx = list(range(args.models))
    weights, fractions = subset_weights(y.numpy(), idx, args.low, args.high, args.seed)
    seeds = [model_seed(args.seed, "subset", j) for j in idx]
    kept = weights.sum(1)
    print(f"data: {source}; {args.train} real images, {args.tests} tests; device {device}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")  # fmt: skip
    print(f"pool: {args.models} ConvNet-{args.width}-{args.depth} models, fractions "
          f"{fractions.min():.3f}-{fractions.max():.3f} ({int(kept.mean())} images each on "
          f"average), {args.epochs} epochs, batch {cfg.batch_size}")  # fmt: skip

    # warm-up (kernels, allocator) on one model, not timed
    subset_pool(model, (x, y), weights[:1], seeds[:1], 1, cfg, (tx, ty), device=device)
    _sync(device)
    t0 = time.perf_counter()
    own_preds, own_acc = subset_pool(
        model, (x, y), weights, seeds, args.epochs, cfg, (tx, ty), device=device
    )
    _sync(device)
    t_own = time.perf_counter() - t0

    from ddsem.train import evaluate_population, initial_states, train_population

    shared = epoch_config(args.train, args.epochs, cfg.batch_size, cfg.lr, cfg.momentum)
    t0 = time.perf_counter()
    states = train_population(
        model, x, y, torch.from_numpy(weights), initial_states(model, seeds), shared,
        device=device, batch_seed=args.seed,
    )  # fmt: skip
    ev = evaluate_population(model, states, tx, ty, device=device)
    _sync(device)
    t_shared = time.perf_counter() - t0
    pop_preds, pop_acc = ev.predictions.numpy(), ev.accuracy.numpy()
    own_steps = sum(
        epoch_config(int(n), args.epochs, cfg.batch_size, 0.01, 0.9).steps for n in kept
    )
    same = float((own_preds == pop_preds).mean())
    print(f"each model on its own subset (the paper's; ddsem's): {t_own:8.2f} s, "
          f"{own_steps} steps of up to {cfg.batch_size} images")  # fmt: skip
    print(f"one population, shared minibatch order:              {t_shared:8.2f} s, "
          f"{shared.steps} steps x {args.models} models of ~{int(kept.mean() * cfg.batch_size / args.train)} images")  # fmt: skip
    print(f"ratio (own subsets / shared population): {t_own / t_shared:.2f}x")
    print(f"test accuracy: own subsets {100 * own_acc.mean():.1f}%, shared order "
          f"{100 * pop_acc.mean():.1f}%; predictions equal on {100 * same:.1f}% of "
          "(model, test image) pairs")  # fmt: skip


if __name__ == "__main__":
    main()
