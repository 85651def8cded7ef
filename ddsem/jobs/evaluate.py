"""Job ``evaluate``: retrained test accuracy of a distilled set across architectures and
protocols (the cross-architecture table of the analysis paper's appendix F).

One unit is one (architecture, protocol): ``runs`` models trained on the set and tested on the
real test images; each unit is stored complete, so a re-run reads what is done and trains only
what is missing. Protocols (``ddsem.distill.evaluate``): ``paper`` (the analysis paper's 300
full-batch steps), ``dc`` (DC's 300 epochs, lr step, weight decay) and ``dsa`` (DSA/DM/MTT's
1000 epochs with DSA augmentation and, for a set that carries one, its learned lr). A unit's
stored key names its protocol, phases, augmentation and lr source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ddsem.config import ModelConfig
from ddsem.distill import PROTOCOLS as _BASE_PROTOCOLS
from ddsem.errors import UserError
from ddsem.jobs.common import (
    DataSource,
    check,
    load_data,
    not_empty,
    real_space,
    resolve_set,
    seed_number,
    whiten,
)
from ddsem.jobs.distill import positive_number

# paper, dc, dsa (ddsem.distill.evaluate.EVAL_PROTOCOLS, named here without importing torch)
PROTOCOLS: tuple[str, ...] = tuple(dict.fromkeys((*_BASE_PROTOCOLS, "dsa")))
DEFAULT_PROTOCOLS = ("paper", "dc")

if TYPE_CHECKING:
    import numpy as np

    from ddsem.config import TrainConfig
    from ddsem.data import ImageData
    from ddsem.db.sets import SetSummary
    from ddsem.jobs import Workspace


@dataclass(frozen=True)
class EvaluateRequest:
    set_name: str | None = None  # the set by name; else the newest of method; else the only set
    method: str | None = None
    archs: tuple[str, ...] = ("convnet",)  # convnet, alexnet, vgg11, resnet18, vgg11bn, ...
    # paper (300 full-batch steps), dc (300 epochs), dsa (1000 epochs, DSA, learned lr)
    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS
    runs: int = 5  # models per architecture and protocol (seeds)
    width: int = ModelConfig.width  # ConvNet channels; other architectures scale by width/128
    test_limit: int | None = None  # class-stratified test subset (None: the whole test split)
    epochs: int | None = None  # dc and dsa: epochs instead of theirs (300, 1000); paper: unchanged
    data: DataSource = None
    seed: int = 0  # run r of every unit starts from seed * 1000 + r

    def __post_init__(self) -> None:
        archs = tuple(a.strip().lower() for a in self.archs if a.strip())
        protocols = tuple(p.strip().lower() for p in self.protocols if p.strip())
        object.__setattr__(self, "archs", archs)
        object.__setattr__(self, "protocols", protocols)
        check(bool(archs), "--arch is empty")
        for p in protocols:
            check(p in PROTOCOLS, f"unknown evaluation protocol {p!r}: use {', '.join(PROTOCOLS)}")
        check(bool(protocols), "--protocol is empty")
        for value, what in (
            (self.runs, "--runs"),
            (self.width, "--width"),
            (self.test_limit, "--test-limit"),
            (self.epochs, "--epochs"),
        ):
            positive_number(value, what)
        seed_number(self.seed)
        not_empty(self.set_name, "--set")
        not_empty(self.method, "--method")

    @property
    def seeds(self) -> list[int]:
        return [self.seed * 1000 + r for r in range(self.runs)]


@dataclass
class EvalUnit:
    arch: str
    protocol: str
    model_cfg: ModelConfig
    phases: list[TrainConfig]
    augmentation: str  # the DSA strategy of every training batch, or "none"
    params: dict[str, Any]  # the stored row's key
    stored: dict[str, Any] | None  # {"accuracies", "mean", "std"} when done


@dataclass
class EvaluatePlan:
    request: EvaluateRequest
    summary: SetSummary
    images: np.ndarray  # the set, float32 N x 3 x 32 x 32 (normalised)
    labels: np.ndarray
    data: ImageData
    test_idx: np.ndarray
    units: list[EvalUnit]
    zca: Any = None  # a set in ZCA space: its transform (jobs.common.real_space), else None

    @property
    def missing(self) -> list[EvalUnit]:
        return [u for u in self.units if u.stored is None]


def plan(ws: Workspace, request: EvaluateRequest) -> EvaluatePlan:
    from dataclasses import replace

    from ddsem.config import DCEvalConfig, DSAEvalConfig, TrainConfig, to_dict
    from ddsem.data import stratified_indices
    from ddsem.db import distill as store
    from ddsem.db.sets import set_tensors
    from ddsem.distill.evaluate import protocol_augmentation, protocol_lr, protocol_phases
    from ddsem.models import reference_config

    r = request
    base = {a: reference_config(a, ModelConfig(width=r.width)) for a in r.archs}
    summary = resolve_set(ws.db, r.set_name, r.method)
    images, labels = set_tensors(ws.db, summary.id)
    d = load_data(r.data, summary.dataset)
    if tuple(images.shape[1:]) != (3, 32, 32):
        raise UserError(f"set {summary.name!r} has images of shape {images.shape[1:]}, not 3x32x32")
    test_idx = stratified_indices(d.test_y, r.test_limit, 0)
    zca = real_space(ws.db, summary)  # a ZCA set is tested on test images whitened alike
    dsa_lr, dsa_lr_source = protocol_lr(DSAEvalConfig(), summary.synthetic_lr)
    dc, dsa = DCEvalConfig(), replace(DSAEvalConfig(), lr=dsa_lr)
    if r.epochs is not None:
        dc, dsa = replace(dc, epochs=r.epochs), replace(dsa, epochs=r.epochs)
    units = []
    for a in r.archs:
        cfg = ModelConfig(**{**to_dict(base[a]), "num_classes": d.num_classes})
        for p in r.protocols:
            phases = protocol_phases(p, len(labels), paper=TrainConfig(), dc=dc, dsa=dsa)
            augmentation = protocol_augmentation(p, dsa)
            params = {
                "set_id": summary.id, "set": summary.name, "arch": a, "model": to_dict(cfg),
                "protocol": p, "phases": [to_dict(ph) for ph in phases], "seeds": r.seeds,
                "test_limit": r.test_limit, "dataset": summary.dataset,
                "augmentation": augmentation,
                "lr_source": dsa_lr_source if p == "dsa" else "config",
            }  # fmt: skip
            if zca is not None:  # (a normalised set's key is unchanged)
                params["zca"] = summary.zca
            found = store.find_evaluation(ws.db, params)
            units.append(EvalUnit(a, p, cfg, phases, augmentation, params, found))
    return EvaluatePlan(r, summary, images, labels, d, test_idx, units, zca)


@dataclass
class EvaluateResult:
    set_name: str
    method: str
    num_images: int
    runs: int
    test_images: int
    archs: tuple[str, ...]
    protocols: tuple[str, ...]
    results: dict[tuple[str, str], dict[str, Any]]  # (arch, protocol) -> accuracies, mean, std
    trained: int  # units trained by this run (the rest were stored)
    # protocol -> {"steps", "lr", "lr_source", "weight_decay", "augmentation"}: what it ran
    # (for the table; the stored key of each unit holds the same)
    protocol_info: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "set": self.set_name,
            "method": self.method,
            "runs": self.runs,
            "test_images": self.test_images,
            "results": [
                {"arch": a, "protocol": p, **self.results[(a, p)]}
                for a in self.archs
                for p in self.protocols
            ],
        }


def run(ws: Workspace, request: EvaluateRequest) -> EvaluateResult:
    """Train and store the missing units; read the others."""
    import torch

    from ddsem.data import normalize
    from ddsem.db import distill as store
    from ddsem.distill.evaluate import evaluate_set, total_steps

    p = plan(ws, request)
    s, d = p.summary, p.data
    todo = p.missing
    if todo:
        ws.db.require_writable()  # one line now, not after the training
    results = {(u.arch, u.protocol): u.stored for u in p.units if u.stored is not None}
    images, labels = torch.from_numpy(p.images), torch.from_numpy(p.labels)
    test_x = whiten(p.zca, normalize(d.test_x[p.test_idx]))
    test_y = torch.from_numpy(d.test_y[p.test_idx])
    device = ws.torch_device()
    steps = sum(total_steps(u.phases, request.runs) for u in todo)
    with ws.progress.phase(f"evaluate {s.name}", steps) as advance:
        for u in todo:
            res = evaluate_set(
                images, labels, u.model_cfg, u.phases, request.seeds, test_x, test_y,
                device=device, progress=advance, augmentation=u.augmentation,
            )  # fmt: skip
            result = {"accuracies": res.accuracies, "mean": res.mean, "std": res.std}
            store.add_evaluation(ws.db, u.params, result)
            results[(u.arch, u.protocol)] = result
    info = {}
    for u in p.units:
        info.setdefault(u.protocol, {
            "steps": sum(ph.steps for ph in u.phases), "lr": u.phases[0].lr,
            "lr_source": u.params["lr_source"], "weight_decay": u.phases[0].weight_decay,
            "augmentation": u.augmentation,
        })  # fmt: skip
    return EvaluateResult(
        s.name, s.method, s.num_images, request.runs, len(p.test_idx), request.archs,
        request.protocols, results, len(todo), info,
    )  # fmt: skip
