"""Job ``distill experts``: the expert trajectories trajectory matching (TM) draws from.

Experts trained alike (same real pool, model and training config) form a pool; each expert is
stored, complete, as soon as it is trained, so a re-run (or a run after Ctrl-C) trains only the
missing ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ddsem.config import ExpertConfig, ModelConfig
from ddsem.jobs.common import DataSource, convnet_fits, positive, seed_number
from ddsem.jobs.distill import positive_number, real_pool_indices, zca_space_key

if TYPE_CHECKING:
    import numpy as np

    from ddsem.data import ImageData
    from ddsem.jobs import Workspace


@dataclass(frozen=True)
class ExpertsRequest:
    num_experts: int = ExpertConfig.num_experts
    epochs: int = ExpertConfig.epochs
    width: int = ModelConfig.width
    depth: int = ModelConfig.depth
    dataset: str = "cifar10"
    data: DataSource = None
    real_limit: int | None = None  # train on a class-stratified subset of the real images
    lr: float = ExpertConfig.lr
    batch_size: int = ExpertConfig.batch_size
    test_limit: int | None = None  # test images for each expert's final accuracy (None: all)
    seed: int = 0  # expert i starts from seed * 100003 + i
    # Train on ZCA-whitened images (MTT buffer.py --zca)? None: on CIFAR-10, for the ZCA TM
    # runs of MTT's ipc 1 and 10 (config.TM_ZCA); off elsewhere
    zca: bool | None = None

    @property
    def uses_zca(self) -> bool:
        return self.dataset == "cifar10" if self.zca is None else bool(self.zca)

    def __post_init__(self) -> None:
        for value, what in (
            (self.num_experts, "--num-experts"), (self.epochs, "--epochs"),
            (self.width, "--width"), (self.depth, "--depth"), (self.real_limit, "--real-limit"),
            (self.batch_size, "--batch-size"), (self.test_limit, "--test-limit"),
        ):  # fmt: skip
            positive_number(value, what)
        convnet_fits(self.width, self.depth)
        seed_number(self.seed)
        positive(self.lr, "--lr")

    def config(self) -> ExpertConfig:
        return replace(
            ExpertConfig(),
            num_experts=self.num_experts,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
        )


@dataclass
class ExpertsPlan:
    request: ExpertsRequest
    key: str  # the pool: a hash of pool_params
    pool_params: dict[str, Any]
    cfg: ExpertConfig
    model_cfg: ModelConfig
    data: ImageData
    pool: np.ndarray  # train indices the experts learn from
    have: tuple[int, ...]  # expert indices stored
    todo: tuple[int, ...]  # expert indices to train


def plan(ws: Workspace, request: ExpertsRequest) -> ExpertsPlan:
    from ddsem.config import to_dict
    from ddsem.db import distill as store
    from ddsem.db.codec import config_hash
    from ddsem.distill.common import check_model

    r = request
    cfg = r.config()
    data, pool = real_pool_indices(r.data, r.dataset, r.real_limit)
    model_cfg = ModelConfig(width=r.width, depth=r.depth, num_classes=data.num_classes)
    check_model(model_cfg)
    training = {k: v for k, v in to_dict(cfg).items() if k != "num_experts"}
    pool_params = {
        "dataset": r.dataset, "real_limit": r.real_limit, "model": to_dict(model_cfg),
        "training": training,
    }  # fmt: skip
    if r.uses_zca:  # only when on: pools made before ZCA keep their key
        pool_params["zca"] = zca_space_key(data)
    key = config_hash(pool_params)
    have = store.expert_indices(ws.db, key)
    todo = tuple(i for i in range(cfg.num_experts) if i not in have)
    return ExpertsPlan(r, key, pool_params, cfg, model_cfg, data, pool, tuple(sorted(have)), todo)


@dataclass
class ExpertsResult:
    pool: str
    num_experts: int  # asked for
    epochs: int
    stored: int  # experts in the pool now
    trained: tuple[int, ...]  # indices trained by this run
    accuracies: tuple[float | None, ...]  # their final test accuracies

    @property
    def mean_accuracy(self) -> float | None:
        known = [a for a in self.accuracies if a is not None]
        return sum(known) / len(known) if known else None

    def as_json(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "experts": self.stored,
            "epochs": self.epochs,
            "trained": list(self.trained),
            "mean_test_accuracy": self.mean_accuracy,
        }


def run(ws: Workspace, request: ExpertsRequest) -> ExpertsResult:
    """Train the missing experts; each is stored as it finishes."""
    p = plan(ws, request)
    cfg = p.cfg
    if not p.todo:
        return ExpertsResult(p.key, cfg.num_experts, cfg.epochs, len(p.have), (), ())
    ws.db.require_writable()  # one line now, not after the first expert's training
    import torch

    from ddsem.data import normalize, stratified_indices
    from ddsem.db import distill as store
    from ddsem.distill.experts import train_expert
    from ddsem.jobs.common import fit_zca, whiten, zca_compute

    device = ws.torch_device()
    d = p.data
    zca = None
    if "zca" in p.pool_params:  # MTT buffer.py --zca: train and test images whitened
        zca = zca_compute(fit_zca(ws.db, d, device=device, note=ws.progress.note))
    x = whiten(zca, normalize(d.train_x[p.pool]))
    y = torch.from_numpy(d.train_y[p.pool])
    test_idx = stratified_indices(d.test_y, request.test_limit, 0)
    test = (whiten(zca, normalize(d.test_x[test_idx])), torch.from_numpy(d.test_y[test_idx]))
    trained: list[int] = []
    accuracies: list[float | None] = []
    total = len(p.todo) * cfg.epochs
    with ws.progress.phase(f"experts ({len(p.todo)} x {cfg.epochs} epochs)", total) as advance:
        for i in p.todo:
            seed = request.seed * 100_003 + i
            trajectory, accuracy = train_expert(
                p.model_cfg, cfg, x, y, seed, device=device, test=test, progress=advance
            )
            store.add_expert(ws.db, p.key, p.pool_params, i, seed, trajectory, accuracy)
            trained.append(i)
            accuracies.append(accuracy)
    stored = len(p.have) + len(trained)
    return ExpertsResult(
        p.key, cfg.num_experts, cfg.epochs, stored, tuple(trained), tuple(accuracies)
    )
