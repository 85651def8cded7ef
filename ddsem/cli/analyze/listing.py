"""``ddsem analyze list``: what the analyses stored, a face over ``ddsem.jobs.analyze.listing``."""

from __future__ import annotations

import typer

from ddsem.cli import common


def command(
    kind: str = typer.Option(None, "--kind", help="Only units of this kind."),
    as_json: bool = common.json_option(),
) -> None:
    """The stored analysis units (one per set, seed or real-data model) and their figures."""
    from ddsem.jobs.analyze import listing as job

    units = job.list_stored(common.workspace(create=False, quiet=as_json), kind)
    if as_json:
        common.print_json([u.as_json() for u in units])
        return
    if not units:
        common.echo("no analyses stored yet: `ddsem analyze --help` lists them")
        return
    common.table(
        "stored analyses",
        ["id", "kind", "of", "created", "figure"],
        [[u.id, u.kind, u.what, u.created_at, u.figure or ""] for u in units],
    )
