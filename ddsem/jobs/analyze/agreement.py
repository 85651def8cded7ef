"""Job ``analyze agreement`` (paper section 4.1, Fig. 4; appendices B and C): do models trained
on distilled data predict like early-stopped real models rather than subset-trained ones?

Stored units (each one row, written complete as it finishes, so a killed run keeps them):
- the test predictions (uint8, one class per test image) and accuracies of every pool (kind
  ``agreement-pool``, the arrays as a .npz payload): one row per chunk of subset-trained
  models (each trained on its own subset, as the paper's code), one per
  early-stopped run (its predictions after every iteration), one per chunk of weight-decay
  models, and one per set for its distilled-trained models (several seeds);
- one comparison per set and window (kind ``agreement``): the agreements and appendix C's test.
A re-run with another window or another set compares the stored predictions: nothing is
retrained. Pools are keyed by what trained them, never by the pool's size, so a larger pool
reuses the chunks of a smaller one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.config import AgreementConfig, ModelConfig, TrainConfig
from ddsem.errors import UserError
from ddsem.jobs.analyze.common import OUT, choose_sets, figure_folder
from ddsem.jobs.common import (
    DataSource,
    at_least,
    check,
    convnet_fits,
    in_range,
    seed_number,
)

if TYPE_CHECKING:
    import numpy as np

    from ddsem.db.sets import SetSummary
    from ddsem.jobs.analyze.common import AnalysisSet
    from ddsem.jobs.workspace import Workspace

KIND = "agreement"
POOL_KIND = "agreement-pool"  # a pool chunk's (or a set's distilled models') test predictions
AGREEMENT = AgreementConfig()
MODEL = ModelConfig()
DISTILLED = TrainConfig()  # the distilled-data protocol: 300 full-batch steps, lr 0.01, mom. 0.9

__all__ = ["KIND", "AgreementRequest", "AgreementResult", "plan", "preflight", "run"]


@dataclass(frozen=True)
class AgreementRequest:
    methods: tuple[str, ...] = ()  # each method's newest set
    set_names: tuple[str, ...] = ()  # (neither: every set in the database)
    pool: int = AGREEMENT.pool
    fraction_low: float = AGREEMENT.fraction_low
    fraction_high: float = AGREEMENT.fraction_high
    epochs: int = AGREEMENT.epochs
    early_runs: int = AGREEMENT.early_runs
    early_epochs: int = AGREEMENT.early_epochs
    weight_decay: bool = False  # appendix B's pool, behind a flag
    weight_decay_pool: int = AGREEMENT.weight_decay_pool
    weight_decay_epochs: int = AGREEMENT.weight_decay_epochs
    chunk: int = AGREEMENT.chunk
    window: float = AGREEMENT.window  # points of test accuracy
    runs: int = AGREEMENT.distilled_seeds  # distilled-trained models per set
    width: int = MODEL.width
    depth: int = MODEL.depth
    train_samples: int | None = None  # None: every real training image
    test_limit: int | None = None  # None: the whole test split
    data: DataSource = None
    seed: int = 0
    out: str = OUT

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "set_names", tuple(self.set_names))
        for name in (*self.methods, *self.set_names):
            check(bool(name.strip()), "--method and --set take comma-separated names")
        at_least(self.pool, 1, "--pool")
        in_range(self.fraction_low, 0, 1, "--fractions' low end", low_open=True)
        in_range(self.fraction_high, 0, 1, "--fractions' high end", low_open=True)
        check(
            self.fraction_low <= self.fraction_high,
            f"--fractions must be LOW,HIGH with LOW <= HIGH, got {self.fraction_low:g},"
            f"{self.fraction_high:g}",
        )
        at_least(self.epochs, 1, "--epochs")
        at_least(self.early_runs, 1, "--early-runs")
        at_least(self.early_epochs, 1, "--early-epochs")
        at_least(self.weight_decay_pool, 1, "--weight-decay-pool")
        at_least(self.weight_decay_epochs, 1, "--weight-decay-epochs")
        at_least(self.chunk, 1, "--chunk")
        in_range(self.window, 0, 100, "--window", low_open=True)  # 0: no model is ever that close
        at_least(self.runs, 1, "--runs")
        convnet_fits(self.width, self.depth, MODEL.image_size)
        at_least(self.train_samples, 1, "--train-samples")
        at_least(self.test_limit, 1, "--test-limit")
        seed_number(self.seed)

    @property
    def distilled_seeds(self) -> list[int]:
        return [self.seed * 1000 + r for r in range(self.runs)]


@dataclass
class _Unit:
    """A stored row of predictions: a chunk of a pool, an early run, or a set's models."""

    role: str  # subset | early | weight-decay | distilled
    params: dict[str, Any]
    indices: list[int]  # the pool's models in it (a set's seeds for "distilled")
    stored: bool
    set_index: int | None = None


@dataclass
class AgreementPlan:
    request: AgreementRequest
    model: ModelConfig
    sets: list[AnalysisSet] = field(repr=False)
    real: tuple[Any, Any] = field(repr=False)
    real_labels: Any = field(repr=False)  # numpy labels of the real images
    test: tuple[Any, Any] = field(repr=False)
    num_classes: int
    trains: dict[str, TrainConfig]
    units: list[_Unit]
    comparisons: list[tuple[dict[str, Any], Any]]  # per set: (params, StoredAnalysis | None)

    @property
    def missing(self) -> list[_Unit]:
        return [u for u in self.units if not u.stored]


def preflight(ws: Workspace, request: AgreementRequest) -> list[SetSummary]:
    """What can be refused before the real data is looked for: the figure folder and the sets."""
    figure_folder(request.out)
    return choose_sets(ws.db, request.methods, request.set_names)


def _chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(a, min(n, a + size))) for a in range(0, n, size)]


def plan(ws: Workspace, request: AgreementRequest) -> AgreementPlan:
    """The sets, the real and test images, every unit and whether it is stored (reads only)."""
    from ddsem.analyses.agreement import epoch_config, model_seed
    from ddsem.config import to_dict
    from ddsem.db.analyses import find_analysis
    from ddsem.jobs.analyze.common import load_sets, real_tensors, sets_space, test_tensors

    req, cfg = request, AGREEMENT
    summaries = preflight(ws, req)
    space = sets_space(summaries)  # the pools learn the real images in the sets' one space
    data, real_x, real_y, _ = real_tensors(req.data, "cifar10", req.train_samples, req.seed)
    check(data.num_classes <= 256, "agreement stores predictions as bytes: at most 256 classes")
    model = replace(
        MODEL, width=req.width, depth=req.depth, num_classes=data.num_classes,
        channels=data.train_x.shape[3], image_size=data.train_x.shape[1],
    )  # fmt: skip
    sets = load_sets(ws.db, summaries, data, model)
    real_x = sets[0].in_space(real_x)
    test_x, test_y, _ = test_tensors(data, req.test_limit, sets[0].zca)
    n = len(real_y)
    trains = {
        "subset": epoch_config(n, req.epochs, cfg.batch_size, cfg.lr, cfg.momentum),
        "early": epoch_config(n, req.early_epochs, cfg.batch_size, cfg.lr, cfg.momentum),
        "weight-decay": epoch_config(
            n, req.weight_decay_epochs, cfg.batch_size, cfg.lr, cfg.momentum
        ),
        "distilled": DISTILLED,
    }
    test_key = {
        "analysis": KIND, "model": to_dict(model), "dataset": data.name,
        "test_limit": req.test_limit, "test_images": len(test_y),
    }  # fmt: skip
    if space is not None:
        test_key["zca"] = space  # models of whitened images are other models
    real_key = {
        **test_key, "train_samples": req.train_samples, "train_images": n,
        "sample_seed": req.seed, "seed": req.seed,
    }  # fmt: skip
    pools: dict[str, dict[str, Any]] = {
        "subset": {
            **real_key, "role": "subset", "epochs": req.epochs,
            "train": {"batch_size": cfg.batch_size, "lr": cfg.lr, "momentum": cfg.momentum,
                      "minibatches": "of its own subset"},
            "fractions": [req.fraction_low, req.fraction_high],
        },
        "early": {**real_key, "role": "early", "train": to_dict(trains["early"])},
    }  # fmt: skip
    if req.weight_decay:
        pools["weight-decay"] = {
            **real_key, "role": "weight-decay", "train": to_dict(trains["weight-decay"]),
            "decays": [cfg.weight_decay_low, cfg.weight_decay_high],
        }  # fmt: skip
    units: list[_Unit] = []

    def add(role: str, params: dict[str, Any], indices: list[int], set_index=None) -> None:
        stored = find_analysis(ws.db, POOL_KIND, params) is not None
        units.append(_Unit(role, params, indices, stored, set_index))

    for i, s in enumerate(sets):
        add("distilled", {**test_key, "role": "distilled", "set_id": s.summary.id,
                          "train": to_dict(DISTILLED), "seeds": req.distilled_seeds},
            req.distilled_seeds, i)  # fmt: skip
    for idx in _chunks(req.pool, req.chunk):
        add("subset", {**pools["subset"], "start": idx[0], "stop": idx[-1] + 1}, idx)
    for r in range(req.early_runs):
        add("early", {**pools["early"], "run": r, "init_seed": model_seed(req.seed, "early", r)},
            [r])  # fmt: skip
    if req.weight_decay:
        for idx in _chunks(req.weight_decay_pool, req.chunk):
            add("weight-decay", {**pools["weight-decay"], "start": idx[0], "stop": idx[-1] + 1},
                idx)  # fmt: skip
    sizes = {"subset": req.pool, "early": req.early_runs}
    if req.weight_decay:
        sizes["weight-decay"] = req.weight_decay_pool
    comparisons = []
    for i, s in enumerate(sets):
        params = {
            "set_id": s.summary.id, "set": s.name, "window": req.window,
            "distilled": units[i].params, "alpha": cfg.alpha,
            "pools": {p: {"key": pools[p], "size": sizes[p]} for p in pools},
        }  # fmt: skip
        comparisons.append((params, find_analysis(ws.db, KIND, params)))
    return AgreementPlan(
        req, model, sets, (real_x, real_y), real_y.numpy(), (test_x, test_y), data.num_classes,
        trains, units, comparisons,
    )  # fmt: skip


# -- storage of predictions (see the module's docstring) ------------------------------------------


def _load(ws: Workspace, params: dict[str, Any]) -> dict[str, np.ndarray]:
    from ddsem.db.analyses import find_arrays

    stored = find_arrays(ws.db, POOL_KIND, params)
    assert stored is not None, "a unit the plan found stored has gone"
    return stored


def _save(ws: Workspace, params: dict[str, Any], arrays: dict[str, Any], result: dict) -> None:
    from ddsem.db.analyses import save_arrays

    save_arrays(ws.db, POOL_KIND, params, arrays, result)


def _train(ws: Workspace, p: AgreementPlan, unit: _Unit) -> None:
    """Train one unit and store its predictions (one row, complete)."""
    import numpy as np

    from ddsem.analyses import agreement as compute

    req, device, seed = p.request, ws.torch_device(), p.request.seed
    train = p.trains[unit.role]
    k = len(unit.indices)
    if unit.role == "distilled":
        s = p.sets[unit.set_index or 0]
        label = f"distilled-trained models of {s.name}"
    elif unit.role == "early":
        label = f"early-stopped run {unit.indices[0] + 1}/{req.early_runs}"
    else:
        total = req.pool if unit.role == "subset" else req.weight_decay_pool
        label = f"{unit.role} pool: models {unit.indices[0] + 1}-{unit.indices[-1] + 1}/{total}"
    total = train.steps * k
    if unit.role == "subset":
        weights, fractions = compute.subset_weights(
            p.real_labels, unit.indices, req.fraction_low, req.fraction_high, seed
        )
        total = sum(compute.subset_steps(weights, req.epochs, AGREEMENT.batch_size))
    with ws.progress.phase(label, total) as advance:
        if unit.role == "distilled":
            preds, acc = compute.distilled_predictions(
                p.model, s.images, s.labels, unit.indices, train, p.test, device=device,
                progress=advance,
            )  # fmt: skip
            arrays = {"predictions": preds, "accuracy": acc}
        elif unit.role == "subset":
            seeds = [compute.model_seed(seed, "subset", j) for j in unit.indices]
            preds, acc = compute.subset_pool(
                p.model, p.real, weights, seeds, req.epochs, AGREEMENT, p.test, device=device,
                progress=advance,
            )  # fmt: skip
            arrays = {"predictions": preds, "accuracy": acc, "fractions": fractions,
                      "kept": weights.sum(axis=1).astype(np.int32)}  # fmt: skip
        elif unit.role == "early":
            preds, acc = compute.early_run(
                p.model, p.real, unit.params["init_seed"], train, p.test, device=device,
                progress=advance,
            )  # fmt: skip
            arrays = {"predictions": preds, "accuracy": acc}
        else:
            cfg = AGREEMENT
            decays = compute.weight_decays(
                unit.indices, cfg.weight_decay_low, cfg.weight_decay_high, seed
            )
            seeds = [compute.model_seed(seed, "weight-decay", j) for j in unit.indices]
            preds, acc = compute.weight_decay_pool(
                p.model, p.real, decays, seeds, train, p.test, device=device, progress=advance
            )
            arrays = {"predictions": preds, "accuracy": acc, "weight_decay": decays}
    result = {"models": k, "test_accuracy_mean": float(np.mean(acc)), "role": unit.role}
    _save(ws, unit.params, arrays, result)
    unit.stored = True


# -- the result --------------------------------------------------------------------------------


@dataclass
class AgreementResult:
    analysis_ids: list[int]
    sets: list[dict[str, Any]]  # per set: name, method, distilled accuracy, pools' summaries
    trained: dict[str, int]  # units trained by this run, per role
    stored: dict[str, int]  # units found stored, per role
    pool_sizes: dict[str, int]
    trains: dict[str, dict[str, Any]]
    window: float
    chance: float
    test_images: int
    figure: Path

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "analysis_ids": self.analysis_ids,
            "sets": self.sets,
            "trained": self.trained,
            "stored": self.stored,
            "pool_sizes": self.pool_sizes,
            "train": self.trains,
            "window": self.window,
            "chance": self.chance,
            "test_images": self.test_images,
            "figure": str(self.figure),
        }


def _pool_arrays(ws: Workspace, p: AgreementPlan) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every pool's stored predictions and accuracies, models in index order."""
    import numpy as np

    out: dict[str, tuple[list, list]] = {}
    for u in p.units:
        if u.role == "distilled":
            continue
        arrays = _load(ws, u.params)
        preds, acc = out.setdefault(u.role, ([], []))
        if u.role == "early":
            preds.append(arrays["predictions"][None])
            acc.append(arrays["accuracy"][None])
        else:
            preds.append(arrays["predictions"])
            acc.append(arrays["accuracy"])
    return {r: (np.concatenate(pr), np.concatenate(ac)) for r, (pr, ac) in out.items()}


def _refusal(pool: str, s: AnalysisSet, target: float, acc: Any, window: float) -> str:
    import numpy as np

    far = float(np.min(np.abs(np.asarray(acc, dtype=float) - target))) * 100
    what = {"subset": "subset-trained model", "early": "early-stopped model at its closest "
            "iteration", "weight-decay": "weight-decay model"}[pool]  # fmt: skip
    return (
        f"no {what} lies within ±{window:g} point(s) of the distilled-trained accuracy of set "
        f"{s.name!r} ({100 * target:.1f}%; the pool spans {100 * np.min(acc):.1f}-"
        f"{100 * np.max(acc):.1f}%): try a wider window, e.g. --window {np.ceil(far + 0.5):g}"
    )


def _compare(p: AgreementPlan, s: AnalysisSet, distilled, pools) -> dict[str, Any]:
    """One set's comparison (the stored result of an ``agreement`` unit)."""
    import numpy as np

    from ddsem.analyses.agreement import compare_pool, mann_whitney_greater

    req, cfg = p.request, AGREEMENT
    d_pred, d_acc = distilled["predictions"], distilled["accuracy"]
    result: dict[str, Any] = {
        "distilled_accuracy": [float(a) for a in d_acc],
        "distilled_seeds": req.distilled_seeds,
        "test_images": int(d_pred.shape[1]),
        "pools": {},
    }
    for pool, (preds, acc) in pools.items():
        c = compare_pool(pool, (d_pred, d_acc), preds, acc, p.num_classes, req.window, cfg.alpha)
        for e in c.per_seed:
            if not e["models"]:
                span = acc if acc.ndim == 1 else acc[:, e["iteration"] - 1]
                raise UserError(_refusal(pool, s, e["distilled_accuracy"], span, req.window))
        summary = c.summary(cfg.alpha)
        if pool == "early":
            summary["iteration_accuracy"] = [
                float(acc[:, e["iteration"] - 1].mean()) for e in c.per_seed
            ]
        result["pools"][pool] = summary
    sub = result["pools"]["subset"]["agreements"]
    early = result["pools"]["early"]["agreements"]
    result["early_vs_subset_p"] = mann_whitney_greater(early, sub)
    means = {k: v["agreement_mean"] for k, v in result["pools"].items()}
    result["closest_pool"] = max(means, key=means.get)
    result["distilled_accuracy_mean"] = float(np.mean(d_acc))
    result["distilled_accuracy_sd"] = float(np.std(d_acc, ddof=1)) if len(d_acc) > 1 else 0.0
    return result


def run(ws: Workspace, request: AgreementRequest) -> AgreementResult:
    """Train and store the missing units, compare each set with the pools, draw the figure."""
    from ddsem.db.analyses import save_analysis, set_analysis_figure

    p = plan(ws, request)
    if p.missing or any(stored is None for _, stored in p.comparisons):
        ws.db.require_writable()
    roles = ("distilled", "subset", "early", "weight-decay")
    trained = {r: 0 for r in roles}
    stored = {r: sum(u.stored and u.role == r for u in p.units) for r in roles}
    for u in p.missing:
        _train(ws, p, u)
        trained[u.role] += 1
    results: list[dict[str, Any]] = []
    pools = None
    for i, (s, (params, found)) in enumerate(zip(p.sets, p.comparisons, strict=True)):
        if found is not None:
            results.append({"analysis_id": found.id, "reused": True, **found.result})
            continue
        if pools is None:
            pools = _pool_arrays(ws, p)
        distilled = _load(ws, p.units[i].params)
        results.append({"analysis_id": None, "reused": False, "params": params,
                        **_compare(p, s, distilled, pools)})  # fmt: skip
    # every set compared before any is stored: a refusal leaves no comparison behind
    for r in results:
        if r["analysis_id"] is None:
            params = r.pop("params")
            r["analysis_id"] = save_analysis(
                ws.db, KIND, params, {k: v for k, v in r.items() if k not in ("analysis_id",
                                                                            "reused")}
            )  # fmt: skip
    sets = []
    for s, r in zip(p.sets, results, strict=True):
        sets.append({"set": s.name, "method": s.method, "set_id": s.summary.id, **r})
    ids = [r["analysis_id"] for r in results]
    figure = _figure(figure_folder(request.out), p, sets, ids)
    if not ws.db.readonly:
        for i in ids:
            set_analysis_figure(ws.db, i, str(figure))
    sizes = {"subset": request.pool, "early": request.early_runs}
    if request.weight_decay:
        sizes["weight-decay"] = request.weight_decay_pool
    from ddsem.config import to_dict

    return AgreementResult(
        ids, sets, trained, stored, sizes, {k: to_dict(v) for k, v in p.trains.items()},
        request.window, 1.0 / p.num_classes, len(p.test[1]), figure,
    )  # fmt: skip


def _figure(out_dir: Path, p: AgreementPlan, sets: list[dict[str, Any]], ids: list[int]) -> Path:
    import numpy as np

    from ddsem.analyses.agreement import agreement_figure

    panels = []
    for s in sets:
        shares = {k: np.asarray(v["agreements"]) / s["test_images"] for k, v in s["pools"].items()}
        probs = {k: v["probabilities"] for k, v in s["pools"].items()}
        acc = 100 * s["distilled_accuracy_mean"]
        early = s["pools"]["early"]["iterations"]
        panels.append((f"{s['set']} ({s['method']}): {acc:.1f}%, early iteration "
                       f"{'/'.join(map(str, sorted(set(early))))}", shares, probs))  # fmt: skip
    m, req = p.model, p.request
    title = (
        f"agreement with distilled-trained models (ConvNet-{m.width}-{m.depth}, "
        f"{len(p.test[1])} test images, models within ±{req.window:g} point(s))\npool of "
        f"{req.pool} subset models ({req.epochs} epochs), {req.early_runs} early-stopped runs"
        + (f", {req.weight_decay_pool} weight-decay models" if req.weight_decay else "")
    )
    name = f"agreement-{'-'.join(map(str, ids))}.png"
    return agreement_figure(panels, out_dir / name, title)
