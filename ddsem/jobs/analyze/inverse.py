"""Job ``analyze inverse`` (paper Fig. 2): models trained on real data classify each distilled
set (accuracy per set and per class, beside chance and the model's own real test accuracy),
and the penultimate features of distilled and real test images are embedded in 2-D.

Units, each stored complete as it finishes: a model trained on real data (kind "real-model",
shared with every analysis that needs the same one), a model's classification of one set
(kind "inverse"), and a model's embedding of every set chosen with the real test images (kind
"inverse-embedding"). A killed run keeps what finished; an identical re-run trains nothing and
only redraws the figures.

Epochs are minibatch steps: ``epochs * (n // batch_size)`` steps of batch 256 (the engine's
batch schedule drops the last partial batch of an epoch); with fewer than 256 training images
an epoch is one full-batch step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.config import PAPER_TEST_ACCURACY, InverseConfig, RealModelSpec
from ddsem.errors import UserError
from ddsem.jobs.analyze.common import OUT, choose_sets, figure_folder
from ddsem.jobs.common import (
    DataSource,
    at_least,
    check,
    clip,
    convnet_fits,
    positive,
    seed_number,
)

if TYPE_CHECKING:
    from ddsem.config import ModelConfig, TrainConfig
    from ddsem.data import ImageData
    from ddsem.db.sets import SetSummary
    from ddsem.jobs.analyze.common import AnalysisSet
    from ddsem.jobs.workspace import Workspace

KIND = "inverse"
EMBED_KIND = "inverse-embedding"
INVERSE = InverseConfig()
CONVNET_DEPTH = 3  # the paper's ConvNet-3
DEFAULT_WIDTH = 128  # a model named without a width ("convnet", "resnet18bn")

# paper Fig. 2: test accuracy of the real-data models (ConvNet-16, ConvNet-128, ResNet-18)

EPOCH_NOTE = (
    "an epoch is n // {batch} minibatches of {batch} (the engine's batch schedule drops the "
    "last partial batch); with fewer than {batch} training images, one full-batch step"
)

__all__ = [
    "EMBED_KIND",
    "KIND",
    "InversePlan",
    "InverseRequest",
    "InverseResult",
    "embed_labels",
    "label",
    "model_specs",
    "plan",
    "preflight",
    "run",
]


# -- parsing --model and --epochs -----------------------------------------------------------------


def _parse_spec(text: str) -> tuple[str, int]:
    """'arch[:width]' -> (arch, width); the width defaults to 128."""
    arch, sep, width = text.strip().partition(":")
    arch = arch.strip().lower()
    check(bool(arch), f"--models has an empty architecture in {clip(repr(text))}")
    if not width.strip():
        check(not sep, f"--models {clip(repr(text))}: write arch:width, e.g. convnet:16")
        return arch, DEFAULT_WIDTH
    try:
        return arch, int(width)
    except ValueError:
        raise UserError(
            f"--models {clip(repr(text))}: the width must be an integer, e.g. convnet:16"
        ) from None


def label(spec: RealModelSpec) -> str:
    """The model's name in tables and figures: "convnet-16", "resnet18bn" (at width 128)."""
    return spec.label


def _default_epochs(arch: str, width: int) -> int:
    """The paper's epochs of this model (20 for ConvNet-16, 40 for the others)."""
    for spec in INVERSE.models:
        if (spec.arch, spec.width) == (arch, width):
            return spec.epochs
    return max(spec.epochs for spec in INVERSE.models)


def model_specs(models: str | None, epochs: str | None = None) -> tuple[RealModelSpec, ...]:
    """``--models convnet:16,convnet:128,resnet18bn`` and ``--epochs 20`` (one for all) or
    ``--epochs 20,40,40`` (one per model) as RealModelSpecs; neither: the paper's three."""
    if models is None or not models.strip():
        specs = [(s.arch, s.width) for s in INVERSE.models]
        if models is not None:
            raise UserError("--models is empty")
    else:
        items = models.split(",")
        check(all(i.strip() for i in items), f"--models has an empty item in {clip(repr(models))}")
        specs = [_parse_spec(i) for i in items]
    if epochs is None:
        counts = [_default_epochs(a, w) for a, w in specs]
    else:
        parts = [e.strip() for e in epochs.split(",")]
        check(all(parts), f"--epochs has an empty item in {clip(repr(epochs))}")
        try:
            counts = [int(e) for e in parts]
        except ValueError:
            raise UserError(
                f"--epochs must be an integer or comma-separated integers, got {clip(repr(epochs))}"
            ) from None
        if len(counts) == 1:
            counts = counts * len(specs)
        check(
            len(counts) == len(specs),
            f"--epochs lists {len(counts)} numbers for {len(specs)} models: give one for all "
            "or one per model",
        )
    return tuple(RealModelSpec(a, w, e) for (a, w), e in zip(specs, counts, strict=True))


def embed_labels(text: str | None) -> tuple[str, ...]:
    """``--embed-model resnet18bn,convnet:16`` as model labels ("resnet18bn", "convnet-16")."""
    if text is None or not text.strip():
        return ()
    return tuple(label(RealModelSpec(a, w, 1)) for a, w in map(_parse_spec, text.split(",")))


# -- the request ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InverseRequest:
    methods: tuple[str, ...] = ()  # each method's newest set
    set_names: tuple[str, ...] = ()  # (neither: every set in the database)
    models: tuple[RealModelSpec, ...] = INVERSE.models
    train_samples: int | None = None  # class-stratified real training subset; None: all
    test_limit: int | None = None  # class-stratified real test subset; None: the whole split
    embed: bool = True  # the 2-D embedding (Fig. 2 right)
    embed_models: tuple[str, ...] = ()  # labels of the models to embed; (): every model
    embed_test: int | None = INVERSE.embed_test  # test points embedded; None: every test image
    data: DataSource = None
    seed: int = 0  # the real models' initialisation, minibatch order and training subset
    out: str = OUT

    def __post_init__(self) -> None:
        from ddsem.models import ARCHITECTURES

        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "set_names", tuple(self.set_names))
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "embed_models", tuple(self.embed_models))
        check(bool(self.models), "--models is empty")
        for spec in self.models:
            if spec.arch not in ARCHITECTURES:
                raise UserError(
                    f"unknown architecture {clip(repr(spec.arch))}: known are "
                    f"{', '.join(sorted(ARCHITECTURES))}"
                )
            if spec.arch == "convnet":
                convnet_fits(spec.width, CONVNET_DEPTH)
            positive(spec.width, f"the width of {spec.arch}")
            at_least(spec.epochs, 1, f"--epochs of {label(spec)}")
        labels = [label(s) for s in self.models]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        check(not dupes, f"--models lists {', '.join(dupes)} more than once")
        for name in self.embed_models:
            check(
                name in labels,
                f"--embed-model {name} is not one of the models ({', '.join(labels)})",
            )
        at_least(self.train_samples, 1, "--train-samples")
        at_least(self.test_limit, 1, "--test-limit")
        at_least(self.embed_test, 1, "--embed-test")
        seed_number(self.seed)

    @property
    def embedded(self) -> list[RealModelSpec]:
        """The models whose features are embedded."""
        if not self.embed:
            return []
        return [s for s in self.models if not self.embed_models or label(s) in self.embed_models]


def model_config(spec: RealModelSpec, data: ImageData) -> ModelConfig:
    from ddsem.config import ModelConfig
    from ddsem.models import reference_config

    _, h, _, c = data.train_x.shape
    base = ModelConfig(
        width=spec.width, depth=CONVNET_DEPTH, channels=c, image_size=h,
        num_classes=data.num_classes,
    )  # fmt: skip
    return reference_config(spec.arch, base)


def train_config(spec: RealModelSpec, n: int) -> TrainConfig:
    """``spec.epochs`` epochs of minibatches of INVERSE.batch_size over ``n`` images."""
    from ddsem.config import TrainConfig

    per_epoch = max(1, n // INVERSE.batch_size)
    return TrainConfig(
        steps=spec.epochs * per_epoch, lr=INVERSE.lr, momentum=INVERSE.momentum,
        batch_size=INVERSE.batch_size,
    )  # fmt: skip


# -- plan -----------------------------------------------------------------------------------------


@dataclass
class _Model:
    spec: RealModelSpec
    model: ModelConfig
    train: TrainConfig
    real_params: dict[str, Any]  # the stored real-data model's key
    real_stored: Any  # StoredAnalysis | None
    units: list[_Unit]  # one classification per set
    embedding: _Unit | None  # None: not embedded

    @property
    def complete(self) -> bool:
        units = self.units + ([self.embedding] if self.embedding is not None else [])
        return all(u.stored is not None for u in units)


@dataclass
class _Unit:
    params: dict[str, Any]
    stored: Any  # StoredAnalysis | None
    set: AnalysisSet | None = None  # classification units: the set classified


@dataclass
class InversePlan:
    request: InverseRequest
    data: ImageData = field(repr=False)
    sets: list[AnalysisSet] = field(repr=False)
    real: tuple[Any, Any] = field(repr=False)  # normalised training images, labels
    test: tuple[Any, Any, Any] = field(repr=False)  # normalised test images, labels, indices
    models: list[_Model] = field(repr=False)
    embedder: str = "tsne"

    @property
    def missing(self) -> int:
        """Units to compute (real models to train not counted)."""
        return sum(
            u.stored is None
            for m in self.models
            for u in m.units + ([m.embedding] if m.embedding is not None else [])
        )


def preflight(ws: Workspace, request: InverseRequest) -> list[SetSummary]:
    """What can be refused before the real data is looked for: the figure folder and the sets
    (each method has one, each named set exists, images of the models' input shape)."""
    figure_folder(request.out)
    summaries = choose_sets(ws.db, request.methods, request.set_names)
    for s in summaries:
        if len(s.image_shape) != 3 or tuple(s.image_shape[1:]) != (32, 32):
            raise UserError(
                f"set {s.name!r} has images of shape {tuple(s.image_shape)}, the models take "
                "3x32x32 images"
            )
    return summaries


def plan(ws: Workspace, request: InverseRequest) -> InversePlan:
    """The sets, the real and test images, and which units are stored (reads only)."""
    from ddsem.analyses.inverse import available_embedder
    from ddsem.config import to_dict
    from ddsem.db.analyses import REAL_MODEL, find_analysis
    from ddsem.jobs.analyze.common import load_sets, real_tensors, sets_space, test_tensors

    req = request
    summaries = preflight(ws, req)
    space = sets_space(summaries)  # the models learn the real images in the sets' one space
    data, real_x, real_y, _ = real_tensors(
        req.data, summaries[0].dataset, req.train_samples, req.seed
    )
    test_x, test_y, test_idx = test_tensors(data, req.test_limit)
    if req.embed_test is not None and req.embed_test > len(test_y):
        raise UserError(
            f"--embed-test must be at most the {len(test_y)} test images used, got {req.embed_test}"
        )
    sets = load_sets(ws.db, summaries, data)
    real_x, test_x = sets[0].in_space(real_x), sets[0].in_space(test_x)
    embedder = available_embedder()
    key = {
        "dataset": data.name,
        "train_samples": req.train_samples,
        "train_images": len(real_y),
        "test_limit": req.test_limit,
        "test_images": len(test_y),
    }
    if space is not None:
        key["zca"] = space  # a model of whitened images is another model
    embedded = {label(s) for s in req.embedded}
    models = []
    for spec in req.models:
        cfg = model_config(spec, data)
        train = train_config(spec, len(real_y))
        # as ddsem.jobs.analyze.common.real_model keys it
        real_params = {"model": to_dict(cfg), "train": to_dict(train), "seed": req.seed, **key}
        units = []
        for s in sets:
            params = {"real_model": real_params, "set_id": s.summary.id, "set": s.name}
            units.append(_Unit(params, find_analysis(ws.db, KIND, params), s))
        embedding = None
        if label(spec) in embedded:
            params = {
                "real_model": real_params,
                "sets": [[s.summary.id, s.name] for s in sets],
                "embed_test": req.embed_test,
                "embedder": embedder,
                "n_neighbors": INVERSE.umap_neighbors,
                "embed_seed": INVERSE.embed_seed,
            }
            embedding = _Unit(params, find_analysis(ws.db, EMBED_KIND, params))
        real_stored = find_analysis(ws.db, REAL_MODEL, real_params)
        models.append(_Model(spec, cfg, train, real_params, real_stored, units, embedding))
    return InversePlan(
        req, data, sets, (real_x, real_y), (test_x, test_y, test_idx), models, embedder
    )


# -- result ---------------------------------------------------------------------------------------


@dataclass
class InverseResult:
    classes: list[str]
    train_images: int
    test_images: int
    models: list[dict[str, Any]]  # per model: label, arch, width, epochs, steps, test accuracy
    results: list[dict[str, Any]]  # per (model, set): accuracy, per class, chance, ...
    embeddings: list[dict[str, Any]]  # per embedded model: embedder, points, figure
    figure: Path  # Fig. 2 left
    trained: int  # real-data models trained by this run
    computed: int  # classification and embedding units computed by this run

    @property
    def chance(self) -> float:
        return 1.0 / len(self.classes)

    @property
    def figures(self) -> list[Path]:
        return [self.figure, *(Path(e["figure"]) for e in self.embeddings)]

    @property
    def analysis_ids(self) -> list[int]:
        return [r["analysis_id"] for r in self.results] + [
            e["analysis_id"] for e in self.embeddings
        ]

    @property
    def note(self) -> str:
        return EPOCH_NOTE.format(batch=INVERSE.batch_size)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "analysis_ids": self.analysis_ids,
            "figure": str(self.figure),
            "figures": [str(f) for f in self.figures],
            "classes": self.classes,
            "num_classes": len(self.classes),
            "chance": self.chance,
            "train_images": self.train_images,
            "test_images": self.test_images,
            "batch_size": INVERSE.batch_size,
            "epoch_note": self.note,
            "models": self.models,
            "results": self.results,
            "embeddings": self.embeddings,
            "trained": self.trained,
            "computed": self.computed,
        }


# -- run ------------------------------------------------------------------------------------------


def run(ws: Workspace, request: InverseRequest) -> InverseResult:
    """Train (or read) each real-data model, classify and embed what is not stored, store each
    unit as it finishes, then draw Fig. 2 left (accuracy) and right (one embedding per model)."""
    import numpy as np

    from ddsem.analyses.inverse import accuracy_figure
    from ddsem.db.analyses import REAL_MODEL, find_analysis, save_analysis, set_analysis_figure

    p = plan(ws, request)
    ws.db.require_writable()  # the figures' paths are stored even when every unit is
    out = figure_folder(request.out)
    chance = 1.0 / p.data.num_classes
    models, results, embeddings = [], [], []
    trained = computed = 0
    for m in p.models:
        state, now, test_accuracy = None, False, None
        if m.real_stored is not None:
            test_accuracy = m.real_stored.result["test_accuracy"]
        if not m.complete:
            state, real_result, now = _real_model(ws, p, m)
            trained += now
            test_accuracy = real_result["test_accuracy"]
        elif test_accuracy is None:  # the units are stored, the model row is gone: read theirs
            test_accuracy = m.units[0].stored.result["test_accuracy"]
        for u in m.units:
            if u.stored is None:
                result = _classify(ws, p, m, u, state, test_accuracy)
                analysis_id = save_analysis(ws.db, KIND, u.params, result)
                computed += 1
            else:
                result, analysis_id = u.stored.result, u.stored.id
            results.append({
                "model": label(m.spec), "set": u.set.name, "method": u.set.method,
                "set_id": u.set.summary.id, "analysis_id": analysis_id,
                "reused": u.stored is not None, **result,
            })  # fmt: skip
        if m.embedding is not None:
            embeddings.append(_embedding(ws, p, m, state, out))
            computed += not embeddings[-1]["reused"]
        stored = m.real_stored or find_analysis(ws.db, REAL_MODEL, m.real_params)
        models.append({
            "model": label(m.spec), "arch": m.spec.arch, "width": m.spec.width,
            "epochs": m.spec.epochs, "steps": m.train.steps, "batch_size": m.train.batch_size,
            "test_accuracy": test_accuracy,
            "paper_test_accuracy": PAPER_TEST_ACCURACY.get((m.spec.arch, m.spec.width)),
            "real_model_id": stored.id if stored is not None else None,
            "trained": bool(now),
        })  # fmt: skip
    labels = [x["model"] for x in models]
    names = [s.name for s in p.sets]
    acc = np.array([[r["accuracy"] for r in results if r["model"] == m] for m in labels])
    ids = [r["analysis_id"] for r in results]
    figure = accuracy_figure(
        labels, [x["test_accuracy"] for x in models], names, acc, chance,
        out / f"inverse-accuracy-{_ids_tag(ids)}.png",
        title=f"real-data models classifying distilled sets ({len(p.test[1])} test images)",
    )  # fmt: skip
    for i in ids:
        set_analysis_figure(ws.db, i, str(figure))
    return InverseResult(
        list(p.data.classes), len(p.real[1]), len(p.test[1]), models, results, embeddings,
        figure, trained, computed,
    )  # fmt: skip


def _ids_tag(ids: list[int]) -> str:
    """The figure's name part: the unit ids, or a short hash of them when there are many."""
    if len(ids) <= 6:
        return "-".join(map(str, ids))
    import hashlib

    digest = hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:10]
    return f"{ids[0]}-{ids[-1]}-{digest}"


def _real_model(ws: Workspace, p: InversePlan, m: _Model):
    from ddsem.jobs.analyze.common import real_model

    key = {k: v for k, v in m.real_params.items() if k not in ("model", "train", "seed")}
    state, result, now = real_model(
        ws, m.model, m.train, p.real, (p.test[0], p.test[1]), key, p.request.seed,
        f"train {label(m.spec)} on real data ({m.spec.epochs} epochs, {m.train.steps} steps)",
    )  # fmt: skip
    if not now:
        ws.progress.note(f"{label(m.spec)}: the stored real-data model is reused")
    return state, result, now


def _classify(ws: Workspace, p: InversePlan, m: _Model, u: _Unit, state, test_accuracy):
    from ddsem.analyses.inverse import classify

    s = u.set
    with ws.progress.phase(f"{label(m.spec)} classifies {s.name}", 1) as advance:
        c = classify(m.model, state, s.images, s.labels, device=ws.torch_device())
        advance(1)
    return {
        "accuracy": c.accuracy,
        "per_class": c.per_class,
        "counts": c.counts,
        "images": len(c.labels),
        "predictions": c.predictions.tolist(),
        "labels": c.labels.tolist(),
        "chance": 1.0 / p.data.num_classes,
        "test_accuracy": test_accuracy,
    }


def _embedding(ws: Workspace, p: InversePlan, m: _Model, state, out: Path) -> dict[str, Any]:
    """The model's embedding unit (computed when missing) and its figure, redrawn."""
    import numpy as np

    from ddsem.analyses.inverse import embedding_figure
    from ddsem.db.analyses import save_analysis, set_analysis_figure

    u = m.embedding
    assert u is not None
    if u.stored is None:
        record = _embed(ws, p, m, state)
        analysis_id = save_analysis(ws.db, EMBED_KIND, u.params, record)
    else:
        record, analysis_id = u.stored.result, u.stored.id
    sets = {
        s["set"]: (np.asarray(s["xy"], dtype=float).reshape(-1, 2), np.asarray(s["labels"]))
        for s in record["sets"]
    }
    what = {"umap": "UMAP", "tsne": "t-SNE (umap-learn not installed)"}.get(
        record["embedder"], record["embedder"]
    )
    figure = embedding_figure(
        np.asarray(record["test_xy"], dtype=float).reshape(-1, 2),
        np.asarray(record["test_labels"]),
        sets,
        list(p.data.classes),
        out / f"inverse-embedding-{analysis_id}.png",
        title=f"{what} of {label(m.spec)} penultimate features ({record['features']}-d)\n"
        f"{len(record['test_labels'])} real test images (dots), "
        f"{sum(len(v[1]) for v in sets.values())} distilled (marked), coloured by class",
    )
    set_analysis_figure(ws.db, analysis_id, str(figure))
    return {
        "model": label(m.spec),
        "analysis_id": analysis_id,
        "reused": u.stored is not None,
        "embedder": record["embedder"],
        "features": record["features"],
        "test_points": len(record["test_labels"]),
        "set_points": {name: len(v[1]) for name, v in sets.items()},
        "figure": str(figure),
    }


def _embed(ws: Workspace, p: InversePlan, m: _Model, state) -> dict[str, Any]:
    import numpy as np

    from ddsem.analyses.inverse import embed_2d, penultimate_features
    from ddsem.data import stratified_indices

    test_x, test_y, test_idx = p.test
    pick = stratified_indices(test_y.numpy(), p.request.embed_test, INVERSE.embed_seed)
    device = ws.torch_device()
    with ws.progress.phase(f"embed {label(m.spec)} features", 2) as advance:
        parts = [penultimate_features(m.model, state, test_x[pick], device=device)]
        parts += [penultimate_features(m.model, state, s.images, device=device) for s in p.sets]
        advance(1)
        xy, embedder = embed_2d(
            np.concatenate(parts), INVERSE.umap_neighbors, INVERSE.embed_seed, p.embedder
        )
        advance(1)
    xy = np.round(xy.astype(np.float64), 4)
    bounds = np.cumsum([0, *(len(x) for x in parts)])
    return {
        "embedder": embedder,
        "features": int(parts[0].shape[1]) if parts[0].ndim == 2 else 0,
        "test_indices": np.asarray(test_idx)[pick].astype(int).tolist(),
        "test_labels": test_y[pick].numpy().astype(int).tolist(),
        "test_xy": xy[: bounds[1]].tolist(),
        "sets": [
            {
                "set": s.name,
                "set_id": s.summary.id,
                "labels": s.labels.numpy().astype(int).tolist(),
                "xy": xy[bounds[k + 1] : bounds[k + 2]].tolist(),
            }
            for k, s in enumerate(p.sets)
        ],
    }
