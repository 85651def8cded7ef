"""Approximate influence against exact leave-one-out on the sets ddsem distils (issue 20).

Distils CIFAR-10 with DM, GM, TM and BPTT, computes exact LOO for each set (N + 1 trainings per
seed, two seeds: the second says how much exact LOO itself moves with the seed), then
influence functions (EK-FAC, kronfluence), TracIn and TRAK (traker) from one training each;
annotates the test images with the offline colour annotator and prints, side by side from one
run, every estimator's fidelity (Pearson, Spearman, top-10 overlap, significant semantic
answers found and added) and cost (seconds, trainings) — the same numbers as
`ddsem influence compare`, which it runs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/estimators.py           # small CPU scale
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/estimators.py --methods dm --tiny   # a minute
    .venv/bin/python benchmarks/estimators.py --paper --device cuda       # the paper's scale

Needs real CIFAR-10 ($DDSEM_DATA or --data). The database is kept in --db (default: a fresh
temporary file), so `ddsem --db ... influence compare --set NAME --out figs/` redraws a row.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass

from ddsem.config import EstimatorConfig
from ddsem.db.sets import list_sets
from ddsem.jobs import Recorder, Workspace, annotate, attributes, distill, experts, influence
from ddsem.jobs import influence_compare as compare


@dataclass(frozen=True)
class Scale:
    ipc: int
    width: int
    steps: int  # LOO and estimator training: full-batch SGD steps (paper: 300)
    test_limit: int | None
    iterations: dict[str, int]  # distillation iterations per method
    real_limit: int | None  # real training images the distillers (and TM's experts) see
    expert_epochs: int  # epochs each TM expert trains
    tm_params: tuple[tuple[str, float], ...] = ()  # TM's start window, shrunk to the experts


SMALL = Scale(
    ipc=10, width=16, steps=100, test_limit=1000,
    iterations={"dm": 100, "gm": 10, "tm": 10, "bptt": 10}, real_limit=5000, expert_epochs=2,
    # MTT's ipc-10 lr_lr (1e-5) drives the learned lr below 0 on these short experts: NaN
    tm_params=(("max_start_epoch", 1), ("expert_epochs", 1), ("lr_lr", 1e-7)),
)  # fmt: skip
TINY = Scale(
    ipc=1, width=8, steps=30, test_limit=300,
    iterations={"dm": 20, "gm": 5, "tm": 5, "bptt": 5}, real_limit=1000, expert_epochs=2,
    tm_params=(("max_start_epoch", 1), ("expert_epochs", 1)),
)  # fmt: skip
# The paper's influence protocol (ConvNet width 128, 300 steps, every test image) on sets of
# ipc 10; the distillation itself is shortened (published runs take 1,000-20,000 iterations).
PAPER = Scale(
    ipc=10, width=128, steps=300, test_limit=None,
    iterations={"dm": 2000, "gm": 200, "tm": 500, "bptt": 200}, real_limit=None, expert_epochs=10,
)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="dm,gm,tm,bptt")
    ap.add_argument("--estimators", default="if,tracin,trak")
    ap.add_argument("--tiny", action="store_true", help="the smallest scale (a smoke test)")
    ap.add_argument("--paper", action="store_true", help="the paper's scale (a GPU)")
    ap.add_argument("--seeds", default="0,1", help="exact LOO seeds (the second: the reference)")
    ap.add_argument("--data", default=os.environ.get("DDSEM_DATA"))
    ap.add_argument("--db", default=None, help="keep the database here")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None, help="also write the comparisons as JSON here")
    args = ap.parse_args()
    scale = TINY if args.tiny else PAPER if args.paper else SMALL
    methods = [m for m in args.methods.split(",") if m]
    estimators = [e for e in args.estimators.split(",") if e]
    seeds = tuple(int(s) for s in args.seeds.split(","))
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="ddsem-est-"), "estimators.db")
    ws = Workspace.open(db, device=args.device, progress=Recorder())
    print(f"database {db}; scale {scale}")

    if "tm" in methods:
        t0 = time.perf_counter()
        experts.run(
            ws,
            experts.ExpertsRequest(
                num_experts=2, epochs=scale.expert_epochs, width=scale.width,
                real_limit=scale.real_limit, data=args.data, test_limit=500,
            ),
        )  # fmt: skip
        print(f"TM experts: {time.perf_counter() - t0:.1f} s")
    rows = []
    for method in methods:
        name = f"{method}-ipc{scale.ipc}-est"
        t0 = time.perf_counter()
        if not any(s.name == name for s in list_sets(ws.db)):  # a kept --db: reused
            distill.run(
                ws,
                distill.DistillRequest(
                    method, ipc=scale.ipc, iterations=scale.iterations[method],
                    width=scale.width, real_limit=scale.real_limit, name=name, data=args.data,
                    params=scale.tm_params if method == "tm" else (),
                ),
            )  # fmt: skip
        print(f"{name}: distilled in {time.perf_counter() - t0:.1f} s")
        base = dict(
            set_name=name, width=scale.width, steps=scale.steps, test_limit=scale.test_limit,
            data=args.data,
        )  # fmt: skip
        influence.run(ws, influence.InfluenceRequest(seeds=seeds, **base))
        for estimator in estimators:
            influence.run(
                ws,
                influence.InfluenceRequest(
                    seeds=seeds[:1], estimator=estimator, estimation=EstimatorConfig(), **base
                ),
            )
        annotate.run(
            ws, annotate.AnnotateRequest(annotator="color", limit=scale.test_limit, data=args.data)
        )
        attributes.extract(ws, attributes.ExtractRequest())
        report = compare.run(ws, compare.CompareRequest(name, top_k=10))
        rows.append((method, report))
        _print(method, report)

    print("\nall sets (fidelity against exact LOO of the same seed; cost per seed):")
    print(
        f"{'set':<6} {'estimator':<14} {'Pearson':>8} {'Spearman':>9} {'Sp./image':>9} "
        f"{'top-10':>7} {'chance':>7} {'answers':>9} {'added':>6} {'seconds':>8} "
        f"{'trainings':>9} {'speed-up':>8}"
    )
    for method, report in rows:
        for c in [report.reference, *report.comparisons]:
            if c is None:
                continue
            label = f"loo (seed {c.seed})" if c.estimator == "loo" else c.estimator
            answers = "-" if c.answers is None else f"{c.answers.found}/{c.answers.exact}"
            added = "-" if c.answers is None else str(c.answers.added)
            print(
                f"{method:<6} {label:<14} {c.fidelity.pearson:>8.3f} {c.fidelity.spearman:>9.3f} "
                f"{c.fidelity.spearman_mean:>9.3f} {c.fidelity.overlap:>7.2f} "
                f"{c.fidelity.chance_overlap:>7.3f} {answers:>9} {added:>6} "
                f"{c.cost.seconds:>8.1f} {c.cost.trainings:>9} {c.speedup:>7.1f}x"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({m: r.as_json() for m, r in rows}, f, indent=1)


def _print(method: str, report) -> None:  # noqa: ANN001
    for c in [report.reference, *report.comparisons]:
        if c is not None and c.answers_note:
            print(f"  {method}: semantic answers: {c.answers_note}")
            break


if __name__ == "__main__":
    main()
