"""Distribution matching (Zhao & Bilen, WACV 2023).

Each iteration draws a fresh randomly initialised network; for every class, the same DSA
augmentation is applied to a batch of real images and to that class's synthetic images, and the
loss is the squared distance between their mean embeddings, summed over classes. The network
is never trained: only the synthetic images move (SGD, lr 1, momentum 0.5).
"""

from __future__ import annotations

import torch

from ddsem.config import DMConfig, ModelConfig
from ddsem.distill import augment
from ddsem.distill.common import Distiller, ImageSGD, RealData, random_int
from ddsem.models import build_model, init_state


class DM(Distiller):
    method = "dm"

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        real: RealData,
        model_cfg: ModelConfig,
        cfg: DMConfig,
        device: torch.device,
    ) -> None:
        super().__init__(images, labels, device)
        self.real, self.model_cfg, self.cfg = real, model_cfg, cfg
        self.strategy = augment.parse_strategy(cfg.dsa_strategy)
        self.classes = [int(c) for c in torch.unique(labels)]
        self.rows = [torch.nonzero(self.labels == c).flatten() for c in self.classes]
        self.opt = ImageSGD(self.images, cfg.lr_img, cfg.momentum_img)

    def _network(self, generator: torch.Generator) -> torch.nn.Module:
        net = build_model(self.model_cfg)
        net.load_state_dict(init_state(self.model_cfg, random_int(generator)))
        net.to(self.device).train()
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    def loss(self, generator: torch.Generator) -> torch.Tensor:
        net = self._network(generator)
        size = (self.images.shape[2], self.images.shape[3])
        real_parts, syn_parts = [], []
        for c, rows in zip(self.classes, self.rows, strict=True):
            real = self.real.sample(c, self.cfg.batch_real, generator)
            params = augment.sample(self.strategy, 1, generator, size, shared=True)
            real_parts.append(augment.apply(real, params))
            syn_parts.append(augment.apply(self.images[rows], params))
        # One forward pass for all classes: the network has no batch statistics, so this equals
        # the reference's per-class passes.
        with torch.no_grad():
            real_emb = net.embed(torch.cat(real_parts))
        syn_emb = net.embed(torch.cat(syn_parts))
        real_means = [e.mean(0) for e in torch.split(real_emb, [len(p) for p in real_parts])]
        syn_means = [e.mean(0) for e in torch.split(syn_emb, [len(p) for p in syn_parts])]
        return sum(((r - s) ** 2).sum() for r, s in zip(real_means, syn_means, strict=True))

    def step(self, generator: torch.Generator) -> float:
        loss = self.loss(generator)
        self.opt.zero_grad()
        loss.backward()
        self._record_grad()
        self.opt.step()
        self.last_loss = float(loss.detach())
        return self.last_loss

    def state(self) -> dict[str, torch.Tensor]:
        buf = self.opt.state()
        return {} if buf is None else {"image_momentum": buf}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.opt.load(state.get("image_momentum"))
