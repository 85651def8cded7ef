"""The one place that resolves the compute device and seeds random number generators."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from ddsem.errors import UserError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str = "auto") -> torch.device:
    """Map "auto" | "cpu" | "cuda" | "cuda:N" to a torch.device that exists on this machine."""
    import torch

    name = (name or "auto").strip().lower()
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
