"""Job ``analyze clipping`` (section 3, Fig. 3 left): the pixel intensities of each distilled set
against real images, the fraction outside [0, 1], and the retrained test accuracy of the set as
stored vs clipped to [0, 1] (paper: BPTT 58% -> 44%).

One unit is one (set, variant): ``runs`` models (seeds ``seed * 1000 + r``, one population)
trained on the set as stored or clipped with the distilled-data protocol (``TrainConfig``: 300
full-batch steps, lr 0.01, momentum 0.9) and tested on the real test images; each unit is
stored complete with its per-seed accuracies, so a re-run trains only what is missing. Both
variants use the same seeds, so the change is paired over seeds. Pixel statistics and the
histograms are recomputed on every run (no training) and the figure redrawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.config import ClippingConfig, ModelConfig, TrainConfig
from ddsem.jobs.analyze.common import OUT, check_image_shapes, choose_sets, figure_folder
from ddsem.jobs.common import DataSource, at_least, check, convnet_fits, seed_number

if TYPE_CHECKING:
    from ddsem.data import ImageData
    from ddsem.jobs.analyze.common import AnalysisSet
    from ddsem.jobs.workspace import Workspace

KIND = "clipping"
CLIPPING = ClippingConfig()
TRAIN = TrainConfig()
MODEL = ModelConfig()
VARIANTS = ("stored", "clipped")
REAL_NOTE = "real images are uint8 / 255: in [0, 1] by construction (0 outside)"

__all__ = ["ClippingPlan", "ClippingRequest", "ClippingResult", "plan", "preflight", "run"]


@dataclass(frozen=True)
class ClippingRequest:
    methods: tuple[str, ...] = ()  # each method's newest set
    set_names: tuple[str, ...] = ()  # (neither: every set)
    width: int = MODEL.width
    depth: int = MODEL.depth
    runs: int = CLIPPING.runs
    steps: int = TRAIN.steps  # distilled-data protocol: full-batch steps
    test_limit: int | None = None  # class-stratified test subset (None: the whole test split)
    data: DataSource = None
    seed: int = 0  # run r trains from seed * 1000 + r
    out: str = OUT

    def __post_init__(self) -> None:
        convnet_fits(self.width, self.depth, MODEL.image_size)
        at_least(self.runs, 1, "--runs")
        at_least(self.steps, 1, "--steps")
        at_least(self.test_limit, 1, "--test-limit")
        seed_number(self.seed)

    @property
    def seeds(self) -> list[int]:
        return [self.seed * 1000 + r for r in range(self.runs)]

    @property
    def train(self) -> TrainConfig:
        from dataclasses import replace

        return replace(TRAIN, steps=int(self.steps))

    def model(self, num_classes: int) -> ModelConfig:
        return ModelConfig(width=int(self.width), depth=int(self.depth), num_classes=num_classes)


@dataclass
class Unit:
    set: AnalysisSet
    variant: str  # stored | clipped
    params: dict[str, Any]
    stored: Any  # StoredAnalysis or None


@dataclass
class ClippingPlan:
    request: ClippingRequest
    data: ImageData = field(repr=False)
    sets: list[AnalysisSet] = field(repr=False)
    model: ModelConfig
    test_idx: Any = field(repr=False)
    units: list[Unit] = field(repr=False)

    @property
    def missing(self) -> list[Unit]:
        return [u for u in self.units if u.stored is None]


def preflight(ws: Workspace, request: ClippingRequest) -> None:
    """What can be refused before the real data is looked for: --out and the sets (known, of
    CIFAR's image shape); ``plan`` checks them again against the data."""
    figure_folder(request.out)
    check_image_shapes(choose_sets(ws.db, request.methods, request.set_names))


def plan(ws: Workspace, request: ClippingRequest) -> ClippingPlan:
    """The sets, their units and which are stored (reads only)."""
    from ddsem.config import to_dict
    from ddsem.data import stratified_indices
    from ddsem.db.analyses import find_analysis
    from ddsem.jobs.analyze.common import load_sets
    from ddsem.jobs.common import load_data

    r = request
    figure_folder(r.out)
    summaries = choose_sets(ws.db, r.methods, r.set_names)
    check_image_shapes(summaries)
    data = load_data(r.data, summaries[0].dataset)
    model = r.model(data.num_classes)
    sets = load_sets(ws.db, summaries, data, model)
    if r.test_limit is not None:
        check(
            r.test_limit <= len(data.test_y),
            f"--test-limit must be between 1 and {len(data.test_y)}, got {r.test_limit}",
        )
    test_idx = stratified_indices(data.test_y, r.test_limit, 0)
    units = []
    for s in sets:
        for variant in VARIANTS:
            params = {
                "set_id": s.summary.id, "set": s.name, "variant": variant,
                "model": to_dict(model), "train": to_dict(r.train), "seeds": r.seeds,
                "test_limit": r.test_limit, "test_images": len(test_idx), "dataset": data.name,
            }  # fmt: skip
            if s.summary.zca is not None:
                params["zca"] = s.summary.zca  # trained and tested in the set's ZCA space
            units.append(Unit(s, variant, params, find_analysis(ws.db, KIND, params)))
    return ClippingPlan(r, data, sets, model, test_idx, units)


@dataclass
class SetClipping:
    name: str
    method: str
    images: int
    pixels: dict[str, Any]  # PixelStats.as_json of the set as stored
    density: list[float]  # histogram over ClippingResult.edges
    stored: dict[str, Any]  # accuracies, mean, sd
    clipped: dict[str, Any]
    difference: dict[str, Any]  # clipped - stored: mean, sd, t, p, n
    analysis_ids: dict[str, int]  # variant -> stored unit

    def as_json(self) -> dict[str, Any]:
        return {
            "set": self.name,
            "method": self.method,
            "images": self.images,
            **self.pixels,
            "stored": self.stored,
            "clipped": self.clipped,
            "difference": self.difference,
            "analysis_ids": self.analysis_ids,
            "density": self.density,
        }


@dataclass
class ClippingResult:
    sets: list[SetClipping]
    real: dict[str, Any]  # PixelStats.as_json of the real training images, density, note
    edges: list[float]
    runs: int
    seeds: list[int]
    steps: int
    test_images: int
    chance: float
    trained: int  # units trained by this run (the rest were stored)
    figure: Path

    @property
    def analysis_ids(self) -> list[int]:
        return [i for s in self.sets for i in s.analysis_ids.values()]

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "analysis_ids": self.analysis_ids,
            "figure": str(self.figure),
            "runs": self.runs,
            "seeds": self.seeds,
            "steps": self.steps,
            "test_images": self.test_images,
            "chance": self.chance,
            "trained": self.trained,
            "sd": "sample standard deviation over seeds (n - 1); null for one seed",
            "test": "paired t-test over seeds (scipy.stats.ttest_rel), clipped vs stored",
            "real": self.real,
            "edges": self.edges,
            "sets": [s.as_json() for s in self.sets],
        }


def run(ws: Workspace, request: ClippingRequest) -> ClippingResult:
    """Train and store the missing units, read the others, draw the figure."""
    import torch

    from ddsem.analyses.clipping import (
        FigureSet,
        clip_images,
        clipping_figure,
        histogram_edges,
        paired_comparison,
        pixel_stats,
        real_histogram,
        retrain,
        set_histogram,
    )
    from ddsem.data import normalize
    from ddsem.db.analyses import save_analysis, set_analysis_figure
    from ddsem.train import initial_states

    p = plan(ws, request)
    r, d = request, p.data
    todo = p.missing
    if todo:
        ws.db.require_writable()  # one line now, not after the training
    results: dict[tuple[int, str], tuple[int, dict[str, Any]]] = {
        (u.set.summary.id, u.variant): (u.stored.id, u.stored.result)
        for u in p.units
        if u.stored is not None
    }
    if todo:
        test_normalised = normalize(d.test_x[p.test_idx])
        test_y = torch.from_numpy(d.test_y[p.test_idx].astype("int64"))
        device = ws.torch_device()
        init = initial_states(p.model, r.seeds)
        with ws.progress.phase("clipping: retrain", r.steps * r.runs * len(todo)) as advance:
            for u in todo:
                # pixels are clipped in [0, 1] pixel space: a ZCA set's images are inverted
                # first, then whitened again to be trained on in the set's space
                shown = u.set.normalised()
                if u.variant != "stored":
                    shown = clip_images(shown)
                images = u.set.images if u.variant == "stored" else u.set.in_space(shown)
                accs = retrain(
                    images, u.set.labels, p.model, r.train, init,
                    u.set.in_space(test_normalised), test_y, device=device, progress=advance,
                )  # fmt: skip
                result = {"accuracies": accs, "seeds": r.seeds, **pixel_stats(shown).as_json()}
                uid = save_analysis(ws.db, KIND, u.params, result)
                results[(u.set.summary.id, u.variant)] = (uid, result)

    cfg = CLIPPING
    real_density, real_stats = real_histogram(d.train_x, cfg.bins, cfg.value_range)
    edges = [float(e) for e in histogram_edges(cfg.bins, cfg.value_range)]
    rows, figure_sets = [], []
    for s in p.sets:
        (sid, stored), (cid, clipped) = (results[(s.summary.id, v)] for v in VARIANTS)
        cmp = paired_comparison(stored["accuracies"], clipped["accuracies"])
        stats = pixel_stats(s.normalised())
        density = set_histogram(s.normalised(), cfg.bins, cfg.value_range)
        a, b = cmp.summary(cmp.a), cmp.summary(cmp.b)
        rows.append(
            SetClipping(
                s.name, s.method, len(s.labels), stats.as_json(),
                [float(v) for v in density], a, b, cmp.difference(),
                {"stored": sid, "clipped": cid},
            )
        )  # fmt: skip
        figure_sets.append(
            FigureSet(s.name, density, stats.outside, (a["mean"], a["sd"]), (b["mean"], b["sd"]))
        )
    chance = 1.0 / d.num_classes
    ids = [i for row in rows for i in row.analysis_ids.values()]
    path = figure_folder(r.out) / _figure_name(ids)
    figure = clipping_figure(
        histogram_edges(cfg.bins, cfg.value_range),
        real_density,
        figure_sets,
        path,
        chance=chance,
        runs=r.runs,
    )
    stale = [u for u in p.units if u.stored is None or u.stored.figure_path != str(figure)]
    if stale:
        ws.db.require_writable()
        for i in ids:
            set_analysis_figure(ws.db, i, str(figure))
    real = {
        **real_stats.as_json(),
        "images": len(d.train_y),
        "note": REAL_NOTE,
        "density": [float(v) for v in real_density],
    }
    return ClippingResult(
        rows, real, edges, r.runs, r.seeds, r.steps, len(p.test_idx), chance, len(todo), figure
    )


def _figure_name(ids: list[int]) -> str:
    """clipping-<unit ids>.png; a hash of them when there are many."""
    if len(ids) <= 8:
        return f"{KIND}-{'-'.join(map(str, ids))}.png"
    import hashlib

    return f"{KIND}-{hashlib.sha1(repr(ids).encode()).hexdigest()[:10]}.png"
