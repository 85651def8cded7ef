"""The dataset-distillation ConvNet: [conv3x3 -> norm -> ReLU -> pool2] x depth -> linear."""

from __future__ import annotations

import torch
from torch import nn

from ddsem.config import ModelConfig
from ddsem.errors import UserError


def norm_layer(kind: str, channels: int) -> nn.Module:
    """instancenorm | batchnorm | none, as the dataset-distillation code bases name them."""
    if kind == "instancenorm":
        # The reference code's "instancenorm": per-sample statistics, no coupling across a batch.
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise UserError(f"unknown norm {kind!r}: use instancenorm, batchnorm or none")


class ConvNet(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.pooling not in ("avg", "max"):
            raise UserError(f"unknown pooling {cfg.pooling!r}: use avg or max")
        if cfg.depth < 1 or cfg.width < 1:
            raise UserError("ConvNet depth and width must be positive")
        layers: list[nn.Module] = []
        channels, size = cfg.channels, cfg.image_size
        for _ in range(cfg.depth):
            layers += [
                nn.Conv2d(channels, cfg.width, kernel_size=3, padding=1),
                norm_layer(cfg.norm, cfg.width),
                nn.ReLU(inplace=False),
                nn.AvgPool2d(2) if cfg.pooling == "avg" else nn.MaxPool2d(2),
            ]
            channels, size = cfg.width, size // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels * size * size, cfg.num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features before the classifier (what distribution matching compares)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
