"""Distillation methods (BPTT, DM, GM, TM) and import/export of others' distilled sets.

This package's ``__init__`` loads no torch: the names a request is validated against
(``METHODS``, ``INITS``, ``PROTOCOLS``) live here, and ``make_distiller`` imports its method
when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ddsem.errors import UserError

if TYPE_CHECKING:
    import torch

    from ddsem.config import ModelConfig
    from ddsem.distill.common import Distiller, InitialSet, RealData

METHODS = ("dm", "gm", "tm", "bptt")
INITS = ("real", "noise", "xavier")
PROTOCOLS = ("paper", "dc", "dsa")  # retraining protocols of ``ddsem.distill.evaluate``


def check_method(method: str) -> str:
    m = (method or "").strip().lower()
    if m not in METHODS:
        raise UserError(f"unknown distillation method {method!r}: use one of {', '.join(METHODS)}")
    return m


def make_distiller(
    method: str,
    cfg: Any,
    model_cfg: ModelConfig,
    start: InitialSet,
    *,
    real: RealData | None = None,
    experts: list[torch.Tensor] | None = None,
    ipc: int,
    device: torch.device | str,
) -> Distiller:
    """The distiller of ``method`` (its config ``cfg``: DMConfig, GMConfig, a TMConfig resolved
    for ``ipc``, BPTTConfig) over the synthetic set ``start``. DM, GM and BPTT match against
    ``real``; TM against the expert trajectories ``experts``."""
    method = check_method(method)
    if method == "tm":
        from ddsem.distill.tm import TM

        if not experts:
            raise UserError("trajectory matching needs expert trajectories")
        return TM(start.images, start.labels, experts, model_cfg, cfg, device)
    if real is None:
        raise UserError(f"{method} needs the real training images")
    if method == "dm":
        from ddsem.distill.dm import DM

        return DM(start.images, start.labels, real, model_cfg, cfg, device)
    if method == "gm":
        from ddsem.distill.gm import GM

        return GM(start.images, start.labels, real, model_cfg, cfg, device, ipc)
    from ddsem.distill.bptt import BPTT

    return BPTT(start.images, start.labels, real, model_cfg, cfg, device)
