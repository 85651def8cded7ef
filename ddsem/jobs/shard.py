"""A job as several processes on one machine (``ddsem ... --processes N``): the command line
started N times as plain subprocesses with the environment ``accelerate launch`` (torchrun)
sets, so that each worker's ``ddsem.runtime.process_state`` is accelerate's ``PartialState``
(a gloo group; one GPU per process on CUDA, cuda:LOCAL_RANK), and waited for. How the jobs split their units
is in each job (influence, annotate, curvature); this module only starts and watches.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from ddsem.runtime import is_main_process, world_size

__all__ = ["is_main_process", "run_workers", "without_processes", "world_size"]

STOPPED = -15  # a worker stopped (SIGTERM) because another failed: not the failure


def without_processes(argv: list[str]) -> list[str]:
    """``argv`` less its ``--processes N`` / ``--processes=N``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            out.append(arg)
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_workers(argv: list[str], processes: int) -> tuple[int, str] | None:
    """Run ``python -m ddsem ARGV`` (less ``--processes``) as ``processes`` workers: RANK and
    LOCAL_RANK 0..N-1, WORLD_SIZE N, MASTER_ADDR 127.0.0.1 and a free MASTER_PORT. Worker 0
    keeps this terminal's stdout and stderr; the others are quiet (their stderr is kept for
    their error line). When one fails the others are stopped (they could wait for it for
    ever): what it finished is stored, and a re-run does the rest.

    Returns None when all succeeded, else (exit status, one line naming the worker and why;
    "" when it is worker 0, which printed its own)."""
    base = [sys.executable, "-m", "ddsem", *without_processes(argv)]
    env = {
        **os.environ,
        "WORLD_SIZE": str(processes),
        "LOCAL_WORLD_SIZE": str(processes),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }
    workers: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="ddsem-workers-") as folder:
        logs = [os.path.join(folder, f"{rank}.err") for rank in range(processes)]
        try:
            for rank in range(processes):
                with open(logs[rank], "w") as err:
                    workers.append(
                        subprocess.Popen(
                            base,
                            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                            stdout=None if rank == 0 else subprocess.DEVNULL,
                            stderr=None if rank == 0 else err,
                        )
                    )
            while any(w.poll() is None for w in workers):
                if any(w.returncode not in (None, 0) for w in workers):
                    _stop(workers)
                time.sleep(0.1)
        except BaseException:  # Ctrl-C, or this launcher killed: no worker is left behind
            _stop(workers)
            for w in workers:
                w.wait()
            raise
        return _failure([int(w.returncode) for w in workers], logs)


def _stop(workers: list[subprocess.Popen]) -> None:
    for w in workers:
        if w.poll() is None:
            w.terminate()


def _failure(codes: list[int], logs: list[str]) -> tuple[int, str] | None:
    n = len(codes)
    for rank, code in enumerate(codes):
        if code in (0, STOPPED):
            continue
        if rank == 0 and code > 0:
            return code, ""
        with open(logs[rank]) as f:
            lines = [line.strip() for line in f.read().splitlines() if line.strip()]
        if code < 0:
            why = f"killed by signal {-code}"
        else:
            why = lines[-1].removeprefix("error: ") if lines else f"exit status {code}"
        return (code if code > 0 else 1), f"process {rank} of {n}: {why}"
    if any(code != 0 for code in codes):
        return 1, "the workers were stopped (SIGTERM)"
    return None
