"""``ddsem demo``: the whole product on real CIFAR-10 on a CPU, in minutes.

A face over ``ddsem.jobs.demo``: before each step it prints the command that runs the same job,
then renders the result as that command would. Re-running on the same database reuses what is
done (the set, the influence run, the annotations) and finishes in seconds.
"""

from __future__ import annotations

import os

import typer

from ddsem.cli import common


def demo(
    data: str = typer.Option(
        None,
        "--data",
        help="CIFAR-10 (folder or .tar.gz) [default: $DDSEM_DATA, then the usual places].",
    ),
    out: str = typer.Option("ddsem-demo", "--out", help="Folder for the figures and tables."),
    small: bool = typer.Option(
        False, "--small", help="A much smaller run (seconds; for tests and a first look)."
    ),
) -> None:
    """Distil CIFAR-10 with DM, compute exact LOO influence, annotate, rank and ask questions."""
    from ddsem.cli import annotate, attributes, distill, rank
    from ddsem.jobs import demo as job

    render = {  # (the step's request, its result) -> what its command prints
        "distill": lambda _, result: distill.render(result),
        "influence": lambda _, result: None,  # its per-seed lines are progress notes
        "annotate": lambda _, result: annotate.render(result),
        "attributes": lambda _, result: attributes.render_extract(result),
        "rank": lambda request, result: rank.render_rank(result, request.min_positives),
        "query": lambda _, result: (
            common.echo(f"no answer: {result.reason}")
            if isinstance(result, job.NoAnswer)
            else rank.render_answer(result)
        ),
        "report": lambda _, result: rank.render_report(result),
    }
    from_env = data is None and bool(os.environ.get("DDSEM_DATA"))
    request = job.DemoRequest(
        data=common.data_source(data), out=out, small=small, data_in_commands=not from_env
    )

    def before(step: job.DemoStep) -> None:
        number = f"[{step.number}/{job.TOTAL_STEPS}]"
        if step.reused:
            name = request.settings.set_name
            common.echo(f"\n{number} distilled set {name!r} is already in the database: reused")
        else:
            command = " ".join(_quote(a) for a in step.command)
            common.echo(f"\n{number} {step.title}\n$ ddsem {command}")

    summary = job.run(
        common.workspace(),
        request,
        on_step=before,
        on_result=lambda step, result: render[step.kind](step.request, result),
        db=common.OPTIONS.db,
    )
    common.echo(f"\ndemo finished in {summary.seconds:.0f} s")
    finding = summary.finding()
    if finding:
        common.echo(finding)
        for t in summary.strongest:
            common.echo(
                f"  distilled #{t.distilled_index} ({t.distilled_class}) -> {t.attribute} among "
                f"{t.class_filter}: AP {t.ap:.3f}, chance {t.chance_ap:.3f}, lift {t.lift:.2f}, "
                f"q {t.q_value:.2g}"
            )
    common.echo(f"{len(summary.figures)} figures and tables in {summary.out}/, among them:")
    for path in summary.highlights:
        common.echo(f"  {path}")
    common.echo(
        "next:\n"
        + "\n".join(
            f"  {c}  # {comment}" if comment else f"  {c}" for c, comment in summary.next_commands
        )
    )


def _quote(arg: str) -> str:
    return f'"{arg}"' if " " in arg else arg
