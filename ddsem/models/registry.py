"""Name -> constructor, plus seeded initial weights that are identical on every device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from ddsem.config import ModelConfig
from ddsem.errors import UserError
from ddsem.models.convnet import ConvNet
from ddsem.models.linear import Linear
from ddsem.models.zoo import VGG11, AlexNet, ResNet18


def _batchnorm(ctor: Callable[[ModelConfig], nn.Module]) -> Callable[[ModelConfig], nn.Module]:
    """The reference's BN variant of an architecture (VGG11BN, ResNet18BN)."""
    return lambda cfg: ctor(replace(cfg, norm="batchnorm"))


ARCHITECTURES: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "convnet": ConvNet,
    "alexnet": AlexNet,
    "vgg11": VGG11,
    "vgg11bn": _batchnorm(VGG11),
    "resnet18": ResNet18,
    "resnet18bn": _batchnorm(ResNet18),
    "linear": Linear,  # softmax regression on the pixels (estimator tests)
}

# The normalisation each architecture has in the DC/MTT code bases (others: instance norm).
REFERENCE_NORM: dict[str, str] = {
    "alexnet": "none",
    "vgg11bn": "batchnorm",
    "resnet18bn": "batchnorm",
}


def reference_config(arch: str, base: ModelConfig) -> ModelConfig:
    """``base`` turned into ``arch`` with that architecture's reference normalisation."""
    if arch not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise UserError(f"unknown architecture {arch!r}: known are {known}")
    return replace(base, arch=arch, norm=REFERENCE_NORM.get(arch, "instancenorm"))


def build_model(cfg: ModelConfig) -> nn.Module:
    try:
        ctor = ARCHITECTURES[cfg.arch]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise UserError(f"unknown architecture {cfg.arch!r}: known are {known}") from None
    return ctor(cfg)


def init_state(cfg: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """The initial state dict for ``seed``: built on the CPU under a private RNG, so the same
    seed gives bit-identical weights on any device and does not disturb the global stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def has_batch_statistics(model: nn.Module) -> bool:
    """True when a layer couples the samples of a batch (BatchNorm), which makes masking inexact."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
