"""The other architectures of the dataset-distillation evaluations (DC/DSA/DM/MTT code bases):
AlexNet, VGG11 and ResNet18, as their ``networks.py`` defines them for 32x32 inputs.

Channel counts scale with ``ModelConfig.width / 128``: at the default width 128 every layer has
the reference's size; smaller widths give the same shape of network for CPU tests.
``ModelConfig.norm`` picks the normalisation: "instancenorm" is the reference's
GroupNorm(C, C, affine=True), which keeps samples independent (exact masking in the training
engine); "batchnorm" gives the reference's BN variants (VGG11BN, ResNet18BN), which the engine
trains by dropping samples; "none" removes it. The reference AlexNet has no normalisation
(``registry.REFERENCE_NORM``). ``ModelConfig.depth`` and ``pooling`` apply to the ConvNet only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddsem.config import ModelConfig
from ddsem.errors import UserError
from ddsem.models.convnet import norm_layer


def _scaled(channels: int, cfg: ModelConfig) -> int:
    return max(1, round(channels * cfg.width / 128))


def _check_input(cfg: ModelConfig, name: str) -> None:
    if cfg.image_size != 32:
        raise UserError(
            f"{name} is defined for 32x32 images, not {cfg.image_size}x{cfg.image_size}"
        )
    if cfg.width < 1:
        raise UserError(f"{name} width must be positive")


class AlexNet(nn.Module):
    """DC's AlexNet: conv5(128)-pool-conv5(192)-pool-conv3(256)-conv3(192)-conv3(192)-pool-fc."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        _check_input(cfg, "AlexNet")
        c1, c2, c3, c4, c5 = (_scaled(c, cfg) for c in (128, 192, 256, 192, 192))
        self.features = nn.Sequential(
            nn.Conv2d(cfg.channels, c1, kernel_size=5, stride=1, padding=2),
            norm_layer(cfg.norm, c1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            norm_layer(cfg.norm, c2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            norm_layer(cfg.norm, c3),
            nn.ReLU(),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            norm_layer(cfg.norm, c4),
            nn.ReLU(),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            norm_layer(cfg.norm, c5),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.classifier = nn.Linear(c5 * 4 * 4, cfg.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


VGG11_LAYERS: tuple[int | str, ...] = (
    64,
    "M",
    128,
    "M",
    256,
    256,
    "M",
    512,
    512,
    "M",
    512,
    512,
    "M",
)


class VGG11(nn.Module):
    """DC's VGG11: 3x3 conv -> norm -> ReLU blocks with five max-pools, then one linear layer."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        _check_input(cfg, "VGG11")
        layers: list[nn.Module] = []
        channels = cfg.channels
        for item in VGG11_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out = _scaled(int(item), cfg)
            layers += [
                nn.Conv2d(channels, out, kernel_size=3, padding=1),
                norm_layer(cfg.norm, out),
                nn.ReLU(),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, cfg.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm_layer(norm, planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), norm_layer(norm, planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """DC's ResNet18: 3x3 stem, four stages of two basic blocks (strides 1, 2, 2, 2),
    4x4 average pooling, one linear layer."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        _check_input(cfg, "ResNet18")
        base = _scaled(64, cfg)
        self.conv1 = nn.Conv2d(cfg.channels, base, 3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(cfg.norm, base)
        stages: list[nn.Module] = []
        in_planes = base
        for multiplier, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            planes = base * multiplier
            stages.append(
                nn.Sequential(
                    BasicBlock(in_planes, planes, stride, cfg.norm),
                    BasicBlock(planes, planes, 1, cfg.norm),
                )
            )
            in_planes = planes
        self.layers = nn.Sequential(*stages)
        self.classifier = nn.Linear(in_planes, cfg.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return F.avg_pool2d(out, 4).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
