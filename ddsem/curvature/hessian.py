"""Hessian-vector products and v^T H v of a model's mean loss on one data source.

``quadratic_forms`` (Hutchinson's trace) needs only v^T H v: for the ConvNet it comes from
second-order Taylor mode (``ddsem.curvature.taylor``), about 2.6x faster on the CPU than the
product path below (width 16, ``benchmarks/curvature.py --alternatives``); any other model takes
(H v) . v from the products.

The Hessian is never formed: ``HessianOperator`` maps a block of vectors V (B, P) to H V, where
H is the Hessian of the mean cross-entropy over the source's images with respect to all of the
model's parameters, flattened into one vector (``named_parameters`` order).

A product is torch.func's ``vjp`` of ``grad`` (reverse-over-reverse; H is symmetric, so
v^T H = (H v)^T): the gradient's graph is built once per chunk of images and every vector of
the block is differentiated through it; a source that fits in one chunk keeps its graph for all
later calls (Hutchinson blocks, Lanczos steps). Images are taken ``chunk_size`` at a time
(memory only: the chunks' products are weighted to the mean over all images).

Two paths compute the same products, chosen by device as the training engine does: "batched"
(``vmap`` over the block: one launch per block, for CUDA) and "loop" (one vector after another,
for the CPU, where batched elementwise ops measured 1.5-2x slower than the loop).
Forward-over-reverse (``jvp`` of ``grad``) was measured too: it redoes the forward and backward
pass on every call and was slower on both paths (``benchmarks/curvature.py``).

The model is evaluated in eval mode with its buffers fixed (as PyHessian does): for the
dataset-distillation ConvNet (instance norm) this is the training loss itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ddsem.curvature import taylor

State = dict[str, torch.Tensor]


class HessianOperator:
    """v -> H v for the mean cross-entropy of ``model`` (weights ``state``) on (images, labels)."""

    def __init__(
        self,
        model: nn.Module,
        state: State,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        chunk_size: int = 256,
        device: torch.device | str = "cpu",
        path: str = "auto",
    ) -> None:
        if path not in ("auto", "loop", "batched"):
            raise ValueError(f"unknown path {path!r}: use auto, loop or batched")
        if images.shape[0] == 0:
            raise ValueError("the Hessian of an empty data source is undefined")
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.device = torch.device(device)
        self.path = (
            ("batched" if self.device.type == "cuda" else "loop") if path == "auto" else path
        )
        self.module = model.to(self.device).eval()
        self.names = [n for n, _ in self.module.named_parameters()]
        self.shapes = [tuple(state[n].shape) for n in self.names]
        self.sizes = [state[n].numel() for n in self.names]
        self.point = torch.cat([state[n].detach().reshape(-1) for n in self.names]).to(self.device)
        self.buffers = {n: state[n].detach().to(self.device) for n, _ in model.named_buffers()}
        n = images.shape[0]
        self.chunks = [
            (images[s : s + chunk_size].to(self.device), labels[s : s + chunk_size].to(self.device))
            for s in range(0, n, chunk_size)
        ]
        self.chunk_weights = [x.shape[0] / n for x, _ in self.chunks]
        self.num_samples = n
        self._graphs: dict[int, object] = {}
        self.taylor_layers = taylor.layers_of(self.module)
        self._primals: dict[int, tuple] = {}

    @property
    def dim(self) -> int:
        return self.point.numel()

    @property
    def dtype(self) -> torch.dtype:
        return self.point.dtype

    def _loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = self._unflatten(flat)
        logits = torch.func.functional_call(self.module, (params, self.buffers), (x,))
        return F.cross_entropy(logits, y)

    def __call__(self, vectors: torch.Tensor) -> torch.Tensor:
        """H V for V of shape (B, P) (or H v for one vector of shape (P,))."""
        from torch.func import vmap

        single = vectors.ndim == 1
        block = vectors.reshape(1, -1) if single else vectors
        if block.shape[1] != self.dim:
            raise ValueError(f"vectors have {block.shape[1]} entries, the model {self.dim}")
        block = block.to(device=self.device, dtype=self.dtype)
        out = torch.zeros_like(block)
        for index, weight in enumerate(self.chunk_weights):
            product = self._gradient_vjp(index)
            if self.path == "batched":
                out += weight * vmap(product)(block)[0]
            else:
                for row, v in enumerate(block):
                    out[row] += weight * product(v)[0]
        return out[0] if single else out

    def quadratic_forms(self, vectors: torch.Tensor) -> torch.Tensor:
        """v^T H v for each row of V (B, P): what Hutchinson's estimator needs. For the ConvNet
        by second-order Taylor mode (``ddsem.curvature.taylor``, no Hessian-vector product;
        the block's probes under ``vmap`` on the "batched" path, one by one on "loop"); for
        other models from the products, (H v) . v."""
        block = vectors.to(device=self.device, dtype=self.dtype)
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (B, {self.dim})")
        if self.taylor_layers is None:
            return (self(block) * block).sum(dim=1)
        from torch.func import vmap

        params = self._unflatten(self.point)
        out = torch.zeros(block.shape[0], dtype=self.dtype, device=self.device)
        with torch.no_grad():
            for index, weight in enumerate(self.chunk_weights):
                caches, logits = self._primal(index, params)
                labels = self.chunks[index][1]

                def second_derivative(v, caches=caches, logits=logits, labels=labels):
                    return taylor.second_derivative(
                        self.taylor_layers, params, caches, logits, labels, self._unflatten(v)
                    )

                if self.path == "batched":
                    out += weight * vmap(second_derivative)(block)
                else:
                    for row, v in enumerate(block):
                        out[row] += weight * second_derivative(v)
        return out

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(flat, self.sizes)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def _primal(self, index: int, params: dict[str, torch.Tensor]):
        """The forward pass Taylor mode starts from, once per chunk and block of probes (kept
        for later blocks when the source is a single chunk, like the gradient graph)."""
        cached = self._primals.get(index)
        if cached is None:
            assert self.taylor_layers is not None
            x = self.chunks[index][0]
            cached = taylor.primal(self.taylor_layers, params, self.buffers, x)
            if len(self.chunks) == 1:
                self._primals[index] = cached
        return cached

    def _gradient_vjp(self, index: int):
        """v -> v^T (d grad / d theta) = H v on one chunk; the graph of the gradient is built
        once per chunk and, when the source is a single chunk, kept for every later call."""
        from torch.func import grad, vjp

        product = self._graphs.get(index)
        if product is None:
            x, y = self.chunks[index]
            _, product = vjp(grad(partial(self._loss, x=x, y=y)), self.point)
            if len(self.chunks) == 1:
                self._graphs[index] = product
        return product


@dataclass
class MatrixOperator:
    """An explicit symmetric matrix behind the operator interface (tests, small problems)."""

    matrix: torch.Tensor

    @property
    def dim(self) -> int:
        return self.matrix.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.matrix.dtype

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def __call__(self, vectors: torch.Tensor) -> torch.Tensor:
        return vectors.to(self.dtype) @ self.matrix.T

    def quadratic_forms(self, vectors: torch.Tensor) -> torch.Tensor:
        return (self(vectors) * vectors.to(self.dtype)).sum(dim=1)


def rademacher(shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype):
    """Independent +-1 entries with equal probability, from ``generator`` (on its device)."""
    bits = torch.randint(0, 2, shape, generator=generator, device=generator.device)
    return (bits * 2 - 1).to(dtype)
