"""Distillation speed: seconds per iteration of DM, GM, TM and BPTT at a small CPU config, and
the demo's DM config (time per iteration and, with --demo-quality, whether the distilled set
beats its real initialisation). All methods run here, side by side, on the same machine.

    .venv/bin/python benchmarks/distill.py                   # small CPU config, about a minute
    .venv/bin/python benchmarks/distill.py --threads 1,2     # also compare torch thread counts
    .venv/bin/python benchmarks/distill.py --demo-quality    # + the demo's DM run, retrained

Needs real CIFAR-10 ($DDSEM_DATA or --data). Settings are the published ones except the ones
the flags shrink (width, ipc, real batch, and the unrolled lengths of TM and BPTT, printed per
row). With --gpu on a CUDA machine it also distils CIFAR-10 at ipc 10 with every method for
--gpu-iterations iterations and prints retrained accuracy (paper protocol, 5 models, full test
set) next to the published figures (DC 44.9, DM 48.9, MTT 65.3; BPTT 58 in the analysis paper);
those published figures come from far longer runs (1,000 to 20,000 iterations).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from ddsem.config import (
    BPTTConfig,
    DMConfig,
    ExpertConfig,
    GMConfig,
    ModelConfig,
    TMConfig,
    TrainConfig,
)
from ddsem.data import load_dataset, normalize, stratified_indices
from ddsem.distill import make_distiller
from ddsem.distill.common import RealData, initial_set, run
from ddsem.distill.experts import train_expert
from ddsem.distill.tm import resolve
from ddsem.runtime import resolve_device
from ddsem.train import evaluate_population, initial_states, train_population

PUBLISHED = {"gm": 44.9, "dm": 48.9, "tm": 65.3, "bptt": 58.0}


def build(method, start, real, model_cfg, args, experts, device):
    """The method at the benchmark's config, and a description of what was shrunk."""
    if method == "dm":
        cfg, note = DMConfig(batch_real=args.batch_real), f"batch_real {args.batch_real}"
    elif method == "gm":
        cfg, note = GMConfig(batch_real=args.batch_real), f"batch_real {args.batch_real}"
    elif method == "tm":
        cfg = resolve(TMConfig(syn_steps=args.syn_steps, max_start_epoch=2), args.ipc)
        note = f"syn_steps {cfg.syn_steps}"
    else:
        cfg = BPTTConfig(batch_real=args.batch_real, inner_steps=args.inner_steps)
        note = f"inner_steps {cfg.inner_steps}"
    d = make_distiller(
        method, cfg, model_cfg, start, real=real, experts=experts, ipc=args.ipc, device=device
    )
    if method == "gm":
        note += f", loops {d.outer_loop}/{d.inner_loop}"
    return d, note


def seconds_per_iteration(distiller, generator, iterations: int) -> float:
    distiller.step(generator)  # warm-up (allocations, first-call overheads)
    start = time.perf_counter()
    run(distiller, generator, start=0, total=iterations)
    return (time.perf_counter() - start) / iterations


def retrained(model_cfg, images, labels, test, seeds, device) -> float:
    states = train_population(
        model_cfg, images, labels, torch.ones(len(seeds), len(labels)),
        initial_states(model_cfg, seeds), TrainConfig(), device=device,
    )  # fmt: skip
    return float(evaluate_population(model_cfg, states, *test, device=device).accuracy.mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=None)
    p.add_argument("--methods", default="dm,gm,tm,bptt")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--batch-real", type=int, default=32)
    p.add_argument(
        "--syn-steps", type=int, default=10, help="TM student steps (table: 50 at ipc 1)"
    )
    p.add_argument("--inner-steps", type=int, default=20, help="BPTT unrolled steps (default 300)")
    p.add_argument("--iterations", type=int, default=5, help="timed iterations per method")
    p.add_argument("--threads", default="1", help="torch intra-op thread counts to compare")
    p.add_argument("--demo-quality", action="store_true", help="run the demo's DM config fully")
    p.add_argument("--device", default="cpu")
    p.add_argument("--gpu", action="store_true", help="CUDA: ipc-10 accuracy per method")
    p.add_argument("--gpu-iterations", type=int, default=1000)
    args = p.parse_args()
    device = resolve_device(args.device)
    data = load_dataset(args.data)
    real = RealData(data.train_x, data.train_y, data.num_classes, device)
    model_cfg = ModelConfig(width=args.width)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    experts = None
    if "tm" in methods:
        idx = stratified_indices(data.train_y, 1000, 0)
        x, y = normalize(data.train_x[idx]), torch.from_numpy(data.train_y[idx])
        experts = [
            torch.from_numpy(train_expert(model_cfg, ExpertConfig(epochs=3), x, y, s)[0])
            for s in (0, 1)
        ]

    print(f"CPU config: width {args.width}, ipc {args.ipc}, device {device}")
    print(f"{'method':6} {'threads':>7} {'s/iteration':>12}  shrunk settings")
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for method in methods:
            g = torch.Generator().manual_seed(0)
            start = initial_set(real, args.ipc, "real", g)
            distiller, note = build(method, start, real, model_cfg, args, experts, device)
            sec = seconds_per_iteration(distiller, g, args.iterations)
            print(f"{method:6} {threads:>7} {sec:>12.3f}  {note}", flush=True)

    # The demo's DM config (ddsem/cli/demo.py): ipc 2, width 32, real batch 64, 200 iterations.
    demo_cfg = ModelConfig(width=32)
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for batch_real in (64, 32, 16):
            g = torch.Generator().manual_seed(0)
            start = initial_set(real, 2, "real", g)
            dm = make_distiller(
                "dm",
                DMConfig(batch_real=batch_real),
                demo_cfg,
                start,
                real=real,
                ipc=2,
                device=device,
            )
            sec = seconds_per_iteration(dm, g, args.iterations)
            print(
                f"demo DM ipc 2 width 32 batch_real {batch_real:>3} threads {threads}: "
                f"{sec:.3f} s/iteration, {200 * sec:.0f} s for 200 iterations",
                flush=True,
            )
    if args.demo_quality:
        torch.set_num_threads(int(args.threads.split(",")[0]))
        idx = stratified_indices(data.test_y, 1000, 0)
        test = (normalize(data.test_x[idx]), torch.from_numpy(data.test_y[idx]))
        for batch_real in (64, 32):
            g = torch.Generator().manual_seed(0)
            start = initial_set(real, 2, "real", g)
            dm = make_distiller(
                "dm",
                DMConfig(batch_real=batch_real),
                demo_cfg,
                start,
                real=real,
                ipc=2,
                device=device,
            )
            t0 = time.perf_counter()
            run(dm, g, start=0, total=200)
            wall = time.perf_counter() - t0
            seeds = [100, 101, 102]
            before = retrained(demo_cfg, start.images, start.labels, test, seeds, device)
            after = retrained(demo_cfg, dm.images.detach(), start.labels, test, seeds, device)
            print(
                f"demo DM batch_real {batch_real}: 200 iterations in {wall:.0f} s; retrained "
                f"accuracy (3 models, 1000 test images) real init {100 * before:.1f}% -> "
                f"DM {100 * after:.1f}%",
                flush=True,
            )

    if args.gpu:
        if device.type != "cuda":
            print("--gpu needs --device cuda on a CUDA machine; GPU accuracy figures unmeasured")
            return
        gpu_accuracy(data, real, device, args, methods)


def gpu_accuracy(data, real, device, args, methods) -> None:
    """CIFAR-10 ipc 10, width 128, published settings, --gpu-iterations iterations per method."""
    from ddsem.data import normalize

    model_cfg = ModelConfig()
    test = (normalize(data.test_x), torch.from_numpy(data.test_y))
    experts = None
    if "tm" in methods:
        x, y = normalize(data.train_x), torch.from_numpy(data.train_y)
        cfg = ExpertConfig(num_experts=5, epochs=25)
        experts = [
            torch.from_numpy(train_expert(model_cfg, cfg, x, y, s, device=device)[0])
            for s in range(cfg.num_experts)
        ]
    print(f"GPU: CIFAR-10 ipc 10, width 128, {args.gpu_iterations} iterations per method")
    for method in methods:
        g = torch.Generator().manual_seed(0)
        start = initial_set(real, 10, "real", g)
        cfg = {
            "dm": DMConfig(),
            "gm": GMConfig(),
            "tm": replace(resolve(TMConfig(), 10), max_start_epoch=20),
            "bptt": BPTTConfig(),
        }[method]
        d = make_distiller(
            method, cfg, model_cfg, start, real=real, experts=experts, ipc=10, device=device
        )
        t0 = time.perf_counter()
        run(d, g, start=0, total=args.gpu_iterations)
        wall = time.perf_counter() - t0
        acc = retrained(model_cfg, d.images.detach(), start.labels, test, list(range(5)), device)
        print(
            f"{method:5} {100 * acc:5.1f}% (published {PUBLISHED[method]}) in {wall:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
