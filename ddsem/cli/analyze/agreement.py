"""``ddsem analyze agreement``: the paper's Fig. 4 (section 4.1) with appendices B and C, a face
over ``ddsem.jobs.analyze.agreement``.

Do models trained on a distilled set predict like early-stopped real models rather than like
models trained on small real subsets? Pools are stored per chunk, resumable and reused.
"""

from __future__ import annotations

import typer

from ddsem.cli import common
from ddsem.jobs.analyze.agreement import AGREEMENT, MODEL
from ddsem.jobs.analyze.common import OUT

NAMES = {"subset": "subset-trained", "early": "early-stopped", "weight-decay": "weight decay"}


def _fractions(text: str) -> tuple[float, float]:
    from ddsem.errors import UserError

    parts = [t.strip() for t in text.split(",")]
    try:
        low, high = (float(parts[0]), float(parts[-1])) if len(parts) in (1, 2) else (None, None)
    except ValueError:
        low = high = None
    if low is None or high is None:
        raise UserError(f"--fractions takes LOW,HIGH (e.g. 0.005,0.05), got {text!r}")
    return low, high


def command(
    method: str = common.method_option(
        "Comma-separated methods: each one's newest set (bptt,dm,gm,tm) [default: every set]."
    ),
    set_name: str = common.set_option("Comma-separated distilled sets by name."),
    pool: int = typer.Option(AGREEMENT.pool, "--pool", help="Subset-trained models in the pool."),
    fractions: str = typer.Option(
        f"{AGREEMENT.fraction_low:g},{AGREEMENT.fraction_high:g}",
        "--fractions",
        help="LOW,HIGH: each subset model keeps a fraction ~ U(LOW, HIGH) of every class.",
    ),
    epochs: int = typer.Option(
        AGREEMENT.epochs, "--epochs", help="Epochs of the subset models (batch 256)."
    ),
    early_runs: int = typer.Option(
        AGREEMENT.early_runs, "--early-runs", help="Early-stopped runs (predictions per iteration)."
    ),
    early_epochs: int = typer.Option(
        AGREEMENT.early_epochs, "--early-epochs", help="Epochs of each early-stopped run."
    ),
    weight_decay: bool = typer.Option(
        False, "--weight-decay", help="Add appendix B's pool: weight decay ~ U(0.05, 0.13)."
    ),
    weight_decay_pool: int = typer.Option(
        AGREEMENT.weight_decay_pool, "--weight-decay-pool", help="Models of that pool."
    ),
    weight_decay_epochs: int = typer.Option(
        AGREEMENT.weight_decay_epochs, "--weight-decay-epochs", help="Their epochs."
    ),
    chunk: int = typer.Option(
        AGREEMENT.chunk, "--chunk", help="Models trained and stored together (resumable unit)."
    ),
    window: float = typer.Option(
        AGREEMENT.window, "--window", help="Compare pool models within ± this many points."
    ),
    runs: int = typer.Option(
        AGREEMENT.distilled_seeds, "--runs", help="Distilled-trained models (seeds) per set."
    ),
    width: int = typer.Option(MODEL.width, "--width", help="ConvNet width."),
    depth: int = typer.Option(MODEL.depth, "--depth", help="ConvNet depth."),
    train_samples: int = typer.Option(
        None, "--train-samples", help="Real training images (stratified) [default: all]."
    ),
    test_limit: int = typer.Option(
        None, "--test-limit", help="Class-stratified test images [default: all]."
    ),
    data: str = common.data_option(),
    out: str = typer.Option(OUT, "--out", help=common.OUT_HELP),
    as_json: bool = common.json_option(),
) -> None:
    """Agreement of predictions on the test images between distilled-trained models and pools
    of subset-trained, early-stopped (and weight-decay) real models of similar accuracy
    (Fig. 4), with appendix C's test of how probable each agreement is under a pool."""
    from dataclasses import replace

    from ddsem.jobs.analyze import agreement as job

    low, high = _fractions(fractions)
    request = job.AgreementRequest(
        methods=common.split_names(method, "--method"),
        set_names=common.split_names(set_name, "--set"),
        pool=pool,
        fraction_low=low,
        fraction_high=high,
        epochs=epochs,
        early_runs=early_runs,
        early_epochs=early_epochs,
        weight_decay=weight_decay,
        weight_decay_pool=weight_decay_pool,
        weight_decay_epochs=weight_decay_epochs,
        chunk=chunk,
        window=window,
        runs=runs,
        width=width,
        depth=depth,
        train_samples=train_samples,
        test_limit=test_limit,
        seed=common.seed(),
        out=out,
    )
    ws = common.workspace(quiet=as_json)
    job.preflight(ws, request)  # refused before the data is looked for (or offered for download)
    result = job.run(ws, replace(request, data=common.data_source(data)))
    if as_json:
        common.print_json(result.as_json())
        return
    trained = ", ".join(f"{v} {k}" for k, v in result.trained.items() if v) or "nothing"
    stored = ", ".join(f"{v} {k}" for k, v in result.stored.items() if v) or "nothing"
    common.echo(f"agreement: trained now {trained}; stored before {stored} (units)")
    rows = []
    for s in result.sets:
        accs = s["distilled_accuracy"]
        d = f"{100 * s['distilled_accuracy_mean']:.1f} ± {100 * s['distilled_accuracy_sd']:.1f}%"
        for pool, v in s["pools"].items():
            its = sorted({i for i in v["iterations"] if i is not None})
            med, imp, nor = v["median_probability"], v["improbable_share"], v["normal_share"]
            rows.append([
                s["set"], f"{d} (n={len(accs)})", NAMES[pool]
                + (f" @ it. {'/'.join(map(str, its))}" if its else ""),
                f"{v['compared']} ({len(v['models'])} models)",
                f"{100 * v['pool_accuracy_mean']:.1f}%",
                f"{100 * v['agreement_mean']:.1f} ± {100 * v['agreement_sd']:.1f}%",
                f"{100 * v['independent_agreement']:.1f}%",
                "n/a" if med is None else f"{med:.2g}",
                "n/a" if imp is None else f"{100 * imp:.0f}%",
                "n/a" if nor is None else f"{100 * nor:.0f}%",
            ])  # fmt: skip
    common.table(
        f"agreement on {result.test_images} test images with the distilled-trained models "
        f"(pool models within ±{result.window:g} point(s); chance accuracy "
        f"{100 * result.chance:.0f}%)",
        ["set", "distilled acc. (mean ± sd)", "pool", "compared", "pool acc.",
         "agreement (mean ± sd)", "if errors indep.", "app. C median p", "p < 0.05",
         "normal"],
        rows,
    )  # fmt: skip
    for s in result.sets:
        p = s["early_vs_subset_p"]
        closer = NAMES[s["closest_pool"]]
        common.echo(
            f"{s['set']}: agrees most with the {closer} models; early-stopped > subset-trained "
            f"agreement, one-sided Mann-Whitney p = {'n/a' if p is None else f'{p:.2g}'}"
        )
    common.echo(
        "compared: distilled-model x pool-model pairs (the distinct pool models in brackets); "
        "'if errors indep.': the agreement two models of these accuracies would have with "
        "independent errors; app. C: per pool model, the probability of the distilled "
        "model's agreement under a normal fitted to that model's agreements with the rest of "
        "its pool (two-sided), its median and the share below 0.05; normal: share of those "
        "agreement distributions Shapiro-Wilk does not reject at 0.05."
    )
    common.echo(f"figure: {result.figure}")
