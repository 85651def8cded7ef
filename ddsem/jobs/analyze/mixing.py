"""Job ``analyze mixing`` (section 3, Fig. 3 right, appendix B): each distilled set plus k real
images per class against the same number of real images alone (paper: adding 2-50 real images
to 10 distilled images per class lowers the accuracy).

One unit is one (line, count): a line is a distilled set, or the random-real baseline (as many
random real images per class as a set has distilled ones; one baseline per distinct class
histogram of the sets). A unit trains ``runs`` models (seeds ``seed * 1000 + r``, one
population) on the line's images plus the count's extra real images with the distilled-data
protocol (``TrainConfig``: 300 full-batch steps, SGD lr 0.01, momentum 0.9) and stores their
test accuracies, with the indices of the real images used. Every unit uses the same seeds, so
differences (a count against +0, a set against the baseline) are paired over seeds.

The real images are drawn class-stratified from one permutation per class seeded by the
global ``--seed`` (recorded as ``draw_seed``): the extra images of count k are the first k of
each class (nested over counts, the same for every line), the baseline's own images the last
ones (never an extra image). A re-run trains only the missing units and redraws the figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.config import MixingConfig, ModelConfig, TrainConfig
from ddsem.errors import UserError
from ddsem.jobs.analyze.common import OUT, check_image_shapes, choose_sets, figure_folder
from ddsem.jobs.common import DataSource, at_least, check, convnet_fits, seed_number

if TYPE_CHECKING:
    from ddsem.data import ImageData
    from ddsem.jobs.analyze.common import AnalysisSet
    from ddsem.jobs.workspace import Workspace

KIND = "mixing"
MIXING = MixingConfig()
TRAIN = TrainConfig()
MODEL = ModelConfig()
SET, RANDOM = "set", "random-real"  # the two roles of a line

__all__ = ["MIXING", "MixingPlan", "MixingRequest", "MixingResult", "plan", "preflight", "run"]


@dataclass(frozen=True)
class MixingRequest:
    methods: tuple[str, ...] = ()  # each method's newest set
    set_names: tuple[str, ...] = ()  # (neither: every set)
    counts: tuple[int, ...] = MIXING.counts  # real images added per class
    width: int = MODEL.width
    depth: int = MODEL.depth
    runs: int = MIXING.runs
    steps: int = TRAIN.steps  # distilled-data protocol: full-batch steps
    test_limit: int | None = None  # class-stratified test subset (None: the whole test split)
    data: DataSource = None
    seed: int = 0  # draws the real images; run r trains from seed * 1000 + r
    out: str = OUT

    def __post_init__(self) -> None:
        counts = tuple(self.counts)
        check(len(counts) > 0, "--counts is empty")
        for k in counts:
            if isinstance(k, bool) or not isinstance(k, Integral):
                raise UserError(f"--counts must be whole numbers of images per class, got {k!r}")
            at_least(k, 0, "--counts")
        dupes = sorted({k for k in counts if counts.count(k) > 1})
        check(not dupes, f"--counts lists {', '.join(map(str, dupes))} more than once")
        object.__setattr__(self, "counts", tuple(sorted(int(k) for k in counts)))
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "set_names", tuple(self.set_names))
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
        return replace(TRAIN, steps=int(self.steps))

    def model(self, num_classes: int) -> ModelConfig:
        return ModelConfig(width=int(self.width), depth=int(self.depth), num_classes=num_classes)


@dataclass
class Line:
    """A distilled set, or the random-real baseline of a class histogram."""

    role: str  # set | random-real
    name: str
    method: str | None
    per_class: list[int]  # the line's own images per class (before the extra real ones)
    set: AnalysisSet | None = field(default=None, repr=False)

    @property
    def ipc(self) -> int | None:
        """Images per class when every class has as many, else None."""
        return self.per_class[0] if len(set(self.per_class)) == 1 else None

    @property
    def label(self) -> str:
        per = f"{self.ipc}/class" if self.ipc is not None else f"{sum(self.per_class)} images"
        if self.role == RANDOM:
            return f"random real ({per})"
        return f"{self.name} ({self.method}, {per})"


@dataclass
class Unit:
    line: Line
    count: int
    params: dict[str, Any]
    stored: Any  # StoredAnalysis or None


@dataclass
class MixingPlan:
    request: MixingRequest
    data: ImageData = field(repr=False)
    model: ModelConfig
    lines: list[Line]
    test_idx: Any = field(repr=False)
    units: list[Unit] = field(repr=False)
    sets: list[AnalysisSet] = field(repr=False)  # in one space (sets_space)

    @property
    def missing(self) -> list[Unit]:
        return [u for u in self.units if u.stored is None]


def preflight(ws: Workspace, request: MixingRequest) -> None:
    """What can be refused before the real data is looked for: --out and the sets (known, of
    CIFAR's image shape); ``plan`` checks them again against the data, and the counts."""
    figure_folder(request.out)
    check_image_shapes(choose_sets(ws.db, request.methods, request.set_names))


def plan(ws: Workspace, request: MixingRequest) -> MixingPlan:
    """The lines, their units and which are stored (reads only)."""
    import numpy as np

    from ddsem.analyses.mixing import check_counts
    from ddsem.config import to_dict
    from ddsem.data import stratified_indices
    from ddsem.db.analyses import find_analysis
    from ddsem.jobs.analyze.common import load_sets, sets_space
    from ddsem.jobs.common import load_data

    r = request
    figure_folder(r.out)
    summaries = choose_sets(ws.db, r.methods, r.set_names)
    check_image_shapes(summaries)
    space = sets_space(summaries)  # the sets, the baseline and the tests in one space
    data = load_data(r.data, summaries[0].dataset)
    model = r.model(data.num_classes)
    sets = load_sets(ws.db, summaries, data, model)
    if r.test_limit is not None:
        check(
            r.test_limit <= len(data.test_y),
            f"--test-limit must be between 1 and {len(data.test_y)}, got {r.test_limit}",
        )
    test_idx = stratified_indices(data.test_y, r.test_limit, 0)
    lines: list[Line] = []
    for s in sets:
        hist = np.bincount(s.labels.numpy(), minlength=data.num_classes).tolist()
        lines.append(Line(SET, s.name, s.method, [int(h) for h in hist], s))
    for hist in dict.fromkeys(tuple(ln.per_class) for ln in lines):  # distinct, in order
        lines.append(Line(RANDOM, RANDOM, None, list(hist)))
    check_counts(
        data.train_y, r.counts, [ln.per_class for ln in lines if ln.role == RANDOM], data.classes
    )
    common = {
        "draw_seed": r.seed, "model": to_dict(model), "train": to_dict(r.train),
        "seeds": r.seeds, "test_limit": r.test_limit, "test_images": len(test_idx),
        "dataset": data.name,
    }  # fmt: skip
    if space is not None:
        common["zca"] = space  # whitened real images: other units
    units = []
    for ln in lines:
        if ln.role == SET:
            assert ln.set is not None
            who: dict[str, Any] = {"role": SET, "set_id": ln.set.summary.id, "set": ln.name}
        else:
            who = {"role": RANDOM, "base_per_class": ln.per_class}
        for k in r.counts:
            params = {**who, "count": k, **common}
            units.append(Unit(ln, k, params, find_analysis(ws.db, KIND, params)))
    return MixingPlan(r, data, model, lines, test_idx, units, sets)


@dataclass
class MixingResult:
    lines: list[dict[str, Any]]  # per line: role, name, method, per_class, points
    counts: list[int]
    runs: int
    seeds: list[int]
    draw_seed: int
    train: dict[str, Any]
    test_images: int
    chance: float
    trained: int  # units trained by this run (the rest were stored)
    figure: Path

    @property
    def analysis_ids(self) -> list[int]:
        return [p["analysis_id"] for ln in self.lines for p in ln["points"]]

    @property
    def protocol(self) -> str:
        t = self.train
        paper = " (the paper's)" if t == _train_dict(TRAIN) else ""
        return (
            f"distilled-data protocol{paper}: {t['steps']} full-batch steps, SGD lr {t['lr']:g}, "
            f"momentum {t['momentum']:g}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "analysis_ids": self.analysis_ids,
            "figure": str(self.figure),
            "counts": self.counts,
            "runs": self.runs,
            "seeds": self.seeds,
            "draw_seed": self.draw_seed,
            "protocol": self.protocol,
            "train": self.train,
            "test_images": self.test_images,
            "chance": self.chance,
            "trained": self.trained,
            "sd": "sample standard deviation over seeds (n - 1); null for one seed",
            "test": "paired t-test over seeds (scipy.stats.ttest_rel): vs_zero = this count "
            "minus +0 of the same line, vs_random = the set minus the random-real baseline",
            "lines": self.lines,
        }


def _train_dict(train: TrainConfig) -> dict[str, Any]:
    from ddsem.config import to_dict

    return to_dict(train)


def _images(p: MixingPlan, u: Unit, perms: dict) -> tuple[Any, Any, list[int], list[int]]:
    """The unit's training images and labels, with the real images' indices (extra, base)."""
    import torch

    from ddsem.analyses.mixing import draw_base, draw_extra
    from ddsem.data import normalize

    d = p.data
    extra = draw_extra(perms, u.count)
    base = draw_base(perms, u.line.per_class) if u.line.role == RANDOM else extra[:0]
    real = base.tolist() + extra.tolist()
    rx = p.sets[0].in_space(normalize(d.train_x[real])) if real else None
    ry = torch.from_numpy(d.train_y[real].astype("int64"))
    if u.line.role == SET:
        assert u.line.set is not None
        x, y = u.line.set.images, u.line.set.labels
        if rx is not None:
            x, y = torch.cat([x, rx]), torch.cat([y, ry])
    else:
        assert rx is not None  # a baseline has as many images as a non-empty set
        x, y = rx, ry
    return x, y, extra.tolist(), base.tolist()


def run(ws: Workspace, request: MixingRequest) -> MixingResult:
    """Train and store the missing units, read the others, draw the figure."""
    import torch

    from ddsem.analyses.mixing import (
        MixingLine,
        class_permutations,
        mixed_accuracies,
        mixing_figure,
        paired,
        summary,
    )
    from ddsem.data import normalize
    from ddsem.db.analyses import save_analysis, set_analysis_figure
    from ddsem.train import initial_states

    p = plan(ws, request)
    r, d = request, p.data
    todo = p.missing
    if todo:
        ws.db.require_writable()  # one line now, not after the training
    results: dict[int, tuple[int, dict[str, Any], bool]] = {
        id(u): (u.stored.id, u.stored.result, True) for u in p.units if u.stored is not None
    }
    if todo:
        perms = class_permutations(d.train_y, r.seed)
        test_x = p.sets[0].in_space(normalize(d.test_x[p.test_idx]))  # the sets' one space
        test_y = torch.from_numpy(d.test_y[p.test_idx].astype("int64"))
        device = ws.torch_device()
        init = initial_states(p.model, r.seeds)
        with ws.progress.phase("mixing: train", r.steps * r.runs * len(todo)) as advance:
            for u in todo:
                x, y, extra, base = _images(p, u, perms)
                accs = mixed_accuracies(
                    x, y, p.model, r.train, init, test_x, test_y, device=device, progress=advance
                )
                result = {
                    "accuracies": accs, "seeds": r.seeds, "images": len(y),
                    "extra_indices": extra, "base_indices": base,
                }  # fmt: skip
                uid = save_analysis(ws.db, KIND, u.params, result)
                results[id(u)] = (uid, result, False)

    by_line: dict[int, dict[int, Unit]] = {}
    for u in p.units:
        by_line.setdefault(id(u.line), {})[u.count] = u
    baseline_of = {tuple(ln.per_class): ln for ln in p.lines if ln.role == RANDOM}
    rows, drawn = [], []
    for ln in p.lines:
        units = by_line[id(ln)]
        accs = {k: results[id(units[k])][1]["accuracies"] for k in r.counts}
        rand = baseline_of[tuple(ln.per_class)]
        points = []
        for k in r.counts:
            uid, res, reused = results[id(units[k])]
            vs_zero = paired(accs[0], accs[k]) if 0 in accs and k != 0 else None
            vs_random = None
            if ln.role == SET:
                base_accs = results[id(by_line[id(rand)][k])][1]["accuracies"]
                vs_random = paired(base_accs, accs[k])
            points.append({
                "count": k, "images": res["images"], **summary(accs[k]),
                "vs_zero": vs_zero, "vs_random": vs_random,
                "analysis_id": uid, "reused": reused,
            })  # fmt: skip
        rows.append({
            "role": ln.role, "name": ln.name, "method": ln.method, "label": ln.label,
            "per_class": ln.per_class, "ipc": ln.ipc, "points": points,
        })  # fmt: skip
        drawn.append(
            MixingLine(
                ln.label, ln.role == RANDOM, list(r.counts),
                [pt["mean"] for pt in points], [pt["sd"] for pt in points],
            )
        )  # fmt: skip
    ipcs = {ln.ipc for ln in p.lines}
    base = next(iter(ipcs)) if len(ipcs) == 1 else None
    chance = 1.0 / d.num_classes
    ids = [pt["analysis_id"] for row in rows for pt in row["points"]]
    figure = mixing_figure(
        drawn,
        figure_folder(r.out) / _figure_name(ids),
        base=base,
        chance=chance,
        runs=r.runs,
        title="distilled + real images vs real images alone",
    )
    stale = [u for u in p.units if u.stored is None or u.stored.figure_path != str(figure)]
    if stale and not ws.db.readonly:
        for i in ids:
            set_analysis_figure(ws.db, i, str(figure))
    return MixingResult(
        rows, list(r.counts), r.runs, r.seeds, r.seed, _train_dict(r.train), len(p.test_idx),
        chance, len(todo), figure,
    )  # fmt: skip


def _figure_name(ids: list[int]) -> str:
    """mixing-<unit ids>.png; a hash of them when there are many."""
    if len(ids) <= 8:
        return f"{KIND}-{'-'.join(map(str, ids))}.png"
    import hashlib

    return f"{KIND}-{hashlib.sha1(repr(ids).encode()).hexdigest()[:10]}.png"
