"""Softmax regression on flattened pixels: the "linear model on fixed features".

Its training objective is convex (strongly so with weight decay), so influence functions are
accurate for it; the estimator tests compare them with exact leave-one-out on it. ModelConfig's
width, depth, norm and pooling are ignored.
"""

from __future__ import annotations

from torch import nn

from ddsem.config import ModelConfig


class Linear(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(cfg.channels * cfg.image_size**2, cfg.num_classes)

    def forward(self, x):
        return self.classifier(self.flatten(x))
