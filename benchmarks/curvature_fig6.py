"""The whole Fig. 6 run, timed: ``ddsem curvature`` on four distilled sets plus the real data.

Issue 8's GPU target: four distilled sets (ipc 10) and the real training data, 301 checkpoints
(every iteration 0..300 of a width-128 ConvNet trained on real data), in under 15 minutes on an
H200-class card; the paper's run took 10.5 hours on an L40.

Without ``--db`` the four sets are stand-ins: ipc-10 samples of real training images, one per
method name (bptt, dm, gm, tm), imported with ``ddsem sets import``. A checkpoint's cost depends
on the set's size and on how many probes the stopping rule needs, not on how the set was made,
so the time is an estimate of a run on real distilled sets; pass ``--db`` with your own
distilled sets (and no stand-ins are made) for the real thing. The command is the user's own,
run in a subprocess and timed from outside; fewer ``--iterations`` than 300 are extrapolated
linearly (every checkpoint costs about the same), and say so.

    .venv/bin/python benchmarks/curvature_fig6.py --device cuda        # the target (GPU)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/curvature_fig6.py --iterations 2 \\
        --width 16 --real-samples 256 --probes 20                      # CPU smoke, ~1 minute
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("bptt", "dm", "gm", "tm")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--db", help="a database with bptt, dm, gm and tm sets (default: stand-ins)")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--probes", type=int, default=100)
    p.add_argument("--real-samples", type=int, default=5000)
    p.add_argument("--ipc", type=int, default=10, help="stand-in sets: images per class")
    p.add_argument("--data", default=os.environ.get("DDSEM_DATA"), help="CIFAR-10 [$DDSEM_DATA]")
    args = p.parse_args()
    if not args.data:
        sys.exit("CIFAR-10 not found: pass --data or set DDSEM_DATA")

    ddsem = [sys.executable, "-m", "ddsem"]
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or str(Path(tmp) / "fig6.db")
        if not args.db:
            _import_stand_ins(ddsem, db, args, Path(tmp))
        command = ddsem + [
            "--db", db, "--device", args.device, "-q", "curvature",
            "--method", ",".join(METHODS), "--real",
            "--iterations", str(args.iterations), "--every", "1",
            "--probes", str(args.probes), "--real-samples", str(args.real_samples),
            "--width", str(args.width), "--data", args.data, "--out", str(Path(tmp) / "figures"),
        ]  # fmt: skip
        print("$ " + " ".join(command[2:]), flush=True)
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start

    checkpoints = args.iterations + 1
    print(
        f"\nFig. 6 run: {len(METHODS)} sets + real data, {checkpoints} checkpoints, width "
        f"{args.width}, device {args.device}: {seconds:.1f} s ({seconds / checkpoints:.2f} s per "
        "checkpoint, training and start-up included)"
    )
    if checkpoints < 301:
        print(f"extrapolated to 301 checkpoints: {seconds / checkpoints * 301 / 60:.1f} min")
    if not args.db:
        print("(stand-in sets: real images at ipc 10; see the docstring)")


def _import_stand_ins(ddsem: list[str], db: str, args: argparse.Namespace, tmp: Path) -> None:
    """Four ipc-sized samples of real training images, imported as the four methods' sets."""
    from ddsem.data import load_dataset, stratified_indices

    images, labels = load_dataset(args.data).split("train")
    for seed, method in enumerate(METHODS):
        index = stratified_indices(labels, args.ipc * 10, seed=seed)
        path = tmp / f"{method}.npz"
        np.savez(path, images=images[index], labels=labels[index])
        subprocess.run(
            ddsem + ["--db", db, "-q", "sets", "import", str(path), "--method", method],
            check=True,
        )


if __name__ == "__main__":
    main()
