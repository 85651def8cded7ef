"""``ddsem db info|export``: what the database holds, and flat exports for other tools
(``ddsem.jobs.database``)."""

from __future__ import annotations

import typer

from ddsem.cli import common

app = typer.Typer(help="Inspect and export the database.", no_args_is_help=True)


@app.command("info")
def info(as_json: bool = common.json_option()) -> None:
    """Schema version and the number of rows in every table."""
    from ddsem.jobs import database as job

    result = job.info(common.workspace(create=False, quiet=as_json))
    if as_json:
        common.print_json(result.as_json())
        return
    common.echo(f"database: {result.url}")
    common.table("rows per table", ["table", "rows"], [[k, v] for k, v in result.tables.items()])


@app.command("export")
def export(
    what: str = typer.Option(
        ...,
        "--what",
        help=(
            "scores (attribute PR-AUC with chance_ap, p_value, q_value, draws), influence-topk "
            "or annotations."
        ),
    ),
    out: str = typer.Option(..., "--out", help="Output file."),
    fmt: str = typer.Option(
        None, "--format", help="csv, parquet or json [default: from the file suffix]."
    ),
    set_name: str = typer.Option(
        None, "--set", help="scores and influence-topk: only this distilled set."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace an existing --out file (never the database or its -wal/-shm).",
    ),
) -> None:
    """Write one table as flat rows with names resolved (set, attribute, class, ...).

    An existing file is refused unless --force; the database and its -wal, -shm and -journal
    files are refused always. The file is written whole or not at all."""
    from ddsem.jobs import database as job

    request = job.TableExportRequest(what, out, fmt, set_name, force)
    result = job.export(common.workspace(create=False), request)
    common.echo(f"wrote {result.rows} {result.what} rows to {result.path} ({result.fmt})")
