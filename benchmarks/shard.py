"""Wall time of one influence job as one process and as N processes (issue 19), in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shard.py [--processes 2] [--images 10]
        [--width 16] [--steps 60] [--test-limit 100] [--seeds 0] [--out shard.json]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shard.py --job curvature --steps 40 --width 8

Everything happens in a temporary folder (the decoded-pixel cache too): procedural CIFAR-shaped
images (``ddsem.data.synthetic``) and a random "distilled" set of ``--images`` images, stored
twice. The same command ``python -m ddsem --device cpu --db DB influence --set s ...`` then runs
on the first copy as one process and on the second with ``--processes N`` (every worker with
OMP_NUM_THREADS=1, so N processes use N cores). Wall times are of the whole command, start-up
included (each process imports torch; a worker also accelerate and joins the gloo group), and
the start-up alone is measured too: the same command again on the complete database, where
there is nothing left to do. The stored model rows (losses, accuracy) and influence matrices of
the two runs are compared bit for bit. ``machine_parallelism`` says what the machine gave:
N one-thread torch loops at once against one, before and after the runs (N when the cores are
free; about 1 when other work holds them, and then no split can be faster). ``--job curvature`` times a curvature run instead (the real
source at each of --steps checkpoints; its points are split in checkpoint order, so the process
with the late checkpoints replays the whole training: the training is one trajectory).

On GPUs: ``--device cuda`` runs 1 process on cuda:0 against ``--processes N`` with one GPU per
process (each takes cuda:LOCAL_RANK); several machines run ``accelerate launch -m ddsem
influence ...`` on each, against one shared PostgreSQL ``--db``. A machine with one GPU has no
N-process figure to give (N processes on one GPU only share it).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = "SELECT model_index, losses, accuracy FROM influencemodel ORDER BY run_id, model_index"
POINTS = "SELECT source, iteration, trace, trace_stderr FROM curvaturepoint ORDER BY 1, 2"
MATRIX = (
    'SELECT run_id, distilled_index, "values" FROM influencerow ORDER BY run_id, distilled_index'
)


def _setup(folder: Path, images: int) -> tuple[Path, list[Path]]:
    from ddsem.data.synthetic import synthetic_data, write_image_folder
    from ddsem.db import open_db
    from ddsem.db.sets import add_distilled_set

    data = write_image_folder(
        synthetic_data(train_per_class=20, test_per_class=20, seed=0), folder / "data"
    )
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(images, 3, 32, 32)).astype(np.float32)
    dbs = []
    for name in ("one", "many"):
        path = folder / f"{name}.db"
        db = open_db(str(path))
        add_distilled_set(db, "s", "bptt", pixels, np.arange(images) % 10, dataset="cifar10")
        db.close()
        dbs.append(path)
    return data, dbs


def _timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(
            f"benchmark command failed ({done.returncode}): {' '.join(command)}\n{done.stderr}"
        )
    return seconds


BURN = (
    "import time, torch\n"
    "x = torch.randn(256, 256)\n"
    "t = time.perf_counter()\n"
    "for _ in range(1500):\n"
    "    x = torch.tanh(x @ x * 0.01)\n"
    "print(time.perf_counter() - t)\n"
)


def machine_parallelism(processes: int, env: dict[str, str]) -> float:
    """How much faster N CPU-bound one-thread processes get through N times the work than one
    does, on this machine now (N: all cores free; about 1 when other work takes them): the
    ceiling of the sharded speed-up."""
    alone = float(subprocess.run([sys.executable, "-c", BURN], env=env, capture_output=True,
                                 text=True, check=True).stdout)  # fmt: skip
    many = [
        subprocess.Popen([sys.executable, "-c", BURN], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    slowest = max(float(p.communicate()[0]) for p in many)
    return processes * alone / slowest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--images", type=int, default=10, help="distilled images (N+1 models)")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--test-limit", type=int, default=100)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--chunk", type=int, default=0, help="0: the job's default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--job",
        choices=("influence", "curvature"),
        default="influence",
        help="curvature: the real source at every checkpoint of --steps iterations (each "
        "process replays the training up to its last checkpoint)",
    )
    parser.add_argument("--out", help="write the figures as JSON here too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ddsem-shard-") as tmp:
        folder = Path(tmp)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "DDSEM_CACHE": str(folder / "cache")}
        os.environ["DDSEM_CACHE"] = env["DDSEM_CACHE"]
        data, (one, many) = _setup(folder, args.images)
        job = ["influence", "--set", "s", "--seeds", args.seeds, "--width", str(args.width),
               "--steps", str(args.steps), "--test-limit", str(args.test_limit),
               "--chunk", str(args.chunk), "--data", str(data)]  # fmt: skip

        if args.job == "curvature":
            job = ["curvature", "--real", "--width", str(args.width), "--depth", "2",
                   "--train-samples", "200", "--iterations", str(args.steps), "--every", "1",
                   "--probes", "4", "--probe-block", "4", "--real-samples", "64",
                   "--out", str(folder / "fig"), "--data", str(data)]  # fmt: skip

        def command(db: Path, processes: int) -> list[str]:
            extra = ["--processes", str(processes)] if processes > 1 else []
            base = [sys.executable, "-m", "ddsem", "--quiet", "--device", args.device]
            return [*base, "--db", str(db), *job, *extra]

        n = args.processes
        parallel_before = machine_parallelism(n, env)
        seconds_one = _timed(command(one, 1), env)
        seconds_many = _timed(command(many, n), env)
        startup_one = _timed(command(one, 1), env)  # complete now: start-up and plan only
        startup_many = _timed(command(many, n), env)

        rows = []
        for db in (one, many):
            with sqlite3.connect(db) as con:
                if args.job == "curvature":
                    rows.append(con.execute(POINTS).fetchall())
                    rows.append([])
                else:
                    rows.append(con.execute(MODELS).fetchall())
                    rows.append(con.execute(MATRIX).fetchall())
        equal = rows[0] == rows[2] and rows[1] == rows[3]
        figures = {
            "job": args.job,
            "device": args.device,
            "processes": n,
            "units": len(rows[0]),  # models (influence) or points (curvature)
            "width": args.width,
            "steps": args.steps,
            "test_images": args.test_limit,
            "seconds_1_process": round(seconds_one, 2),
            f"seconds_{n}_processes": round(seconds_many, 2),
            "speedup": round(seconds_one / seconds_many, 3),
            "startup_seconds_1_process": round(startup_one, 2),
            f"startup_seconds_{n}_processes": round(startup_many, 2),
            # None when the work is too small to show above the start-up's noise
            "speedup_without_startup": (
                round((seconds_one - startup_one) / (seconds_many - startup_many), 3)
                if seconds_many - startup_many > 1 and seconds_one > startup_one
                else None
            ),
            "rows_bit_equal": equal,
            # N one-thread torch loops at once vs one, before and after (N: the cores were free)
            "machine_parallelism": [
                round(parallel_before, 2),
                round(machine_parallelism(n, env), 2),
            ],
            "cpu_cores": os.cpu_count(),
        }
    print(json.dumps(figures, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    if not equal:
        sys.exit("the N-process run stored other rows than the single process")


if __name__ == "__main__":
    main()
