"""Job ``analyze extra-training`` (appendix E, Fig. 24): a ConvNet trained on real data for 300
iterations (batch 256, SGD lr 0.01, momentum 0.9), then trained further on each distilled set
with the distilled-data protocol (``TrainConfig``: 300 full-batch steps); its test accuracy
before and after (paper: BPTT and TM change little, DM and GM lose 5-7 points).

Per seed ``seed * 1000 + r`` there is one real-data model (initialisation and minibatch order of
that seed), stored once by ``common.real_model`` and reused for every set and every later run.
One unit is one (set, seed list): the real models, as one population of the engine, trained
further on the set from their real states (a fresh optimiser: momentum restarts, as in the
paper's code) and tested; it stores the per-seed accuracies after (and before). A re-run trains
only what is missing; the figure is redrawn on every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.config import ExtraTrainingConfig, ModelConfig, TrainConfig
from ddsem.jobs.analyze.common import OUT, check_image_shapes, choose_sets, figure_folder
from ddsem.jobs.common import DataSource, at_least, check, convnet_fits, seed_number

if TYPE_CHECKING:
    from ddsem.data import ImageData
    from ddsem.jobs.analyze.common import AnalysisSet
    from ddsem.jobs.workspace import Workspace

KIND = "extra-training"
EXTRA = ExtraTrainingConfig()
TRAIN = TrainConfig()
MODEL = ModelConfig()

__all__ = [
    "ExtraTrainingPlan",
    "ExtraTrainingRequest",
    "ExtraTrainingResult",
    "plan",
    "preflight",
    "run",
]


@dataclass(frozen=True)
class ExtraTrainingRequest:
    methods: tuple[str, ...] = ()  # each method's newest set
    set_names: tuple[str, ...] = ()  # (neither: every set)
    width: int = MODEL.width
    depth: int = MODEL.depth
    runs: int = EXTRA.runs
    steps: int = TRAIN.steps  # distilled-data protocol: full-batch steps on the set
    real_iterations: int = EXTRA.real_iterations  # minibatch steps on real data first
    train_samples: int | None = None  # class-stratified real training subset (None: all)
    test_limit: int | None = None  # class-stratified test subset (None: the whole test split)
    data: DataSource = None
    seed: int = 0  # run r starts from seed * 1000 + r
    out: str = OUT

    def __post_init__(self) -> None:
        convnet_fits(self.width, self.depth, MODEL.image_size)
        at_least(self.runs, 1, "--runs")
        at_least(self.steps, 1, "--steps")
        at_least(self.real_iterations, 1, "--real-iterations")
        at_least(self.train_samples, 1, "--train-samples")
        at_least(self.test_limit, 1, "--test-limit")
        seed_number(self.seed)

    @property
    def seeds(self) -> list[int]:
        return [self.seed * 1000 + r for r in range(self.runs)]

    @property
    def train(self) -> TrainConfig:
        from dataclasses import replace

        return replace(TRAIN, steps=int(self.steps))

    @property
    def real_train(self) -> TrainConfig:
        return TrainConfig(
            steps=int(self.real_iterations),
            lr=EXTRA.lr,
            momentum=EXTRA.momentum,
            batch_size=EXTRA.batch_size,
        )

    def model(self, num_classes: int) -> ModelConfig:
        return ModelConfig(width=int(self.width), depth=int(self.depth), num_classes=num_classes)


@dataclass
class Unit:
    set: AnalysisSet
    params: dict[str, Any]
    stored: Any  # StoredAnalysis or None


@dataclass
class ExtraTrainingPlan:
    request: ExtraTrainingRequest
    data: ImageData = field(repr=False)
    real: tuple[Any, Any] = field(repr=False)  # real training (images, labels)
    real_key: dict[str, Any]  # which real and test images key the real models
    sets: list[AnalysisSet] = field(repr=False)
    model: ModelConfig
    test_idx: Any = field(repr=False)
    units: list[Unit] = field(repr=False)

    @property
    def missing(self) -> list[Unit]:
        return [u for u in self.units if u.stored is None]


def preflight(ws: Workspace, request: ExtraTrainingRequest) -> None:
    """What can be refused before the real data is looked for: --out and the sets (known, of
    CIFAR's image shape); ``plan`` checks them again against the data."""
    figure_folder(request.out)
    check_image_shapes(choose_sets(ws.db, request.methods, request.set_names))


def plan(ws: Workspace, request: ExtraTrainingRequest) -> ExtraTrainingPlan:
    """The sets, the real data, the units and which are stored (reads only)."""
    from ddsem.config import to_dict
    from ddsem.data import stratified_indices
    from ddsem.db.analyses import find_analysis
    from ddsem.jobs.analyze.common import load_sets, real_tensors, sets_space

    r = request
    figure_folder(r.out)
    summaries = choose_sets(ws.db, r.methods, r.set_names)
    check_image_shapes(summaries)
    space = sets_space(summaries)  # the real models learn the real images in the sets' space
    data, real_x, real_y, _ = real_tensors(r.data, summaries[0].dataset, r.train_samples, r.seed)
    model = r.model(data.num_classes)
    sets = load_sets(ws.db, summaries, data, model)
    real_x = sets[0].in_space(real_x)
    check(
        r.test_limit is None or r.test_limit <= len(data.test_y),
        f"--test-limit must be between 1 and {len(data.test_y)}, got {r.test_limit}",
    )
    test_idx = stratified_indices(data.test_y, r.test_limit, 0)
    real_key = {
        "dataset": data.name,
        "train_samples": r.train_samples,
        "train_images": len(real_y),
        "sample_seed": r.seed,
        "test_limit": r.test_limit,
        "test_images": len(test_idx),
    }
    if space is not None:
        real_key["zca"] = space  # a model of whitened images is another model
    units = []
    for s in sets:
        params = {
            "set_id": s.summary.id, "set": s.name, "model": to_dict(model),
            "real_train": to_dict(r.real_train), "real": real_key, "train": to_dict(r.train),
            "seeds": r.seeds, "test_limit": r.test_limit, "dataset": data.name,
        }  # fmt: skip
        units.append(Unit(s, params, find_analysis(ws.db, KIND, params)))
    return ExtraTrainingPlan(r, data, (real_x, real_y), real_key, sets, model, test_idx, units)


@dataclass
class SetExtraTraining:
    name: str
    method: str
    images: int
    before: dict[str, Any]  # accuracies, mean, sd of the real models
    after: dict[str, Any]  # after training further on the set
    change: dict[str, Any]  # after - before: mean, sd, t, p, n
    analysis_id: int

    def as_json(self) -> dict[str, Any]:
        return {
            "set": self.name,
            "method": self.method,
            "images": self.images,
            "before": self.before,
            "after": self.after,
            "change": self.change,
            "analysis_id": self.analysis_id,
        }


@dataclass
class ExtraTrainingResult:
    sets: list[SetExtraTraining]
    runs: int
    seeds: list[int]
    steps: int
    real_iterations: int
    train_images: int
    test_images: int
    chance: float
    trained_real: int  # real models trained by this run (the rest were stored)
    trained: int  # set units trained by this run
    figure: Path

    @property
    def analysis_ids(self) -> list[int]:
        return [s.analysis_id for s in self.sets]

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "analysis_ids": self.analysis_ids,
            "figure": str(self.figure),
            "runs": self.runs,
            "seeds": self.seeds,
            "steps": self.steps,
            "real_iterations": self.real_iterations,
            "train_images": self.train_images,
            "test_images": self.test_images,
            "chance": self.chance,
            "trained_real_models": self.trained_real,
            "trained": self.trained,
            "sd": "sample standard deviation over seeds (n - 1); null for one seed",
            "test": "paired t-test over seeds (scipy.stats.ttest_rel), after vs before",
            "sets": [s.as_json() for s in self.sets],
        }


def run(ws: Workspace, request: ExtraTrainingRequest) -> ExtraTrainingResult:
    """Train (or read) the real models, train and store the missing set units, draw the figure."""
    import torch

    from ddsem.analyses.extra_training import (
        FigureSet,
        continue_training,
        extra_training_figure,
        paired_comparison,
    )
    from ddsem.data import normalize
    from ddsem.db.analyses import save_analysis, set_analysis_figure
    from ddsem.jobs.analyze.common import real_model

    p = plan(ws, request)
    r, d = request, p.data
    todo = p.missing
    if todo:
        ws.db.require_writable()  # one line now, not after the training
    results: dict[int, tuple[int, dict[str, Any]]] = {
        u.set.summary.id: (u.stored.id, u.stored.result) for u in p.units if u.stored is not None
    }
    trained_real = 0
    if todo:
        test_x = todo[0].set.in_space(normalize(d.test_x[p.test_idx]))  # the sets' one space
        test_y = torch.from_numpy(d.test_y[p.test_idx].astype("int64"))
        device = ws.torch_device()
        states, before = [], []
        for s in r.seeds:
            state, res, fresh = real_model(
                ws, p.model, r.real_train, p.real, (test_x, test_y), p.real_key, s,
                f"extra-training: real model (seed {s})",
            )  # fmt: skip
            states.append(state)
            before.append(float(res["test_accuracy"]))
            trained_real += int(fresh)
        total = r.steps * r.runs * len(todo)
        with ws.progress.phase("extra-training: train on the sets", total) as advance:
            for u in todo:
                after = continue_training(
                    u.set.images, u.set.labels, p.model, r.train, states, test_x, test_y,
                    device=device, progress=advance,
                )  # fmt: skip
                result = {"before": before, "after": after, "seeds": r.seeds}
                results[u.set.summary.id] = (save_analysis(ws.db, KIND, u.params, result), result)

    chance = 1.0 / d.num_classes
    rows, figure_sets = [], []
    for s in p.sets:
        uid, res = results[s.summary.id]
        cmp = paired_comparison(res["before"], res["after"])
        a, b, change = cmp.summary(cmp.a), cmp.summary(cmp.b), cmp.difference()
        rows.append(SetExtraTraining(s.name, s.method, len(s.labels), a, b, change, uid))
        figure_sets.append(
            FigureSet(s.name, (a["mean"], a["sd"]), (b["mean"], b["sd"]), change["p"])
        )
    ids = [row.analysis_id for row in rows]
    figure = extra_training_figure(
        figure_sets, figure_folder(r.out) / _figure_name(ids),
        chance=chance, runs=r.runs, real_iterations=r.real_iterations,
    )  # fmt: skip
    if any(u.stored is None or u.stored.figure_path != str(figure) for u in p.units):
        ws.db.require_writable()
        for i in ids:
            set_analysis_figure(ws.db, i, str(figure))
    return ExtraTrainingResult(
        rows, r.runs, r.seeds, r.steps, r.real_iterations, len(p.real[1]), len(p.test_idx),
        chance, trained_real, len(todo), figure,
    )  # fmt: skip


def _figure_name(ids: list[int]) -> str:
    """extra-training-<unit ids>.png; a hash of them when there are many."""
    if len(ids) <= 8:
        return f"{KIND}-{'-'.join(map(str, ids))}.png"
    import hashlib

    return f"{KIND}-{hashlib.sha1(repr(ids).encode()).hexdigest()[:10]}.png"
