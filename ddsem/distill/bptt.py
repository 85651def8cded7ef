"""Back-propagation through time (Deng & Russakovsky, NeurIPS 2022), with the analysis paper's
inner protocol: a fresh network trained on the whole synthetic set for ``inner_steps``
full-batch SGD steps with momentum; the loss of the trained network on a real batch is
differentiated through the entire inner training into the images.

Memory is bounded by recomputation, as in the reference's ``bptt_efficient_backward``: the
forward pass keeps only the parameter vector of every step (no activation graph); the backward
pass walks the steps in reverse and recomputes each step's gradient to form the
Hessian-vector products of reverse-mode SGD-with-momentum:

    v_{t+1} = m v_t + g(w_t, x),  w_{t+1} = w_t - lr v_{t+1}
    adjoints, from t = T-1 down to 0 (dw = dL/dw_T, dv = 0 at the start):
    dv += -lr dw;  dw += (dg/dw_t)^T dv;  dx += (dg/dx)^T dv;  dv *= m

Memory is O(T * parameters) instead of O(T * activations). The image gradient is clipped to
norm ``grad_clip`` before the outer SGD step.
"""

from __future__ import annotations

import torch

from ddsem.config import BPTTConfig, ModelConfig
from ddsem.distill.common import Distiller, FlatModel, ImageSGD, RealData, random_int
from ddsem.models import init_state


def unrolled_hypergradient(
    model: FlatModel,
    w0: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    outer_x: torch.Tensor,
    outer_y: torch.Tensor,
    steps: int,
    lr: float,
    momentum: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(outer loss, d outer loss / d x) through ``steps`` steps of SGD with momentum on (x, y),
    by recomputation (see the module docstring)."""
    x = x.detach()
    trajectory: list[torch.Tensor] = []
    w = w0.detach()
    v = torch.zeros_like(w)
    for _ in range(steps):
        trajectory.append(w)
        wt = w.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model.loss(wt, x, y), wt)
        v = momentum * v + g
        w = w - lr * v
    w_final = w.clone().requires_grad_(True)
    outer = model.loss(w_final, outer_x, outer_y)
    (dw,) = torch.autograd.grad(outer, w_final)
    dv = torch.zeros_like(dw)
    dx = torch.zeros_like(x)
    for wt_saved in reversed(trajectory):
        dv = dv - lr * dw
        wt = wt_saved.clone().requires_grad_(True)
        xt = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model.loss(wt, xt, y), wt, create_graph=True)
        hw, hx = torch.autograd.grad(g, [wt, xt], grad_outputs=dv)
        dw = dw + hw
        dx = dx + hx
        dv = momentum * dv
    return outer.detach(), dx


class BPTT(Distiller):
    method = "bptt"

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        real: RealData,
        model_cfg: ModelConfig,
        cfg: BPTTConfig,
        device: torch.device,
    ) -> None:
        super().__init__(images, labels, device)
        self.real, self.model_cfg, self.cfg = real, model_cfg, cfg
        self.model = FlatModel(model_cfg, self.device)
        self.classes = [int(c) for c in torch.unique(labels)]
        self.opt = ImageSGD(self.images, cfg.lr_img, cfg.momentum_img)

    def real_batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for c in self.classes:
            x = self.real.sample(c, self.cfg.batch_real, generator)
            xs.append(x)
            ys.append(torch.full((len(x),), c, device=self.device))
        return torch.cat(xs), torch.cat(ys)

    def step(self, generator: torch.Generator) -> float:
        w0 = self.model.flatten(init_state(self.model_cfg, random_int(generator))).to(self.device)
        outer_x, outer_y = self.real_batch(generator)
        loss, grad = unrolled_hypergradient(
            self.model,
            w0,
            self.images,
            self.labels,
            outer_x,
            outer_y,
            self.cfg.inner_steps,
            self.cfg.inner_lr,
            self.cfg.inner_momentum,
        )
        self.opt.zero_grad()
        self.images.grad = grad
        self._record_grad()
        torch.nn.utils.clip_grad_norm_([self.images], max_norm=self.cfg.grad_clip)
        self.opt.step()
        self.last_loss = float(loss)
        return self.last_loss

    def state(self) -> dict[str, torch.Tensor]:
        buf = self.opt.state()
        return {} if buf is None else {"image_momentum": buf}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.opt.load(state.get("image_momentum"))
