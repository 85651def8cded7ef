"""Job ``distill``: make a distilled set with DM, GM (DC), TM (MTT) or BPTT and store it with its
provenance.

Everything is checked before the first write (``plan``); a run checkpoints every
``checkpoint_every`` iterations into its DistillRun row, and ``resume`` continues it exactly
(same images, optimiser state and random stream as an uninterrupted run)::

    ws = Workspace.open("runs.db")
    result = distill.run(ws, DistillRequest("dm", ipc=1, width=8, iterations=10))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ddsem.config import BPTTConfig, DMConfig, GMConfig, ModelConfig, TMConfig
from ddsem.distill import INITS, check_method
from ddsem.errors import UserError
from ddsem.jobs.common import (
    DataSource,
    check,
    config_diff,
    convnet_fits,
    finite,
    load_data,
    not_empty,
    positive,
    seed_number,
)

if TYPE_CHECKING:
    import numpy as np

    from ddsem.data import ImageData
    from ddsem.db.distill import DistillRunInfo, ExpertPool
    from ddsem.db.sets import SetSummary
    from ddsem.jobs import Workspace

CONFIGS: dict[str, type] = {"dm": DMConfig, "gm": GMConfig, "tm": TMConfig, "bptt": BPTTConfig}

Params = tuple[tuple[str, Any], ...]


def positive_number(value: int | None, what: str) -> None:
    """``value`` is None (not given) or at least 1 (counts: images, iterations, widths)."""
    finite(value, what)
    if value is not None and value < 1:
        raise UserError(f"{what} must be a positive number, got {value}")


# -- --param KEY=VALUE ----------------------------------------------------------------------------


def parse_params(items: Iterable[str] | None) -> Params:
    """``["syn_steps=10", "lr-lr=1e-6"]`` -> ``(("syn_steps", "10"), ("lr_lr", "1e-6"))``: the
    text of ``--param``, split; the request types each value by its config field."""
    out = []
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--param takes KEY=VALUE, got {item!r}")
        out.append((key, text.strip()))
    return tuple(out)


def typed_params(params: Params | Mapping[str, Any], method: str) -> Params:
    """Overrides of the method's config fields with typed values: a text value (from the command
    line) becomes the field's type, ``none`` becomes None where the field allows it."""
    fields = CONFIGS[method].__dataclass_fields__
    items = params.items() if isinstance(params, Mapping) else params
    out: dict[str, Any] = {}
    for raw_key, raw in items:
        key = str(raw_key).strip().replace("-", "_")
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise UserError(f"{method} has no parameter {key!r}; its parameters are: {known}")
        kind = str(fields[key].type)
        value: Any = raw
        text = raw.strip() if isinstance(raw, str) else str(raw)
        if isinstance(raw, str):
            try:
                if text.lower() == "none" and "None" in kind:
                    value = None
                elif kind.startswith("int"):
                    value = int(text)
                elif kind.startswith("float"):
                    value = float(text)
                else:
                    value = text
            except ValueError:
                raise UserError(f"--param {key} needs a {kind.split()[0]}, got {text!r}") from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            finite(value, f"--param {key}")
            if value < 0:
                raise UserError(f"--param {key} must not be negative, got {text}")
            if isinstance(value, int) and value < 1:  # every integer field is a count
                raise UserError(f"--param {key} must be at least 1, got {text}")
        out[key] = value
    return tuple(out.items())


# -- the request ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistillRequest:
    """One distillation. ``iterations``, ``lr_img`` and ``batch_real`` None: the method's
    published values; ``params``: any other field of the method's config (DMConfig, GMConfig,
    TMConfig, BPTTConfig), as ``((key, value), ...)`` or a dict, values typed or text."""

    method: str | None
    ipc: int = 10
    dataset: str = "cifar10"
    data: DataSource = None
    iterations: int | None = None
    init: str = "real"
    seed: int = 0
    name: str | None = None  # None: METHOD-ipcN
    width: int = ModelConfig.width
    depth: int = ModelConfig.depth
    lr_img: float | None = None
    batch_real: int | None = None
    real_limit: int | None = None  # a class-stratified subset of the real training images
    checkpoint_every: int = 100
    stop_after: int | None = None  # stop (with a checkpoint) after this many iterations
    resume: bool = False  # continue the unfinished run of the set
    overwrite: bool = False  # replace a stored set of that name and any unfinished run
    params: Params = ()
    # TM in ZCA space (MTT's --zca)? None: as MTT's published runs (CIFAR-10 at ipc 1 and 10,
    # config.TM_ZCA); True for another method is refused (ddsem whitens only for TM)
    zca: bool | None = None

    def __post_init__(self) -> None:
        if self.method is None:
            raise UserError(
                "name a method: --method dm|gm|tm|bptt (TM needs `ddsem distill experts` first)"
            )
        method = check_method(self.method)
        object.__setattr__(self, "method", method)
        check(
            self.init in INITS,
            f"unknown initialisation {self.init!r}: use one of {', '.join(INITS)}",
        )
        for value, what in (
            (self.ipc, "--ipc"), (self.iterations, "--iterations"), (self.width, "--width"),
            (self.depth, "--depth"), (self.batch_real, "--batch-real"),
            (self.real_limit, "--real-limit"), (self.checkpoint_every, "--checkpoint-every"),
            (self.stop_after, "--stop-after"),
        ):  # fmt: skip
            positive_number(value, what)
        convnet_fits(self.width, self.depth)
        seed_number(self.seed)
        positive(self.lr_img, "--lr-img")
        not_empty(self.name, "--name")
        fields = CONFIGS[method].__dataclass_fields__
        unknown = [k for k in self._options() if k not in fields]
        if unknown:
            names = ", ".join("--" + k.replace("_", "-") for k in unknown)
            raise UserError(f"{names} does not apply to method {method}")
        object.__setattr__(self, "params", typed_params(self.params, method))
        iterations = self.method_defaults().iterations
        check(iterations >= 1, f"iterations must be positive, got {iterations}")
        check(
            not (self.zca and method != "tm"),
            f"--zca is for trajectory matching (MTT's --zca); {method} distils in the "
            "normalised space and has no ZCA transform: leave --zca out",
        )

    @property
    def uses_zca(self) -> bool:
        """Whether the run distils in ZCA space (``zca``, else MTT's choice for the ipc)."""
        if self.method != "tm":
            return False
        if self.zca is not None:
            return bool(self.zca)
        from ddsem.distill.tm import zca_default

        return zca_default(self.dataset, self.ipc)

    def _options(self) -> dict[str, Any]:
        given = {
            "iterations": self.iterations,
            "lr_img": self.lr_img,
            "batch_real": self.batch_real,
        }
        return {k: v for k, v in given.items() if v is not None}

    @property
    def set_name(self) -> str:
        return self.name or f"{self.method}-ipc{self.ipc}"

    def method_defaults(self) -> Any:
        """The method's published config with this request's values, before the per-ipc
        resolution (``method_config``)."""
        return replace(CONFIGS[self.method](), **{**self._options(), **dict(self.params)})


def method_config(request: DistillRequest) -> Any:
    """The method's config fully resolved for the request's ipc (TM's table, GM's loops)."""
    from ddsem.distill import augment

    cfg = request.method_defaults()
    if hasattr(cfg, "dsa_strategy"):
        augment.parse_strategy(cfg.dsa_strategy)
    if request.method == "tm":
        from ddsem.distill.tm import resolve

        cfg = resolve(cfg, request.ipc, request.uses_zca)
    if request.method == "gm":
        from ddsem.distill.gm import loops_for

        outer, inner = loops_for(request.ipc, cfg)
        cfg = replace(cfg, outer_loop=outer, inner_loop=inner)
    return cfg


def zca_space_key(data: ImageData) -> dict[str, Any]:
    """What names a ZCA space in stored keys (experts' pools, run configs): eps and the hash of
    the training pixels the transform is fitted on (``ddsem.data.zca.fingerprint``)."""
    from ddsem.data import zca as Z

    return {"eps": Z.EPS, "fingerprint": Z.fingerprint(data.train_x)}


def real_pool_indices(
    data: DataSource, dataset: str, real_limit: int | None, seed: int = 0
) -> tuple[ImageData, np.ndarray]:
    """(the data set, the indices of the training images used as the real pool: all of them,
    or a class-stratified subset of ``real_limit``)."""
    from ddsem.data import stratified_indices

    images = load_data(data, dataset)
    return images, stratified_indices(images.train_y, real_limit, seed)


# -- plan -----------------------------------------------------------------------------------------


@dataclass
class DistillPlan:
    request: DistillRequest
    set_name: str
    cfg: Any  # the method's config, resolved for the ipc
    model_cfg: ModelConfig
    data: ImageData
    pool: np.ndarray  # train indices of the real pool
    run_config: dict[str, Any]  # what a resumed run must repeat (stored with the run)
    expert_pool: ExpertPool | None  # TM: the experts drawn from
    expert_epochs: int | None  # TM: trajectory rows a run needs
    previous: DistillRunInfo | None  # the unfinished run: resumed, or replaced by overwrite

    @property
    def start(self) -> int:
        """The iteration the run begins at."""
        return self.previous.iteration if self.request.resume and self.previous else 0


def plan(ws: Workspace, request: DistillRequest) -> DistillPlan:
    """What the run will do, and every refusal, before anything is written."""
    from ddsem.config import to_dict
    from ddsem.db import distill as store
    from ddsem.distill.common import check_model

    r = request
    name = r.set_name
    cfg = method_config(r)
    data, pool = real_pool_indices(r.data, r.dataset, r.real_limit)
    model_cfg = ModelConfig(width=r.width, depth=r.depth, num_classes=data.num_classes)
    check_model(model_cfg)
    pool_y = data.train_y[pool]
    counts = [int((pool_y == c).sum()) for c in range(data.num_classes)]
    smallest = min(range(len(counts)), key=lambda c: counts[c])
    if r.ipc > counts[smallest]:
        raise UserError(
            f"--ipc {r.ipc} is more than class {data.classes[smallest]!r} has "
            f"({counts[smallest]} real training images{' in --real-limit' if r.real_limit else ''})"
        )
    run_config = {
        "method": r.method, "ipc": r.ipc, "init": r.init, "seed": r.seed, "dataset": r.dataset,
        "real_limit": r.real_limit, "model": to_dict(model_cfg), "params": to_dict(cfg),
    }  # fmt: skip

    db = ws.db
    expert_pool, need = None, None
    zca_key = zca_space_key(data) if r.uses_zca else None
    if zca_key is not None:
        run_config["zca"] = zca_key  # only when on: runs started before ZCA still resume
    if r.method == "tm":
        from ddsem.distill.tm import epochs_needed

        pools = store.expert_pools(
            db,
            {"dataset": r.dataset, "real_limit": r.real_limit, "model": to_dict(model_cfg),
             "zca": zca_key},
        )  # fmt: skip
        limit_flag = f" --real-limit {r.real_limit}" if r.real_limit else ""
        zca_flag = " --zca" if zca_key is not None else " --no-zca"
        make = (
            f"ddsem distill experts --width {r.width} --depth {r.depth} "
            f"--dataset {r.dataset}{limit_flag}{zca_flag}"
        )
        space = "ZCA-whitened" if zca_key is not None else "normalised (not ZCA)"
        if not pools:
            raise UserError(
                f"trajectory matching needs expert trajectories for a width-{r.width} depth-"
                f"{r.depth} ConvNet on {space} {r.dataset}; make them first with `{make}`"
                + ("" if r.zca is not None else " (or choose the space with --zca/--no-zca)")
            )
        expert_pool = pools[0]
        need = epochs_needed(cfg)
        if expert_pool.epochs < need:
            raise UserError(
                f"the experts were trained for {expert_pool.epochs} epochs; this run needs {need} "
                f"(max start epoch {cfg.max_start_epoch} + expert epochs {cfg.expert_epochs} - 1): "
                f"make longer ones with `{make} --epochs {max(need, 50)}`"
            )
        # a resumed run must draw from the same experts
        run_config["experts"] = {"pool": expert_pool.key, "count": expert_pool.count}

    previous = store.unfinished_run(db, name)
    if r.resume:
        if previous is None:
            done = " (that set is complete)" if store.set_exists(db, name) else ""
            raise UserError(
                f"nothing to resume: no unfinished distillation run for set {name!r}{done}"
            )
        if previous.config != run_config:
            raise UserError(
                f"--resume with a different configuration than the unfinished run of {name!r}: "
                f"{config_diff(previous.config, run_config)}. Repeat its options, or start over "
                f"with --overwrite"
            )
    elif previous is not None and not r.overwrite:
        raise UserError(
            f"an unfinished {previous.method} run for set {name!r} stopped at iteration "
            f"{previous.iteration}: pass --resume to continue it or --overwrite to start over"
        )
    if store.set_exists(db, name) and not r.overwrite:
        raise UserError(f"a distilled set named {name!r} exists; pass --overwrite or --name")
    return DistillPlan(
        r, name, cfg, model_cfg, data, pool, run_config, expert_pool, need, previous
    )  # fmt: skip


# -- run ------------------------------------------------------------------------------------------


@dataclass
class DistillResult:
    set_name: str
    method: str
    ipc: int
    finished: bool  # False: stopped (stop_after) with a checkpoint to resume from
    iteration: int  # iterations done in total
    iterations: int  # iterations configured
    wall_seconds: float
    resumed_from: int | None  # the iteration a resumed run continued at
    synthetic_lr: float | None  # TM's learned learning rate
    summary: SetSummary | None  # the stored set, when finished

    def as_json(self) -> dict[str, Any]:
        """The stored set (as ``ddsem sets show --json``); a stopped run: where it stopped."""
        if self.summary is not None:
            return self.summary.as_json()
        return {
            "set": self.set_name,
            "method": self.method,
            "finished": False,
            "iteration": self.iteration,
            "iterations": self.iterations,
        }


def run(ws: Workspace, request: DistillRequest) -> DistillResult:
    """Distil (or continue an unfinished run), checkpointing as it goes; store the set when the
    last iteration is done."""
    from ddsem.db import claims

    plan(ws, request)  # refuse bad requests before claiming anything
    ws.db.require_writable()  # a read-only database: one line now, not after the distillation
    name = request.set_name
    owner, key = claims.new_owner(), f"distill:{name}"
    if not claims.claim(ws.db, key, owner):
        others = ", ".join(claims.held_by_others(ws.db, key, owner)) or "another process"
        raise UserError(
            f"set {name!r} is being distilled right now by {others}: wait for it to finish "
            "(a run that was killed is taken over by the next one, with --resume)"
        )
    try:  # planned again under the claim: what the other process stored is seen now
        return _distill(ws, request, plan(ws, request))
    finally:
        claims.release(ws.db, key, owner)


def _distill(ws: Workspace, request: DistillRequest, p: DistillPlan) -> DistillResult:
    import numpy as np
    import torch

    from ddsem.db import distill as store
    from ddsem.distill import make_distiller
    from ddsem.distill.common import Checkpoint, RealData, initial_set, restore
    from ddsem.distill.common import run as iterate

    r, db, cfg, name = request, ws.db, p.cfg, p.set_name
    device = ws.torch_device()
    pool_y = p.data.train_y[p.pool]
    real = RealData(p.data.train_x[p.pool], pool_y, p.data.num_classes, device)
    generator = torch.Generator().manual_seed(r.seed)
    start = initial_set(real, r.ipc, r.init, generator)
    zca_info = None
    if r.uses_zca:  # MTT --zca: the real images (and so a real initialisation) are whitened
        from ddsem.jobs.common import fit_zca, zca_compute

        arrays = fit_zca(db, p.data, device=device, note=ws.progress.note)
        zca_info = arrays.info()
        if r.init == "real":
            with torch.no_grad():
                start.images = zca_compute(arrays).forward(start.images)
    experts = None
    if p.expert_pool is not None:
        loaded = store.load_experts(db, p.expert_pool.key, p.expert_epochs)
        experts = [torch.from_numpy(t) for t in loaded]
    distiller = make_distiller(
        r.method, cfg, p.model_cfg, start, real=real, experts=experts, ipc=r.ipc, device=device
    )
    first, wall, resumed_from = 0, 0.0, None
    if r.resume and p.previous is not None:
        arrays = store.load_checkpoint(db, p.previous.id)
        if arrays is not None:
            checkpoint = Checkpoint.from_arrays(arrays)
            restore(distiller, generator, checkpoint)
            first, wall = checkpoint.iteration, checkpoint.wall_seconds
        run_info, resumed_from = p.previous, first
        ws.progress.note(
            f"resuming {r.method} run for {name!r} at iteration {first} of {cfg.iterations}"
        )
    else:
        replace_id = p.previous.id if p.previous is not None else None
        run_info = store.start_distill_run(db, name, r.method, p.run_config, replace=replace_id)

    def save(checkpoint: Checkpoint) -> None:
        store.save_checkpoint(
            db, run_info.id, checkpoint.iteration, checkpoint.wall_seconds, checkpoint.to_arrays()
        )

    left = cfg.iterations - first
    todo = left if r.stop_after is None else min(r.stop_after, left)
    with ws.progress.phase(f"distill {r.method} ipc {r.ipc}", todo) as advance:
        outcome = iterate(
            distiller, generator, start=first, total=cfg.iterations, wall_offset=wall,
            checkpoint_every=r.checkpoint_every, on_checkpoint=save, stop_after=r.stop_after,
            progress=advance,
        )  # fmt: skip
    result = DistillResult(
        name, r.method, r.ipc, outcome.finished, outcome.iteration, cfg.iterations,
        outcome.wall_seconds, resumed_from, distiller.synthetic_lr, None,
    )  # fmt: skip
    if not outcome.finished:
        return result
    images = distiller.images.detach().cpu().numpy()
    if not np.isfinite(images).all():  # a set of NaNs would fail every job that trains on it
        loss = outcome.losses[-1] if outcome.losses else distiller.last_loss
        raise UserError(
            f"the {r.method} distillation diverged: its images are not finite after iteration "
            f"{outcome.iteration} (last loss {loss}), so no set {name!r} was stored; lower "
            "--lr-img and start again with --overwrite"
        )
    provenance = {
        "method": r.method,
        "config": p.run_config,
        "iterations": outcome.iteration,
        "wall_seconds": round(outcome.wall_seconds, 3),
        "seed": r.seed,
        "init": r.init,
        "init_real_indices": [int(p.pool[i]) for i in start.real_indices]
        if start.real_indices
        else None,
        "data_source": p.data.source,
        "device": str(device),
        "final_loss": outcome.losses[-1] if outcome.losses else distiller.last_loss,
    }
    if p.expert_pool is not None:
        provenance["experts"] = p.run_config["experts"]
    if zca_info is not None:  # add_distilled_set links the set to this transform
        provenance["zca"] = zca_info
    result.summary = store.finish_distill_run(
        db, run_info.id, name=name, method=r.method,
        images=images, labels=distiller.labels.cpu().numpy(),
        dataset=r.dataset, synthetic_lr=distiller.synthetic_lr, provenance=provenance,
        iteration=outcome.iteration, wall_seconds=outcome.wall_seconds, overwrite=r.overwrite,
    )  # fmt: skip
    return result
