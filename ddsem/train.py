"""THE training engine: a population of K models trained together (DESIGN section 4).

Every model of a population sees the same image tensor; each has its own initial state and its
own per-sample weight vector (weight 0 = left out). The loss of model k is the weighted mean of
the per-sample cross-entropy over the images it keeps, so leave-one-out, seeds, subsets and
mixing sweeps are all one call.

Two paths, chosen by device, computing the same thing:
- "batched": torch.func (stack_module_state + functional_call + vmap): one launch trains all K
  models; used on CUDA, split into chunks of models when memory requires.
- "loop": one model after another; used on the CPU, where it is measured faster.
Both apply the same SGD-with-momentum update (PyTorch's rule: buf = m * buf + g; p -= lr * buf).

Masking is exact only when no statistic couples samples. For a model with BatchNorm the loop
path physically drops the left-out samples (weights must then be 0 or 1); the batched path
refuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ddsem.config import ModelConfig, TrainConfig
from ddsem.errors import UserError
from ddsem.models import build_model, has_batch_statistics, init_state

State = dict[str, torch.Tensor]
Progress = Callable[[int], None]  # called with the number of model-steps just completed
# Called after every update with (model index, updates done so far, live state). The state's
# tensors are the training's own: read or clone them, never modify them. Checkpoints of a long
# run are taken here: the state after step s equals the result of the same call with steps=s
# (the minibatch schedule of a shorter run is a prefix of the longer one's).
StepHook = Callable[[int, int, State], None]
# An optional per-step batch transform (augmentation), called with (minibatch images, update
# index of this call counted from 0, model index) just before the forward; it returns the images
# that model trains on at that step (same shape). Each model gets its own call, so per-model
# draws are the callable's business: seed them from (model, step) to make a run reproducible
# whatever the path, chunking or order. None (the default): the batch as drawn.
Augment = Callable[[torch.Tensor, int, int], torch.Tensor]


@dataclass
class PopulationEval:
    """Per-model, per-sample results of evaluating a population on a test tensor."""

    losses: torch.Tensor  # (K, T) float32 per-sample cross-entropy
    predictions: torch.Tensor  # (K, T) int64
    accuracy: torch.Tensor  # (K,) float32

    @property
    def correct(self) -> torch.Tensor:
        raise AttributeError("use predictions == labels")


def initial_states(model_cfg: ModelConfig, seeds: Sequence[int]) -> list[State]:
    """One seeded initial state per model (repeat a seed to share an initialisation)."""
    cache: dict[int, State] = {}
    for s in seeds:
        if s not in cache:
            cache[s] = init_state(model_cfg, s)
    return [cache[s] for s in seeds]


def choose_path(device: torch.device, model: nn.Module | None = None) -> str:
    """ "batched" on CUDA for models without batch statistics, else "loop"."""
    if model is not None and has_batch_statistics(model):
        return "loop"
    return "batched" if device.type == "cuda" else "loop"


def batch_schedule(n: int, cfg: TrainConfig, seed: int = 0) -> list[torch.Tensor] | None:
    """Indices of each step's minibatch (shared by all models), or None for full batch.

    Epoch-wise random permutations from a private generator, so the schedule depends only on
    (n, batch size, steps, seed).
    """
    if cfg.batch_size is None or cfg.batch_size >= n:
        return None
    g = torch.Generator().manual_seed(seed)
    batches: list[torch.Tensor] = []
    perm = torch.randperm(n, generator=g)
    pos = 0
    while len(batches) < cfg.steps:
        if pos + cfg.batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        batches.append(perm[pos : pos + cfg.batch_size])
        pos += cfg.batch_size
    return batches


def _weighted_ce(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    per_sample = F.cross_entropy(logits, y, reduction="none")
    total = w.sum()
    return (per_sample * w).sum() / torch.where(total > 0, total, torch.ones_like(total))


def _sgd_update(
    params: list[torch.Tensor],
    grads: Sequence[torch.Tensor],
    bufs: list[torch.Tensor | None],
    cfg: TrainConfig,
) -> None:
    """PyTorch's SGD (dampening 0, no Nesterov), in place, shared by both paths."""
    with torch.no_grad():
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            if cfg.weight_decay:
                g = g.add(p, alpha=cfg.weight_decay)
            if cfg.momentum:
                if bufs[i] is None:
                    bufs[i] = g.detach().clone()
                else:
                    bufs[i].mul_(cfg.momentum).add_(g)
                g = bufs[i]
            p.sub_(g, alpha=cfg.lr)


def train_population(
    model_cfg: ModelConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    init: Sequence[State],
    cfg: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    path: str = "auto",
    max_models_per_launch: int | None = None,
    batch_seed: int = 0,
    progress: Progress | None = None,
    on_step: StepHook | None = None,
    augment: Augment | None = None,
) -> list[State]:
    """Train K models; return their final state dicts (on the CPU).

    images: (N, C, H, W) shared by every model; labels: (N,) class indices or (N, classes) soft
    labels; weights: (K, N) per-model sample weights; init: K initial state dicts;
    on_step: optional hook called after every update (see ``StepHook``);
    augment: optional transform of every minibatch before the forward (see ``Augment``).
    """
    device = torch.device(device)
    weights = torch.as_tensor(weights, dtype=torch.float32)
    if weights.ndim != 2 or weights.shape[1] != images.shape[0]:
        raise UserError(f"weights must be (K, {images.shape[0]}), got {tuple(weights.shape)}")
    if len(init) != weights.shape[0]:
        raise UserError(f"{weights.shape[0]} weight rows but {len(init)} initial states")
    if images.shape[0] == 0:
        raise UserError("cannot train on an empty image set")
    probe = build_model(model_cfg)
    bn = has_batch_statistics(probe)
    if path == "auto":
        path = choose_path(device, probe)
    if path == "batched" and bn:
        raise UserError("a model with BatchNorm cannot be trained with masking in the batched path")
    if bn and not torch.all((weights == 0) | (weights == 1)):
        raise UserError(
            "a model with BatchNorm needs 0/1 sample weights (left-out samples are dropped)"
        )
    schedule = batch_schedule(images.shape[0], cfg, batch_seed)
    x, y, w = images.to(device), labels.to(device), weights.to(device)
    if path == "loop":
        return [
            _train_one(
                model_cfg,
                x,
                y,
                w[k],
                init[k],
                cfg,
                device,
                schedule,
                bn,
                progress,
                None if on_step is None else partial(on_step, k),
                None if augment is None else partial(_for_model, augment, k),
            )
            for k in range(len(init))
        ]
    if path != "batched":
        raise UserError(f"unknown training path {path!r}: use auto, loop or batched")
    return _train_batched_chunks(
        model_cfg,
        x,
        y,
        w,
        init,
        cfg,
        device,
        schedule,
        max_models_per_launch,
        progress,
        on_step,
        augment,
    )


def _for_model(augment: Augment, k: int, xb: torch.Tensor, step: int) -> torch.Tensor:
    return augment(xb, step, k)


def _train_one(
    model_cfg: ModelConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    state: State,
    cfg: TrainConfig,
    device: torch.device,
    schedule: list[torch.Tensor] | None,
    bn: bool,
    progress: Progress | None,
    on_step: Callable[[int, State], None] | None = None,
    augment: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> State:
    model = build_model(model_cfg).to(device)
    model.load_state_dict(state)
    model.train()
    if bn:  # physically drop the left-out samples: batch statistics must not see them
        keep = torch.nonzero(w > 0).flatten()
        x, y, w = x[keep], y[keep], w[keep]
        schedule = batch_schedule(len(keep), cfg, 0) if schedule is not None else None
    params = [p for p in model.parameters()]
    bufs: list[torch.Tensor | None] = [None] * len(params)
    for step in range(cfg.steps):
        if schedule is None:
            xb, yb, wb = x, y, w
        else:
            idx = schedule[step].to(x.device)
            xb, yb, wb = x[idx], y[idx], w[idx]
        if augment is not None:
            xb = augment(xb, step)
        loss = _weighted_ce(model(xb), yb, wb)
        grads = torch.autograd.grad(loss, params)
        _sgd_update(params, grads, bufs, cfg)
        if progress is not None:
            progress(1)
        if on_step is not None:
            on_step(step + 1, model.state_dict())
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _train_batched_chunks(
    model_cfg: ModelConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    init: Sequence[State],
    cfg: TrainConfig,
    device: torch.device,
    schedule: list[torch.Tensor] | None,
    chunk: int | None,
    progress: Progress | None,
    on_step: StepHook | None = None,
    augment: Augment | None = None,
) -> list[State]:
    """Train in chunks of models; on CUDA out-of-memory, halve the chunk and retry it (a retried
    chunk calls ``on_step`` again for the steps it repeats)."""
    k_total = len(init)
    chunk = chunk or k_total
    out: list[State] = []
    start = 0
    while start < k_total:
        stop = min(k_total, start + chunk)
        try:
            out += _train_batched(
                model_cfg,
                x,
                y,
                w[start:stop],
                init[start:stop],
                cfg,
                device,
                schedule,
                progress,
                on_step,
                start,
                augment,
            )
            start = stop
        except torch.cuda.OutOfMemoryError:
            if chunk == 1:
                raise
            chunk = max(1, chunk // 2)
            torch.cuda.empty_cache()
    return out


def _train_batched(
    model_cfg: ModelConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    init: Sequence[State],
    cfg: TrainConfig,
    device: torch.device,
    schedule: list[torch.Tensor] | None,
    progress: Progress | None,
    on_step: StepHook | None = None,
    first_index: int = 0,
    augment: Augment | None = None,
) -> list[State]:
    from torch.func import functional_call, grad, stack_module_state, vmap

    base = build_model(model_cfg).to("meta")
    modules = []
    for state in init:
        m = build_model(model_cfg)
        m.load_state_dict(state)
        modules.append(m.to(device))
    params, buffers = stack_module_state(modules)
    names = list(params)
    flat = [params[n].detach().clone() for n in names]

    def loss_fn(p_list, buf, xb, yb, wb):
        logits = functional_call(base, ({**dict(zip(names, p_list, strict=True)), **buf},), (xb,))
        return _weighted_ce(logits, yb, wb)

    grad_fn = vmap(grad(loss_fn), in_dims=(0, 0, None, None, 0))
    # with augmentation every model sees its own transformed batch: (K, B, C, H, W)
    grad_fn_own = vmap(grad(loss_fn), in_dims=(0, 0, 0, None, 0))
    bufs: list[torch.Tensor | None] = [None] * len(flat)
    k = w.shape[0]
    for step in range(cfg.steps):
        if schedule is None:
            xb, yb, wb = x, y, w
        else:
            idx = schedule[step].to(x.device)
            xb, yb, wb = x[idx], y[idx], w[:, idx]
        if augment is None:
            grads = grad_fn(flat, buffers, xb, yb, wb)
        else:
            own = torch.stack([augment(xb, step, first_index + i) for i in range(k)])
            grads = grad_fn_own(flat, buffers, own, yb, wb)
        _sgd_update(flat, grads, bufs, cfg)
        if progress is not None:
            progress(k)
        if on_step is not None:
            for i in range(k):
                live = {n: flat[j][i] for j, n in enumerate(names)}
                on_step(
                    first_index + i, step + 1, {**live, **{n: b[i] for n, b in buffers.items()}}
                )
    states: list[State] = []
    for i in range(k):
        st = {n: flat[j][i].detach().cpu().clone() for j, n in enumerate(names)}
        st.update({n: b[i].detach().cpu().clone() for n, b in buffers.items()})
        states.append(st)
    return states


@torch.no_grad()
def evaluate_population(
    model_cfg: ModelConfig,
    states: Sequence[State],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    chunk_size: int = 1000,
    path: str = "auto",
) -> PopulationEval:
    """Per-sample losses, predictions and accuracy of every model on (images, labels)."""
    device = torch.device(device)
    probe = build_model(model_cfg)
    if path == "auto":
        path = choose_path(device, probe)
    labels_dev = labels.to(device)
    losses, preds = [], []
    if path == "loop":
        model = probe.to(device).eval()
        for state in states:
            model.load_state_dict(state)
            lk, pk = [], []
            for s in range(0, images.shape[0], chunk_size):
                logits = model(images[s : s + chunk_size].to(device))
                yb = labels_dev[s : s + chunk_size]
                lk.append(F.cross_entropy(logits, yb, reduction="none"))
                pk.append(logits.argmax(1))
            losses.append(torch.cat(lk))
            preds.append(torch.cat(pk))
        loss_t, pred_t = torch.stack(losses), torch.stack(preds)
    else:
        from torch.func import functional_call, vmap

        base = build_model(model_cfg).to("meta")
        stacked = {n: torch.stack([s[n] for s in states]).to(device) for n in states[0]}

        def logits_fn(st, xb):
            return functional_call(base, (st,), (xb,))

        batched = vmap(logits_fn, in_dims=(0, None))
        for s in range(0, images.shape[0], chunk_size):
            logits = batched(stacked, images[s : s + chunk_size].to(device))  # (K, B, C)
            yb = labels_dev[s : s + chunk_size]
            k, b, c = logits.shape
            ce = F.cross_entropy(logits.reshape(k * b, c), yb.repeat(k), reduction="none")
            losses.append(ce.view(k, b))
            preds.append(logits.argmax(-1))
        loss_t, pred_t = torch.cat(losses, 1), torch.cat(preds, 1)
    acc = (pred_t == labels_dev.unsqueeze(0)).float().mean(1)
    return PopulationEval(loss_t.float().cpu(), pred_t.cpu(), acc.cpu())


def train_model(
    model_cfg: ModelConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    init: State | None = None,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    on_step: Callable[[int, State], None] | None = None,
) -> nn.Module:
    """Convenience: one model trained on all images, returned as a module in eval mode.
    ``on_step(steps_done, live_state)`` is called after every update (see ``StepHook``)."""
    state = init if init is not None else init_state(model_cfg, seed)
    weights = torch.ones(1, images.shape[0])
    (final,) = train_population(
        model_cfg,
        images,
        labels,
        weights,
        [state],
        cfg,
        device=device,
        batch_seed=seed,
        progress=progress,
        on_step=None if on_step is None else (lambda _k, step, st: on_step(step, st)),
    )
    model = build_model(model_cfg)
    model.load_state_dict(final)
    return model.to(device).eval()
