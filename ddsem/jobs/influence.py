"""Job ``influence``: exact leave-one-out influence of a distilled set's images on real test
images (paper section 5.1), computed and stored resumably; and the reads of ``influence show``.

For every seed, N+1 models train from one stored initial state (the reference and one per
distilled image); each chunk of trained models is one transaction, so a killed run resumes
where it stopped, and the finish (matrix, top-k table, status "complete") is another. A run of
(set, seed, context) with another configuration is refused unless ``overwrite``.

    ws = Workspace.open("runs.db")
    result = influence.run(ws, InfluenceRequest(method="bptt", seeds=(0, 1), data="cifar/"))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ddsem.config import ESTIMATORS, EstimatorConfig, InfluenceConfig, ModelConfig, TrainConfig
from ddsem.errors import UserError
from ddsem.jobs.common import (
    DataSource,
    check,
    convnet_fits,
    in_range,
    load_data,
    not_empty,
    positive,
    real_space,
    resolve_set,
    seed_number,
    unique_ints,
    whiten,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ddsem.data import ImageData
    from ddsem.db import Database
    from ddsem.db.influence import InfluenceRunInfo
    from ddsem.db.sets import SetSummary
    from ddsem.influence.loo import Population
    from ddsem.jobs.workspace import Workspace
    from ddsem.runtime import ProcessState

# ddsem.influence.loo.CONTEXTS, repeated here so that a request validates without torch
# (tests/test_jobs_influence.py checks that the two agree).
CONTEXTS = ("distilled", "real")
REFERENCE = -1  # model index of the reference model (ddsem.influence.loo.REFERENCE)
CPU_CHUNK = 4  # models trained and stored per transaction on the CPU (a few minutes of work)


def check_context(context: str) -> None:
    check(context in CONTEXTS, f"unknown --context {context!r}: use {' or '.join(CONTEXTS)}")


def check_estimator(estimator: str) -> None:
    check(
        estimator in ESTIMATORS,
        f"unknown --estimator {estimator!r}: use {', '.join(ESTIMATORS)} (loo: exact)",
    )


STRATEGIES = ("ekfac", "kfac", "diagonal", "identity")  # kronfluence's factor strategies


def check_estimation(e: EstimatorConfig) -> None:
    positive(e.checkpoints, "--checkpoints")
    positive(e.proj_dim, "--proj-dim")
    if e.damping is not None:
        positive(e.damping, "--damping")
    check(
        e.strategy in STRATEGIES,
        f"unknown --strategy {e.strategy!r}: use {', '.join(STRATEGIES)}",
    )


# -- the request ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InfluenceRequest:
    """What to compute: the set, the seeds, the context and the training protocol."""

    set_name: str | None = None
    method: str | None = None
    seeds: tuple[int, ...] = (0,)
    context: str = InfluenceConfig.context
    test_limit: int | None = InfluenceConfig.test_limit
    width: int = ModelConfig.width
    depth: int = ModelConfig.depth
    steps: int = TrainConfig.steps
    lr: float = TrainConfig.lr
    momentum: float = TrainConfig.momentum
    real_images: int = InfluenceConfig.real_images
    top_k: int = InfluenceConfig.top_k
    chunk: int = 0  # models per transaction; 0: all on CUDA, CPU_CHUNK on the CPU
    data: DataSource = None
    overwrite: bool = False
    selection_seed: int = InfluenceConfig.selection_seed
    estimator: str = "loo"  # loo: exact leave-one-out; if | tracin | trak: an approximation
    estimation: EstimatorConfig = EstimatorConfig()  # the approximation's own options

    def __post_init__(self) -> None:
        check_estimator(self.estimator)
        check_estimation(self.estimation)  # (checked for loo too: a typo is still a typo)
        check(
            self.estimator == "loo" or self.context == "distilled",
            f"--estimator {self.estimator} estimates the distilled context only: leave "
            "--context at distilled (the real context is exact LOO's)",
        )
        seeds = unique_ints(tuple(self.seeds), "--seeds")
        check(all(s >= 0 for s in seeds), "--seeds must be non-negative integers")
        for s in seeds:
            seed_number(s, "--seeds")
        object.__setattr__(self, "seeds", seeds)
        check_context(self.context)
        check(
            self.test_limit is None or self.test_limit > 0,
            f"--test-limit must be a positive number of test images, got {self.test_limit}",
        )
        for name, value in (
            ("--width", self.width),
            ("--depth", self.depth),
            ("--steps", self.steps),
            ("--real-images", self.real_images),
            ("--top-k", self.top_k),
        ):
            positive(value, name)
        convnet_fits(self.width, self.depth)
        positive(self.lr, "--lr")
        not_empty(self.set_name, "--set")
        not_empty(self.method, "--method")
        in_range(self.momentum, 0.0, 1.0, "--momentum", high_open=True)
        check(
            self.chunk >= 0,
            f"--chunk must be 0 (automatic) or a positive number, got {self.chunk}",
        )
        seed_number(self.selection_seed)


# -- the set and the real data, validated -----------------------------------------------------------


@dataclass
class SetInputs:
    """The distilled set of a job and the real data it is measured on, validated for LOO."""

    set: SetSummary
    images: np.ndarray  # (N, C, H, W) float32, in the set's space (normalised or ZCA)
    labels: np.ndarray  # (N,) int64
    data: ImageData
    shape: tuple[int, int, int]
    zca: Any = None  # the set's ZCA transform (jobs.common.real_space): real images get it too


def load_inputs(
    db: Database, set_name: str | None, method: str | None, data: DataSource
) -> SetInputs:
    """Find the set and the real data; refuse sets leave-one-out cannot use."""
    from ddsem.db.sets import set_tensors

    summary = resolve_set(db, set_name, method)
    images, labels = set_tensors(db, summary.id)
    if len(labels) < 2:
        raise UserError(
            f"set {summary.name!r} has {len(labels)} image: leave-one-out needs at least 2 "
            "(without its only image nothing is left to train on)"
        )
    real = load_data(data, summary.dataset)
    classes = len(real.classes)
    if labels.min() < 0 or labels.max() >= classes:
        bad = sorted({int(v) for v in labels if v < 0 or v >= classes})
        raise UserError(
            f"set {summary.name!r} has labels {bad} outside {summary.dataset}'s {classes} classes "
            f"(0..{classes - 1})"
        )
    shape = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
    real_shape = (real.test_x.shape[3], real.test_x.shape[1], real.test_x.shape[2])
    if shape != real_shape:
        raise UserError(
            f"set {summary.name!r} has images of shape {list(shape)} but {summary.dataset}'s are "
            f"{list(real_shape)}"
        )
    return SetInputs(
        summary, images.astype("float32"), labels.astype("int64"), real, shape,
        real_space(db, summary),
    )  # fmt: skip


# -- how a run's models train -----------------------------------------------------------------------


@dataclass(frozen=True)
class Training:
    """How the models of one run train: what a plan decides, or what a stored run's config
    says (``from_config``), so that a check can retrain any of its models."""

    model: ModelConfig
    train: TrainConfig
    influence: InfluenceConfig
    real_indices: np.ndarray | None  # the real context's training images (train split)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Training:
        """The training of a stored run, from its config (``InfluenceRunInfo.config``)."""
        import numpy as np

        from ddsem.config import from_dict

        real = config.get("real_indices")
        return cls(
            from_dict(ModelConfig, config["model"]),
            from_dict(TrainConfig, config["train"]),
            from_dict(InfluenceConfig, config["influence"]),
            np.asarray(real, np.int64) if real is not None else None,
        )


def population(inputs: SetInputs, training: Training) -> Population:
    """The N+1 training sets of a run as weight rows over one image tensor."""
    import torch

    from ddsem.data import normalize
    from ddsem.influence.loo import build_population

    real_x = real_y = None
    if training.real_indices is not None:
        real_x = whiten(inputs.zca, normalize(inputs.data.train_x[training.real_indices]))
        real_y = torch.from_numpy(inputs.data.train_y[training.real_indices].astype("int64"))
    return build_population(
        torch.from_numpy(inputs.images),
        torch.from_numpy(inputs.labels),
        training.influence.context,
        real_x,
        real_y,
    )


def evaluation_set(inputs: SetInputs, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images of ``indices`` in the set's space (normalised, or ZCA) and their labels."""
    import torch

    from ddsem.data import normalize

    return (
        whiten(inputs.zca, normalize(inputs.data.test_x[indices])),
        torch.from_numpy(inputs.data.test_y[indices].astype("int64")),
    )


# -- the plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedPlan:
    """One seed: the stored run of (set, seed, context) if any, and the models still to train."""

    seed: int
    stored: InfluenceRunInfo | None
    models_done: int
    missing: tuple[int, ...]  # model indices (REFERENCE first) to train
    replace: bool  # the stored run has another config and ``overwrite`` replaces it

    @property
    def status(self) -> str:
        """new, complete (nothing to do), resume (a partial run) or replace."""
        if self.stored is None:
            return "new"
        if self.replace:
            return "replace"
        return "complete" if self.stored.status == "complete" else "resume"


@dataclass
class InfluencePlan:
    """What one request computes for every seed, decided before anything is written."""

    inputs: SetInputs
    training: Training
    config: dict[str, Any]
    config_hash: str
    test_indices: np.ndarray
    device: torch.device
    seeds: tuple[SeedPlan, ...]

    @property
    def set(self) -> SetSummary:
        return self.inputs.set

    @property
    def real_indices(self) -> np.ndarray | None:
        return self.training.real_indices

    @property
    def num_models(self) -> int:
        return len(self.inputs.labels) + 1

    @property
    def missing_models(self) -> int:
        return sum(len(s.missing) for s in self.seeds)


@dataclass
class RunSetup:
    """What every estimator's run of a request shares: the validated set and data, how its
    models train, the config (the run key's provenance) and the test images."""

    inputs: SetInputs
    training: Training
    config: dict[str, Any]
    test_indices: np.ndarray
    device: torch.device


def setup(ws: Workspace, req: InfluenceRequest) -> RunSetup:
    """The set and data validated and the configs of a run of ``req``. Reads only."""
    from ddsem.config import to_dict
    from ddsem.data import stratified_indices

    device = ws.torch_device()
    inputs = load_inputs(ws.db, req.set_name, req.method, req.data)
    convnet_fits(req.width, req.depth, inputs.shape[1])  # the set's own image size
    model_cfg = ModelConfig(
        width=req.width,
        depth=req.depth,
        channels=inputs.shape[0],
        image_size=inputs.shape[1],
        num_classes=len(inputs.data.classes),
    )
    train_cfg = TrainConfig(steps=req.steps, lr=req.lr, momentum=req.momentum)
    infl_cfg = InfluenceConfig(
        context=req.context,
        # only the real context uses it: keep it out of the distilled context's config key
        real_images=req.real_images if req.context == "real" else InfluenceConfig.real_images,
        test_limit=req.test_limit,
        selection_seed=req.selection_seed,
        top_k=req.top_k,
    )
    # Seed 0, always: the same test subset as `ddsem annotate --limit N`, so they join.
    test_indices = stratified_indices(inputs.data.test_y, infl_cfg.test_limit, 0).astype("int64")
    config: dict[str, Any] = {
        "model": to_dict(model_cfg),
        "train": to_dict(train_cfg),
        "influence": to_dict(infl_cfg),
        "dataset": inputs.set.dataset,
        "test_split": "test",
        "num_distilled": len(inputs.labels),
    }
    real_indices = None
    if req.context == "real":
        real_indices = stratified_indices(
            inputs.data.train_y, infl_cfg.real_images, infl_cfg.selection_seed
        ).astype("int64")
        config["real_indices"] = [int(v) for v in real_indices]
    training = Training(model_cfg, train_cfg, infl_cfg, real_indices)
    return RunSetup(inputs, training, config, test_indices, device)


def plan(ws: Workspace, req: InfluenceRequest) -> InfluencePlan:
    """The set and data validated, the configs and their hash, and per seed what is stored and
    what is missing. Refuses a stored run of another config unless ``overwrite``. Reads only."""
    from ddsem.db.codec import config_hash
    from ddsem.db.influence import done_models, find_run
    from ddsem.jobs.common import config_diff

    base = setup(ws, req)
    inputs, config = base.inputs, base.config
    digest = config_hash(config)

    everything = (REFERENCE, *range(len(inputs.labels)))
    seeds = []
    for seed in req.seeds:
        old = find_run(ws.db, inputs.set.id, seed, req.context)
        other = old is not None and old.config_hash != digest
        if other and not req.overwrite:
            assert old is not None
            raise UserError(
                f"set {inputs.set.name!r} already has a {old.status} {req.context}-context run "
                f"for seed {seed} with another configuration ({config_diff(old.config, config)}); "
                "pass --overwrite to replace it"
            )
        done = done_models(ws.db, old.id) if old is not None and not other else set()
        seeds.append(
            SeedPlan(
                seed=seed,
                stored=old,
                models_done=len(done),
                missing=tuple(m for m in everything if m not in done),
                replace=other,
            )
        )
    return InfluencePlan(
        inputs, base.training, config, digest, base.test_indices, base.device, tuple(seeds)
    )


# -- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedSummary:
    """One seed's run after the job: computed now, or found complete (``skipped``)."""

    set_name: str
    run_id: int
    seed: int
    context: str
    status: str
    skipped: bool
    num_models: int
    num_test: int
    full_accuracy: float | None
    device: str
    wall_seconds: float | None
    estimator: str = "loo"

    @classmethod
    def of(cls, set_name: str, info: InfluenceRunInfo, *, skipped: bool) -> SeedSummary:
        return cls(
            set_name, info.id, info.seed, info.context, info.status, skipped, info.num_models,
            info.num_test, info.full_accuracy, info.device, info.wall_seconds, info.estimator,
        )  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return {
            "set": self.set_name,
            "run_id": self.run_id,
            "seed": self.seed,
            "context": self.context,
            "estimator": self.estimator,
            "status": self.status,
            "skipped": self.skipped,
            "num_models": self.num_models,
            "num_test": self.num_test,
            "full_accuracy": self.full_accuracy,
            "device": self.device,
            "wall_seconds": self.wall_seconds,
        }


@dataclass(frozen=True)
class InfluenceResult:
    set_name: str
    seeds: tuple[SeedSummary, ...]

    def as_json(self) -> list[dict[str, Any]]:
        return [s.as_json() for s in self.seeds]


def accuracy_text(accuracy: float | None, context: str) -> str:
    what = "full-set" if context == "distilled" else "real-sample"
    value = "n/a" if accuracy is None else f"{100 * accuracy:.2f}%"
    return f"{what} model test accuracy {value}"


def register_images(
    db: Database, inputs: SetInputs, test_indices: np.ndarray, real_indices: np.ndarray | None
) -> None:
    """Register the test images (and the real context's training images) as Image rows."""
    from ddsem.db.sets import ensure_dataset, ensure_images

    d = inputs.data
    row = ensure_dataset(db, inputs.set.dataset, d.source, d.classes, len(d.train_y), len(d.test_y))
    ensure_images(db, row.id or 0, "test", test_indices, d.test_x, d.test_y)
    if real_indices is not None:
        ensure_images(db, row.id or 0, "train", real_indices, d.train_x, d.train_y)


def run(ws: Workspace, req: InfluenceRequest) -> InfluenceResult:
    """Plan, register the images, then train what is missing of every seed and finish it.

    Run as several processes (``accelerate launch`` or ``--processes N``; see
    ``ddsem.runtime.process_state``), every process plans, the main one registers the images
    and starts (or replaces) every seed's run while the others wait, then seed after seed each
    process trains its share of the missing models (``split_between_processes``) and takes over
    any the others leave (claims), and exactly one finishes the run."""
    from ddsem.runtime import process_state

    if req.estimator != "loo":
        from ddsem.jobs import influence_estimate

        return influence_estimate.run(ws, req)
    p = plan(ws, req)
    shard = process_state()
    if shard.distributed:
        shard.wait()  # every process has read the database before anything is written
        if shard.is_main:
            register_images(ws.db, p.inputs, p.test_indices, p.real_indices)
            for sp in p.seeds:
                if sp.status != "complete":
                    _start_run(ws, p, sp)
        shard.wait()
    else:
        register_images(ws.db, p.inputs, p.test_indices, p.real_indices)
    return InfluenceResult(
        p.set.name, tuple(_run_seed(ws, p, s, req.chunk, shard) for s in p.seeds)
    )


def _start_run(ws: Workspace, p: InfluencePlan, sp: SeedPlan) -> int:
    """The run row of one seed: the stored one, or a new one (replacing another config's)."""
    from ddsem.db.codec import state_to_blob
    from ddsem.db.influence import start_influence_run
    from ddsem.models import init_state

    if sp.stored is not None and not sp.replace:
        return sp.stored.id
    return start_influence_run(
        ws.db,
        set_id=p.set.id,
        seed=sp.seed,
        context=p.training.influence.context,
        config=p.config,
        config_hash=p.config_hash,
        test_indices=p.test_indices,
        num_models=p.num_models,
        init_state=state_to_blob(init_state(p.training.model, sp.seed)),
        device=str(p.device),
        replace=sp.replace,
    )


def _run_seed(
    ws: Workspace, p: InfluencePlan, sp: SeedPlan, chunk: int, shard: ProcessState
) -> SeedSummary:
    """Train what is missing of one seed's run, chunk by chunk, then finish it."""
    from ddsem.db.influence import find_run

    context, seed = p.training.influence.context, sp.seed
    if sp.status == "complete" and sp.stored is not None:
        from ddsem.db import claims

        old = sp.stored
        claims.clear_abandoned(ws.db, f"influence:{old.id}:")  # killed before its release
        ws.progress.note(
            f"seed {seed}: already complete ({old.num_models} models, "
            f"{accuracy_text(old.full_accuracy, context)}); nothing to do"
        )
        return SeedSummary.of(p.set.name, old, skipped=True)
    if shard.distributed:  # the main process started it (``run``)
        found = find_run(ws.db, p.set.id, seed, context)
        assert found is not None
        run_id = found.id
    else:
        run_id = _start_run(ws, p, sp)
    _train_missing(ws, p, run_id, seed, chunk, shard)
    info = _finish_once(ws, p, run_id, seed)
    ws.progress.note(
        f"seed {seed}: {info.num_models} models on {info.num_test} test images, "
        f"{accuracy_text(info.full_accuracy, context)}, {info.wall_seconds or 0:.1f} s training"
    )
    return SeedSummary.of(p.set.name, info, skipped=False)


WAIT_SECONDS = 2.0  # how often a job whose remaining models another process holds looks again


def _train_missing(
    ws: Workspace, p: InfluencePlan, run_id: int, seed: int, chunk: int, shard: ProcessState
) -> None:
    """Train the run's missing models, chunk by chunk, each chunk committed on its own.

    Several processes: each takes its contiguous share of the missing models first, then (from
    the far end) what the others have not claimed yet, so a slow or killed process's models are
    trained by the rest; every model still once.

    Every model is claimed before it is trained (``ddsem.db.claims``), so the same job started
    twice splits the models between the two processes instead of training each twice; a process
    whose remaining models are all held by another live one waits for them. A killed process's
    claims are taken over at once on the same host (its pid is gone), else after
    ``claims.STALE_SECONDS`` without a heartbeat.
    """
    import time

    import torch

    from ddsem.db import claims
    from ddsem.db.influence import add_models, done_models, run_init_state
    from ddsem.influence import loo  # loo.train_and_evaluate looked up at call time

    dev = p.device
    owner = claims.new_owner()
    everything = (REFERENCE, *range(p.num_models - 1))
    missing = [m for m in everything if m not in done_models(ws.db, run_id)]
    if not missing:
        return
    order = shard.mine_first(missing)
    missing = [m for m in order if m in missing]
    ws.db.require_writable()  # before the training, not at its first commit
    init = {k: torch.from_numpy(v) for k, v in run_init_state(ws.db, run_id).items()}
    pop = population(p.inputs, p.training)
    test_x, test_y = evaluation_set(p.inputs, p.test_indices)
    size = max(1, chunk or (len(shard.split(missing)) if dev.type == "cuda" else CPU_CHUNK))
    steps = p.training.train.steps
    waiting_said = False
    with ws.progress.phase(f"seed {seed}: model-steps", len(missing) * steps) as advance:
        while missing:
            part = []
            for m in missing:
                if len(part) < size and claims.claim(ws.db, _claim_key(run_id, m), owner):
                    part.append(m)
            # a model another process stored (then released) since ``missing`` was read
            stored = done_models(ws.db, run_id)
            for m in [m for m in part if m in stored]:
                claims.release(ws.db, _claim_key(run_id, m), owner)
            part = [m for m in part if m not in stored]
            if not part and not [m for m in missing if m not in stored]:
                break
            if not part:  # every missing model is being trained by another live process
                if not waiting_said:
                    others = ", ".join(claims.held_by_others(ws.db, f"influence:{run_id}:", owner))
                    ws.progress.note(
                        f"seed {seed}: {len(missing)} models are being trained by another "
                        f"process ({others or 'finishing'}); waiting for them"
                    )
                    waiting_said = True
                time.sleep(WAIT_SECONDS)
            else:
                last_beat = [time.monotonic()]

                def beat(n: int = 1, part=part, last_beat=last_beat) -> None:
                    advance(n)
                    if time.monotonic() - last_beat[0] > 60:
                        for m in part:
                            claims.heartbeat(ws.db, _claim_key(run_id, m), owner)
                        last_beat[0] = time.monotonic()

                t0 = time.perf_counter()
                try:
                    result = loo.train_and_evaluate(
                        p.training.model,
                        p.training.train,
                        pop,
                        part,
                        init,
                        test_x,
                        test_y,
                        device=dev,
                        progress=beat,
                    )
                    add_models(
                        ws.db,
                        run_id,
                        part,
                        result.losses.numpy(),
                        result.accuracy.numpy(),
                        seconds=time.perf_counter() - t0,
                        device=str(dev),
                    )
                finally:  # done or interrupted: the models are free for the next claim
                    for m in part:
                        claims.release(ws.db, _claim_key(run_id, m), owner)
            before = len(missing) - len(part)
            stored = done_models(ws.db, run_id)
            missing = [m for m in order if m not in stored]
            if len(missing) < before:  # models the other processes stored meanwhile
                advance((before - len(missing)) * steps)


def _claim_key(run_id: int, model_index: int) -> str:
    return f"influence:{run_id}:{model_index}"


def _finish_once(ws: Workspace, p: InfluencePlan, run_id: int, seed: int) -> InfluenceRunInfo:
    """Finish the run unless another process finished it (or is finishing it) already."""
    import time

    from ddsem.db import claims
    from ddsem.db.influence import list_runs

    owner = claims.new_owner()
    key = f"influence:{run_id}:finish"
    while True:
        done = [r for r in list_runs(ws.db, p.set.id, complete_only=True) if r.id == run_id]
        if done:
            return done[0]
        if claims.claim(ws.db, key, owner):
            try:
                info = _finish(ws.db, p, run_id, seed)
                claims.clear_abandoned(ws.db, f"influence:{run_id}:")  # a killed trainer's
                return info
            finally:
                claims.release(ws.db, key, owner)
        time.sleep(WAIT_SECONDS)


def _finish(db: Database, p: InfluencePlan, run_id: int, seed: int) -> InfluenceRunInfo:
    """Influence matrix, top-k table and status "complete", in one transaction."""
    import numpy as np

    from ddsem.db.influence import find_run, finish_influence_run, model_results
    from ddsem.influence.loo import influence_from_losses, top_k

    context = p.training.influence.context
    indices, losses, accuracy = model_results(db, run_id)
    if indices != [REFERENCE, *range(p.num_models - 1)]:
        raise UserError(f"run {run_id} is missing models; re-run the command to finish it")
    if not np.isfinite(losses).all():
        from ddsem.db.influence import delete_influence_run

        delete_influence_run(db, run_id)  # nothing of a diverged run is worth keeping
        raise UserError(
            f"seed {seed}: training diverged (test losses are not finite) with --lr "
            f"{p.training.train.lr:g}; lower it. The run was removed"
        )
    influence = influence_from_losses(losses[0], losses[1:], context)
    positions, values = top_k(influence, p.training.influence.top_k)
    finish_influence_run(
        db,
        run_id,
        influence,
        p.test_indices,
        p.inputs.data.test_y[p.test_indices],
        positions,
        values,
        float(accuracy[0]),
    )
    info = find_run(db, p.set.id, seed, context)
    assert info is not None and info.id == run_id
    return info


# -- reads: `influence show` ------------------------------------------------------------------------


@dataclass(frozen=True)
class ShowRequest:
    """``influence show``: the runs of a set, or (``image``) what one distilled image
    influences most, in one seed's run (``seed``) or the mean over seeds (None)."""

    set_name: str | None = None
    method: str | None = None
    image: int | None = None
    seed: int | None = None
    context: str = InfluenceConfig.context
    top: int = 10
    estimator: str = "loo"

    def __post_init__(self) -> None:
        check_context(self.context)
        check_estimator(self.estimator)
        positive(self.top, "--top")


@dataclass(frozen=True)
class RunRow:
    run_id: int
    seed: int
    context: str
    status: str
    models_done: int
    num_models: int
    num_test: int
    full_accuracy: float | None
    device: str
    wall_seconds: float | None
    width: int | None
    steps: int | None
    estimator: str = "loo"

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RunsView:
    """The influence runs of a set, in any status."""

    set_name: str
    method: str
    num_images: int
    runs: tuple[RunRow, ...]

    def as_json(self) -> dict[str, Any]:
        return {"set": self.set_name, "runs": [r.as_json() for r in self.runs]}


@dataclass(frozen=True)
class InfluencedTest:
    rank: int
    test_index: int
    label: int
    class_name: str
    value: float

    def as_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "test_index": self.test_index,
            "label": self.label,
            "class": self.class_name,
            "value": self.value,
        }


@dataclass(frozen=True)
class ImageInfluence:
    """The test images one distilled image influences most."""

    set_name: str
    image: int
    label: int
    class_name: str
    context: str
    scope: str  # "seed:S" or "mean"
    seeds: tuple[int, ...]
    top: tuple[InfluencedTest, ...]
    stored_top_k: int | None = None  # set when fewer are stored than asked (one seed's table)
    estimator: str = "loo"

    def as_json(self) -> dict[str, Any]:
        return {
            "set": self.set_name,
            "image": self.image,
            "label": self.label,
            "class": self.class_name,
            "context": self.context,
            "estimator": self.estimator,
            "scope": self.scope,
            "seeds": list(self.seeds),
            "top": [t.as_json() for t in self.top],
        }


def show(ws: Workspace, req: ShowRequest) -> RunsView | ImageInfluence:
    if req.image is None:
        return show_runs(ws, req.set_name, req.method)
    return show_image(
        ws, req.set_name, req.method, image=req.image, seed=req.seed, context=req.context,
        top=req.top, estimator=req.estimator,
    )  # fmt: skip


def _run_row(r: InfluenceRunInfo) -> RunRow:
    return RunRow(
        r.id, r.seed, r.context, r.status, r.models_done, r.num_models, r.num_test,
        r.full_accuracy, r.device, r.wall_seconds,
        r.config.get("model", {}).get("width"), r.config.get("train", {}).get("steps"),
        r.estimator,
    )  # fmt: skip


def show_runs(ws: Workspace, set_name: str | None = None, method: str | None = None) -> RunsView:
    """Every influence run of the set, complete or not."""
    from ddsem.db.influence import list_runs

    summary = resolve_set(ws.db, set_name, method)
    runs = list_runs(ws.db, summary.id, complete_only=False, estimator=None)
    rows = tuple(_run_row(r) for r in runs)
    return RunsView(summary.name, summary.method, summary.num_images, rows)


def show_image(
    ws: Workspace,
    set_name: str | None = None,
    method: str | None = None,
    *,
    image: int,
    seed: int | None = None,
    context: str = InfluenceConfig.context,
    top: int = 10,
    estimator: str = "loo",
) -> ImageInfluence:
    """The ``top`` test images distilled image ``image`` influences most: from the stored top-k
    table of ``seed``'s run, or (None) ranked by the mean over the complete runs' seeds."""
    from ddsem.db.influence import list_runs, load_influence
    from ddsem.db.sets import dataset_classes, get_dataset, set_tensors
    from ddsem.db.views import top_influenced
    from ddsem.influence.checks import seed_mean
    from ddsem.influence.loo import top_k

    ShowRequest(set_name, method, image, seed, context, top, estimator)  # the CLI's checks
    summary = resolve_set(ws.db, set_name, method)
    _, labels = set_tensors(ws.db, summary.id)
    if not 0 <= image < len(labels):
        raise UserError(f"--image must be in 0..{len(labels) - 1} for set {summary.name!r}")
    runs = list_runs(ws.db, summary.id, context=context, estimator=estimator)
    if not runs:
        flag = " --context real" if context == "real" else ""
        flag += f" --estimator {estimator}" if estimator != "loo" else ""
        what = "influence" if estimator == "loo" else f"{estimator} influence"
        raise UserError(
            f"no complete {context}-context {what} run for set {summary.name!r}: "
            f"run `ddsem influence --set {summary.name}{flag}` first"
        )
    dataset = get_dataset(ws.db, summary.dataset)
    classes = dataset_classes(dataset) if dataset else []

    def name(label: int) -> str:
        return classes[label] if label < len(classes) else str(label)

    stored_top_k = None
    if seed is not None:
        chosen = [r for r in runs if r.seed == seed]
        if not chosen:
            have = ", ".join(str(r.seed) for r in runs)
            raise UserError(f"no complete {context}-context run for seed {seed} (seeds: {have})")
        scope = f"seed:{seed}"
        page = top_influenced(ws.db, chosen[0].id, image, limit=top)
        rows = [(h.rank, h.test_index, h.label, h.value) for h in page.items]
        if top > len(rows) and len(rows) < chosen[0].num_test:
            stored_top_k = len(rows)
        seeds: tuple[int, ...] = (seed,)
    else:
        loaded = [load_influence(ws.db, r.id) for r in runs]
        mean, common = seed_mean([m for m, _ in loaded], [t for _, t in loaded])
        positions, values = top_k(mean[image : image + 1], top)
        test_labels = _stored_test_labels(ws.db, summary, common)
        scope = "seed:" + str(runs[0].seed) if len(runs) == 1 else "mean"
        rows = [
            (rank, int(common[p]), int(test_labels[p]), float(v))
            for rank, (p, v) in enumerate(zip(positions[0], values[0], strict=True))
        ]
        seeds = tuple(r.seed for r in runs)
    label = int(labels[image])
    return ImageInfluence(
        summary.name,
        image,
        label,
        name(label),
        context,
        scope,
        seeds,
        tuple(InfluencedTest(r, t, lbl, name(lbl), v) for r, t, lbl, v in rows),
        stored_top_k,
        estimator,
    )


def _stored_test_labels(db: Database, summary: SetSummary, indices: np.ndarray) -> np.ndarray:
    """Labels of registered test images (registered by the influence job itself)."""
    import numpy as np

    from ddsem.db.sets import get_dataset, image_rows

    dataset = get_dataset(db, summary.dataset)
    if dataset is None:
        raise UserError(f"data set {summary.dataset!r} is not registered in this database")
    rows = image_rows(db, dataset.id or 0, "test", [int(i) for i in indices])
    by_index = {r.index: r.label for r in rows}
    return np.asarray([by_index[int(i)] for i in indices], dtype=np.int64)
