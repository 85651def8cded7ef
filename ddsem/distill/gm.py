"""Gradient matching, DC (Zhao, Mopuri & Bilen, ICLR 2021).

Each iteration draws a fresh network and alternates ``outer_loop`` times: (1) for every class,
the layer-wise cosine distance between the gradient of the loss on a real batch and on that
class's synthetic images (1-D parameters, i.e. biases and norm scales, are ignored, as in the
reference ``distance_wb``), summed and minimised in the images; (2) unless it was the last outer
step, ``inner_loop`` epochs of ordinary training of the network on the synthetic set, which go
through the training engine (``ddsem.train.train_population``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ddsem.config import GM_LOOPS, GMConfig, ModelConfig, TrainConfig
from ddsem.distill import augment
from ddsem.distill.common import Distiller, ImageSGD, RealData, random_int
from ddsem.models import build_model, init_state
from ddsem.train import train_population


def loops_for(ipc: int, cfg: GMConfig) -> tuple[int, int]:
    """(outer_loop, inner_loop): the config's, else the reference's table entry at or below ipc."""
    key = max((k for k in GM_LOOPS if k <= ipc), default=min(GM_LOOPS))
    outer, inner = GM_LOOPS[key]
    return (cfg.outer_loop or outer, cfg.inner_loop or inner)


def layer_distance(g_syn: torch.Tensor, g_real: torch.Tensor) -> torch.Tensor:
    """Sum over output units of (1 - cosine) between gradients; 0 for 1-D parameters."""
    if g_real.ndim == 1:
        return g_real.new_zeros(())
    a = g_syn.reshape(g_syn.shape[0], -1)
    b = g_real.reshape(g_real.shape[0], -1)
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-6)
    return (1 - cos).sum()


def match_distance(gs_syn, gs_real) -> torch.Tensor:
    return sum(layer_distance(s, r) for s, r in zip(gs_syn, gs_real, strict=True))


class GM(Distiller):
    method = "gm"

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        real: RealData,
        model_cfg: ModelConfig,
        cfg: GMConfig,
        device: torch.device,
        ipc: int,
    ) -> None:
        super().__init__(images, labels, device)
        self.real, self.model_cfg, self.cfg = real, model_cfg, cfg
        self.outer_loop, self.inner_loop = loops_for(ipc, cfg)
        self.strategy = augment.parse_strategy(cfg.dsa_strategy)
        self.classes = [int(c) for c in torch.unique(labels)]
        self.rows = [torch.nonzero(self.labels == c).flatten() for c in self.classes]
        self.opt = ImageSGD(self.images, cfg.lr_img, cfg.momentum_img)
        n = images.shape[0]
        # One "epoch" of the reference's DataLoader over the synthetic set = ceil(n / batch) steps.
        self.inner_cfg = TrainConfig(
            steps=self.inner_loop * math.ceil(n / cfg.batch_train),
            lr=cfg.lr_net,
            momentum=cfg.momentum_net,
            batch_size=cfg.batch_train,
        )

    def match_loss(self, net: torch.nn.Module, generator: torch.Generator) -> torch.Tensor:
        params = list(net.parameters())
        size = (self.images.shape[2], self.images.shape[3])
        loss = self.images.new_zeros(())
        for c, rows in zip(self.classes, self.rows, strict=True):
            real = self.real.sample(c, self.cfg.batch_real, generator)
            syn = self.images[rows]
            if self.strategy:
                aug = augment.sample(self.strategy, 1, generator, size, shared=True)
                real, syn = augment.apply(real, aug), augment.apply(syn, aug)
            y_real = torch.full((len(real),), c, device=self.device)
            g_real = torch.autograd.grad(F.cross_entropy(net(real), y_real), params)
            g_real = [g.detach() for g in g_real]
            y_syn = torch.full((len(syn),), c, device=self.device)
            g_syn = torch.autograd.grad(F.cross_entropy(net(syn), y_syn), params, create_graph=True)
            loss = loss + match_distance(g_syn, g_real)
        return loss

    def step(self, generator: torch.Generator) -> float:
        state = init_state(self.model_cfg, random_int(generator))
        net = build_model(self.model_cfg).to(self.device).train()
        total = 0.0
        for ol in range(self.outer_loop):
            net.load_state_dict(state)
            loss = self.match_loss(net, generator)
            self.opt.zero_grad()
            (self.images.grad,) = torch.autograd.grad(loss, [self.images])
            self._record_grad()
            self.opt.step()
            total += float(loss.detach())
            if ol == self.outer_loop - 1:
                break
            (state,) = train_population(
                self.model_cfg,
                self.images.detach(),
                self.labels,
                torch.ones(1, self.images.shape[0]),
                [state],
                self.inner_cfg,
                device=self.device,
                batch_seed=random_int(generator),
            )
        self.last_loss = total / self.outer_loop
        return self.last_loss

    def state(self) -> dict[str, torch.Tensor]:
        buf = self.opt.state()
        return {} if buf is None else {"image_momentum": buf}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.opt.load(state.get("image_momentum"))
