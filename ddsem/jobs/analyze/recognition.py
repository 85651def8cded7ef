"""Job ``analyze recognition``: when a model trained on real data learns to recognise distilled
data (paper section 4.2, Fig. 5).

A unit is one seed's curves (accuracy on the real test images and on every chosen set, at
every ``every``-th iteration) for one (model, training, real and test images, list of sets):
each is stored as it finishes, so a killed run keeps its finished seeds and a re-run trains
only the missing ones; an identical run trains nothing and redraws the figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.config import ModelConfig, RecognitionConfig
from ddsem.jobs.analyze.common import OUT, choose_sets, figure_folder
from ddsem.jobs.common import DataSource, at_least, check, convnet_fits, in_range, seed_number

if TYPE_CHECKING:
    from ddsem.db.sets import SetSummary
    from ddsem.jobs.analyze.common import AnalysisSet
    from ddsem.jobs.workspace import Workspace

KIND = "recognition"
RECOGNITION = RecognitionConfig()
MODEL = ModelConfig()

__all__ = [
    "KIND",
    "RecognitionPlan",
    "RecognitionRequest",
    "RecognitionResult",
    "plan",
    "preflight",
    "run",
]


@dataclass(frozen=True)
class RecognitionRequest:
    methods: tuple[str, ...] = ()  # each method's newest set
    set_names: tuple[str, ...] = ()  # (neither: every set in the database)
    width: int = MODEL.width
    depth: int = MODEL.depth
    epochs: int = RECOGNITION.epochs
    train_samples: int | None = None  # None: every real training image
    test_limit: int | None = None  # None: the whole test split
    every: int = RECOGNITION.every
    runs: int = RECOGNITION.seeds
    tolerance: float = RECOGNITION.tolerance
    data: DataSource = None
    seed: int = 0  # run r starts from seed * 1000 + r; the minibatch order is this seed's
    out: str = OUT

    def __post_init__(self) -> None:
        convnet_fits(self.width, self.depth, MODEL.image_size)
        at_least(self.epochs, 1, "--epochs")
        at_least(self.train_samples, 1, "--train-samples")
        at_least(self.test_limit, 1, "--test-limit")
        at_least(self.every, 1, "--every")
        at_least(self.runs, 1, "--runs")
        in_range(self.tolerance, 0, 1, "--tolerance")
        seed_number(self.seed)
        for name in (*self.methods, *self.set_names):
            check(bool(name.strip()), "--method and --set take comma-separated names")

    @property
    def config(self) -> RecognitionConfig:
        return replace(
            RECOGNITION, epochs=self.epochs, every=self.every, tolerance=self.tolerance,
            seeds=self.runs,
        )  # fmt: skip

    @property
    def seeds(self) -> list[int]:
        return [self.seed * 1000 + r for r in range(self.runs)]


@dataclass
class SeedUnit:
    seed: int
    params: dict[str, Any]  # the stored row's key
    stored: Any = None  # StoredAnalysis when done


@dataclass
class RecognitionPlan:
    request: RecognitionRequest
    model: ModelConfig
    sets: list[AnalysisSet] = field(repr=False)  # in the order chosen
    real: tuple[Any, Any] = field(repr=False)
    test: tuple[Any, Any] = field(repr=False)
    num_classes: int
    steps: int
    params: dict[str, Any]  # what every unit shares (a unit adds its seed)
    units: list[SeedUnit]

    @property
    def missing(self) -> list[SeedUnit]:
        return [u for u in self.units if u.stored is None]


def preflight(ws: Workspace, request: RecognitionRequest) -> list[SetSummary]:
    """What can be refused before the real data is looked for: the figure folder and the sets
    (a method with no set); ``plan`` checks the same again, and the sets' shapes."""
    figure_folder(request.out)
    return choose_sets(ws.db, request.methods, request.set_names)


def plan(ws: Workspace, request: RecognitionRequest) -> RecognitionPlan:
    """The sets, the real and test images, and which seeds are stored (reads only)."""
    from ddsem.analyses.recognition import train_config
    from ddsem.config import to_dict
    from ddsem.db.analyses import find_analysis
    from ddsem.jobs.analyze.common import load_sets, real_tensors, sets_space, test_tensors

    req = request
    summaries = preflight(ws, req)
    space = sets_space(summaries)  # one model learns the real images in the sets' one space
    dataset = summaries[0].dataset  # the data set of the sets (load_sets refuses a mixture)
    data, real_x, real_y, _ = real_tensors(req.data, dataset, req.train_samples, req.seed)
    model = replace(
        MODEL,
        width=req.width,
        depth=req.depth,
        num_classes=data.num_classes,
        channels=data.train_x.shape[3],
        image_size=data.train_x.shape[1],
    )
    sets = load_sets(ws.db, summaries, data, model)
    zca = sets[0].zca
    real_x = sets[0].in_space(real_x)
    test_x, test_y, _ = test_tensors(data, req.test_limit, zca)
    train = train_config(req.config, len(real_y))
    params = {
        "model": to_dict(model),
        "train": to_dict(train),
        "epochs": req.epochs,
        "every": req.every,
        "dataset": data.name,
        "train_samples": req.train_samples,
        "train_images": len(real_y),
        "sample_seed": req.seed,
        "test_limit": req.test_limit,
        "test_images": len(test_y),
        "set_ids": sorted(s.summary.id for s in sets),
        "batch_seed": req.seed,
    }
    if space is not None:
        params["zca"] = space  # a model trained on whitened images is another unit
    units = []
    for seed in req.seeds:
        key = {**params, "init_seed": seed}
        units.append(SeedUnit(seed, key, find_analysis(ws.db, KIND, key)))
    return RecognitionPlan(
        req, model, sets, (real_x, real_y), (test_x, test_y), data.num_classes, train.steps,
        params, units,
    )  # fmt: skip


@dataclass
class SourceRow:
    """One curve over the seeds: the test images or a set."""

    source: str  # "test" or the set's name
    method: str | None
    set_id: int | None
    images: int
    final: list[float]  # final accuracy per seed
    settled: list[int]  # settling iteration per seed
    settled_of_mean: int
    mean: list[float] = field(repr=False)  # the mean curve over seeds
    sd: list[float] = field(repr=False)  # its standard deviation (0 for one seed)
    curves: list[list[float]] = field(repr=False)  # (seeds, checkpoints)

    def as_json(self) -> dict[str, Any]:
        import numpy as np

        n = len(self.final)
        sd = float(np.std(self.final, ddof=1)) if n > 1 else 0.0
        settled_sd = float(np.std(self.settled, ddof=1)) if n > 1 else 0.0
        return {
            "source": self.source,
            "method": self.method,
            "set_id": self.set_id,
            "images": self.images,
            "final_accuracy": self.final,
            "final_accuracy_mean": float(np.mean(self.final)),
            "final_accuracy_sd": sd,
            "settled_iteration": self.settled,
            "settled_iteration_mean": float(np.mean(self.settled)),
            "settled_iteration_sd": settled_sd,
            "settled_iteration_of_mean_curve": self.settled_of_mean,
            "n": n,
            "mean_curve": self.mean,
            "sd_curve": self.sd,
        }


@dataclass
class RecognitionResult:
    analysis_ids: list[int]
    seeds: list[int]
    trained: list[int]  # the seeds trained by this run (the rest were stored)
    params: dict[str, Any]
    steps: int
    iterations: list[int]
    rows: list[SourceRow]  # the test images first, then the sets in the order chosen
    chance: float  # 1 / classes
    tolerance: float
    figure: Path

    def as_json(self) -> dict[str, Any]:
        return {
            "analysis_ids": self.analysis_ids,
            "seeds": self.seeds,
            "trained": self.trained,
            "runs": len(self.seeds),
            "params": self.params,
            "steps": self.steps,
            "iterations": self.iterations,
            "chance": self.chance,
            "tolerance": self.tolerance,
            "sources": [r.as_json() for r in self.rows],
            "figure": str(self.figure),
        }


def run(ws: Workspace, request: RecognitionRequest) -> RecognitionResult:
    """Train and store the missing seeds, read the others, summarise and draw the figure."""
    from ddsem.db.analyses import save_analysis, set_analysis_figure

    p = plan(ws, request)
    ws.db.require_writable()  # the figure's path is stored even when every seed is
    results: dict[int, dict[str, Any]] = {}
    ids: dict[int, int] = {}
    for u in p.units:
        if u.stored is not None:
            results[u.seed], ids[u.seed] = u.stored.result, u.stored.id
    todo = p.missing
    if todo:
        by_seed = {u.seed: u for u in todo}

        def store(curves) -> None:
            result = _record(p, curves)
            ids[curves.seed] = save_analysis(ws.db, KIND, by_seed[curves.seed].params, result)
            results[curves.seed] = result

        _train(ws, p, [u.seed for u in todo], store)
    seeds = request.seeds
    analysis_ids = [ids[s] for s in seeds]
    iterations, rows = _rows(p, [results[s] for s in seeds], request.tolerance)
    figure = _figure(figure_folder(request.out), p, analysis_ids, iterations, rows)
    for i in analysis_ids:
        set_analysis_figure(ws.db, i, str(figure))
    return RecognitionResult(
        analysis_ids, seeds, [u.seed for u in todo], p.params, p.steps, iterations, rows,
        1.0 / p.num_classes, request.tolerance, figure,
    )  # fmt: skip


def _train(ws: Workspace, p: RecognitionPlan, seeds: list[int], store) -> None:
    from ddsem.analyses.recognition import recognition_curves, train_config

    train = train_config(p.request.config, len(p.real[1]))
    with ws.progress.phase(f"recognition: {len(seeds)} seed(s)", train.steps * len(seeds)) as adv:
        recognition_curves(
            p.model, train, p.real, p.test, [(s.images, s.labels) for s in p.sets], seeds,
            every=p.request.every, batch_seed=p.request.seed, device=ws.torch_device(),
            progress=adv, done=store,
        )  # fmt: skip


def _record(p: RecognitionPlan, curves) -> dict[str, Any]:
    """A seed's stored result: its curves, each set's under its id."""
    return {
        "iterations": curves.iterations,
        "test": [round(a, 6) for a in curves.test],
        "sets": {
            str(s.summary.id): [round(a, 6) for a in c]
            for s, c in zip(p.sets, curves.sets, strict=True)
        },
    }


def _rows(p: RecognitionPlan, results: list[dict[str, Any]], tolerance: float):
    from ddsem.analyses.recognition import summarize

    iterations = results[0]["iterations"]
    sources: list[tuple[str, str | None, int | None, int, list[list[float]]]] = [
        ("test", None, None, len(p.test[1]), [r["test"] for r in results])
    ]
    for s in p.sets:
        curves = [r["sets"][str(s.summary.id)] for r in results]
        sources.append((s.name, s.method, s.summary.id, len(s.labels), curves))
    rows = []
    for name, method, set_id, images, curves in sources:
        c = summarize(iterations, curves, tolerance)
        rows.append(
            SourceRow(name, method, set_id, images, c.final, c.settled, c.settled_of_mean,
                      c.mean, c.sd, curves)
        )  # fmt: skip
    return iterations, rows


def _figure(out_dir: Path, p: RecognitionPlan, ids: list[int], iterations, rows) -> Path:
    from ddsem.analyses.recognition import recognition_figure

    series, settled = {}, {}
    for r in rows:
        label = f"real test ({r.images})" if r.set_id is None else f"{r.source} ({r.method})"
        series[label], settled[label] = r.curves, r.settled_of_mean
    m, req = p.model, p.request
    title = (
        f"recognition along training on real data: ConvNet-{m.width}-{m.depth}, "
        f"{p.params['train_images']} real images\n{req.epochs} epochs of batch "
        f"{RECOGNITION.batch_size} ({p.steps} iterations); mean ± sd over {len(ids)} seed(s)"
    )
    return recognition_figure(
        iterations, series, out_dir / f"recognition-{ids[0]}-n{len(ids)}.png",
        plot_iterations=RECOGNITION.plot_iterations, chance=1.0 / p.num_classes,
        settled=settled, title=title,
    )  # fmt: skip
