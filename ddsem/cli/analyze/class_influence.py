"""``ddsem analyze class-influence`` (appendix D), a face over
``ddsem.jobs.analyze.class_influence``."""

from __future__ import annotations

import typer

from ddsem.cli import common
from ddsem.jobs.analyze.common import OUT


def command(
    method: str = common.method_option(
        "Comma-separated methods (bptt,dm,gm,tm): each one's newest set [default: every set "
        "with an influence run]."
    ),
    set_names: str = common.set_option("Comma-separated distilled set names."),
    context: str = typer.Option(
        "distilled", "--context", help="Influence runs of this context: distilled or real."
    ),
    mean_over_seeds: bool = typer.Option(
        False, "--mean-over-seeds", help="The mean of every seed's run [default with several]."
    ),
    out: str = typer.Option(OUT, "--out", help=common.OUT_HELP),
    as_json: bool = common.json_option(),
) -> None:
    """Mean influence of each distilled image on test images of its own class vs the other
    classes, from stored influence runs (no training). The global --seed picks a run."""
    from ddsem.jobs.analyze import class_influence as job

    request = job.ClassInfluenceRequest(
        methods=common.split_names(method, "--method"),
        set_names=common.split_names(set_names, "--set"),
        context=context,
        seed=common.OPTIONS.seed,
        mean_over_seeds=mean_over_seeds,
        out=out,
    )
    result = job.run(common.workspace(create=False, readonly=False, quiet=as_json), request)
    if as_json:
        common.print_json(result.as_json())
        return
    rows = []
    for s in result.sets:
        p = s["wilcoxon_p"]
        top = s["top_out_share"]
        rows.append([
            s["set"], s["scope"], s["images"],
            f"{s['in_class']['mean']:+.3g} ± {s['in_class']['sd']:.2g}",
            f"{s['out_class']['mean']:+.3g} ± {s['out_class']['sd']:.2g}",
            f"{s['in_greater']}/{s['images']}",
            "n/a" if p is None else f"{p:.2g}",
            " / ".join(f"{100 * top[k]:.0f}%" for k in sorted(top, key=int)),
            f"{100 * s['chance_out_share']:.0f}%",
        ])  # fmt: skip
    ks = "/".join(sorted(result.sets[0]["top_out_share"], key=int)) if result.sets else ""
    common.table(
        f"influence on own class vs other classes ({result.context} context): mean ± sd over "
        "images",
        ["set", "runs", "images", "own class", "other classes", "own > other",
         "Wilcoxon p", f"top {ks}: other", "random: other"],
        rows,
    )  # fmt: skip
    common.echo(
        "own > other: images whose mean influence is larger on their class; Wilcoxon p: "
        "one-sided signed-rank test of that over the set's images. The other-class share of "
        "an image's most influenced test images is compared with the share among all test "
        "images (what random test images give)."
    )
    common.echo(f"figure: {result.figure}")
