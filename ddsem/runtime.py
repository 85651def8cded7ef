"""The one place that resolves the compute device and seeds random number generators."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from ddsem.errors import UserError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str = "auto") -> torch.device:
    """Map "auto" | "cpu" | "cuda" | "cuda:N" to a torch.device that exists on this machine.
    Run as several processes, "auto" and "cuda" are the GPU of the process's LOCAL_RANK."""
    import torch

    name = (name or "auto").strip().lower()
    if world_size() > 1 and name in ("auto", "cuda") and torch.cuda.is_available():
        # one GPU per process: LOCAL_RANK's (accelerate launch, torchrun, --processes)
        name = f"cuda:{_env_int('LOCAL_RANK', 0) % torch.cuda.device_count()}"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"device {name!r} is not present on this machine (no CUDA); use --device cpu"
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"device {name!r} is not present: this machine has {torch.cuda.device_count()} GPU(s)"
            )
        return device
    raise UserError(f"unknown device {name!r}: use auto, cpu or cuda[:N]")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run is reproducible."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A private torch generator: randomness that does not disturb the global stream."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


# -- several processes (``accelerate launch`` or ``ddsem ... --processes N``) ---------------------

DISTRIBUTED_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")  # what accelerate/torchrun set per process


def _env_int(name: str, default: int) -> int:
    import os

    value = os.environ.get(name, "")
    return int(value) if value.strip().isdigit() else default


def world_size() -> int:
    """How many processes this job runs as (1 unless launched by accelerate/torchrun or by
    ``--processes``): read from the environment, without importing accelerate."""
    return max(1, _env_int("WORLD_SIZE", 1))


def process_rank() -> int:
    """This process's index among them (0: the main process, the one that prints)."""
    return _env_int("RANK", 0) if world_size() > 1 else 0


def is_main_process() -> bool:
    return process_rank() == 0


class ProcessState:
    """Which share of a job's units this process does: accelerate's ``PartialState`` when the
    job runs as several processes (index, count, local index, ``split_between_processes``,
    ``wait_for_everyone``), a plain single process otherwise (accelerate is not even imported:
    it costs seconds)."""

    def __init__(self, index: int = 0, count: int = 1, local_index: int = 0, partial=None):
        self.index, self.count, self.local_index = index, count, local_index
        self._partial = partial

    @property
    def is_main(self) -> bool:
        return self.index == 0

    @property
    def distributed(self) -> bool:
        return self.count > 1

    def split(self, items: list) -> list:
        """This process's contiguous share of ``items`` (accelerate's
        ``split_between_processes``: the first ``len % count`` processes get one more)."""
        items = list(items)
        if self._partial is None or not items:
            return items
        with self._partial.split_between_processes(items) as mine:
            return list(mine)

    def mine_first(self, items: list) -> list:
        """All of ``items``, this process's share first, then the others' in order (the rest is
        what a process takes over, through the claims, when its owner is gone or slower)."""
        items = list(items)
        mine = self.split(items)
        if not mine:
            return items
        start = next(i for i in range(len(items)) if items[i : i + len(mine)] == mine)
        others = items[:start] + items[start + len(mine) :]
        return mine + others[::-1]  # from the far end: the owners work from the near one

    def wait(self) -> None:
        """Every process reaches this point before any goes on (a no-op for one process)."""
        if self._partial is not None:
            self._partial.wait_for_everyone()


_STATE: ProcessState | None = None


def process_state() -> ProcessState:
    """This process's state, made once: accelerate's ``PartialState`` when ``WORLD_SIZE`` > 1.

    Its process group is gloo's, on GPUs too: the jobs share their units through the database
    and only meet at a few start-up barriers, which gloo serves anywhere, also for several
    processes on one GPU (NCCL refuses two ranks on one device). The device of each process is
    ``resolve_device``'s: cuda:LOCAL_RANK."""
    global _STATE
    if _STATE is None:
        if world_size() == 1:
            _STATE = ProcessState()
        else:
            from accelerate import PartialState

            partial = PartialState(cpu=True)
            _STATE = ProcessState(
                partial.process_index,
                partial.num_processes,
                partial.local_process_index,
                partial,
            )
    return _STATE
