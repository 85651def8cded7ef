"""Trajectory matching, MTT (Cazenavette et al., CVPR 2022).

Each iteration picks a random expert trajectory (parameters of a model trained on real data,
saved after every epoch: ``ddsem distill experts``) and a random start epoch below
``max_start_epoch``; a student starting from the expert's parameters at that epoch takes
``syn_steps`` plain SGD steps on (DSA-augmented) synthetic batches with a learnable learning
rate; the loss is ||student_end - expert_{start+M}||^2 / ||expert_start - expert_{start+M}||^2.
The student is unrolled functionally (torch.func.functional_call on one flat parameter vector),
so the loss differentiates through every step into the images and the learning rate.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from ddsem.config import TM_TABLE, TM_ZCA, ModelConfig, TMConfig
from ddsem.distill import augment
from ddsem.distill.common import Distiller, FlatModel, ImageSGD
from ddsem.errors import UserError


def zca_default(dataset: str, ipc: int) -> bool:
    """Whether MTT's published runs whiten at this ipc (CIFAR-10: ipc 1 and 10, TM_ZCA)."""
    key = max((k for k in TM_ZCA if k <= ipc), default=min(TM_ZCA))
    return dataset == "cifar10" and TM_ZCA[key][0]


def resolve(cfg: TMConfig, ipc: int, zca: bool = False) -> TMConfig:
    """Fill the fields left None from the MTT table entry at or below ipc (``zca``: the pixel
    learning rate of a ZCA run, TM_ZCA's)."""
    key = max((k for k in TM_TABLE if k <= ipc), default=min(TM_TABLE))
    table = dict(TM_TABLE[key])
    if zca:
        table["lr_img"] = TM_ZCA[max((k for k in TM_ZCA if k <= ipc), default=min(TM_ZCA))][1]
    filled = {k: (table[k] if getattr(cfg, k) is None else getattr(cfg, k)) for k in table}
    filled["syn_steps"] = int(filled["syn_steps"])
    filled["expert_epochs"] = int(filled["expert_epochs"])
    filled["max_start_epoch"] = int(filled["max_start_epoch"])
    return replace(cfg, **filled)


def epochs_needed(cfg: TMConfig) -> int:
    """How many trained epochs an expert needs: the last start plus the target offset."""
    return int(cfg.max_start_epoch) - 1 + int(cfg.expert_epochs)


class TM(Distiller):
    method = "tm"

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        experts: list[torch.Tensor],
        model_cfg: ModelConfig,
        cfg: TMConfig,
        device: torch.device,
    ) -> None:
        super().__init__(images, labels, device)
        if cfg.syn_steps is None or cfg.max_start_epoch is None:
            raise UserError("TMConfig must be resolved for an ipc first (tm.resolve)")
        self.cfg = cfg
        self.model = FlatModel(model_cfg, self.device)
        self.experts = experts
        for e in experts:
            if e.shape[1] != self.model.num_params:
                raise UserError(
                    f"expert trajectories have {e.shape[1]} parameters, the model "
                    f"{self.model.num_params}: they were trained for another architecture"
                )
            if e.shape[0] - 1 < epochs_needed(cfg):
                raise UserError(
                    f"expert trajectories have {e.shape[0] - 1} epochs; this run needs "
                    f"{epochs_needed(cfg)} (max start epoch {cfg.max_start_epoch} + expert epochs "
                    f"{cfg.expert_epochs} - 1)"
                )
        self.strategy = augment.parse_strategy(cfg.dsa_strategy)
        self.syn_lr = torch.tensor(float(cfg.lr_syn_init), device=self.device, requires_grad=True)
        self.opt_img = ImageSGD(self.images, float(cfg.lr_img), cfg.momentum)
        self.opt_lr = ImageSGD(self.syn_lr, float(cfg.lr_lr), cfg.momentum)
        self.batch_syn = cfg.batch_syn or images.shape[0]

    def loss(self, generator: torch.Generator) -> torch.Tensor:
        expert = self.experts[int(torch.randint(len(self.experts), (1,), generator=generator))]
        start_epoch = int(torch.randint(int(self.cfg.max_start_epoch), (1,), generator=generator))
        start = expert[start_epoch].to(self.device)
        target = expert[start_epoch + int(self.cfg.expert_epochs)].to(self.device)
        w = start.clone().requires_grad_(True)
        chunks: list[torch.Tensor] = []
        n = self.images.shape[0]
        for _ in range(int(self.cfg.syn_steps)):
            if not chunks:
                chunks = list(torch.split(torch.randperm(n, generator=generator), self.batch_syn))
            idx = chunks.pop().to(self.device)
            x = augment.augment(self.images[idx], self.strategy, generator)
            ce = F.cross_entropy(self.model(w, x), self.labels[idx])
            (grad,) = torch.autograd.grad(ce, w, create_graph=True)
            w = w - self.syn_lr * grad
        return ((w - target) ** 2).sum() / ((start - target) ** 2).sum()

    def step(self, generator: torch.Generator) -> float:
        loss = self.loss(generator)
        self.opt_img.zero_grad()
        self.opt_lr.zero_grad()
        self.images.grad, self.syn_lr.grad = torch.autograd.grad(loss, [self.images, self.syn_lr])
        self._record_grad()
        self.opt_img.step()
        self.opt_lr.step()
        self.last_loss = float(loss.detach())
        return self.last_loss

    @property
    def synthetic_lr(self) -> float:
        return float(self.syn_lr.detach())

    def state(self) -> dict[str, torch.Tensor]:
        out = {"syn_lr": self.syn_lr.detach().clone()}
        for name, opt in (("image_momentum", self.opt_img), ("lr_momentum", self.opt_lr)):
            buf = opt.state()
            if buf is not None:
                out[name] = buf
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.syn_lr.copy_(state["syn_lr"].to(self.device))
        self.opt_img.load(state.get("image_momentum"))
        self.opt_lr.load(state.get("lr_momentum"))
