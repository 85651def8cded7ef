"""``ddsem db info|export``: what the database holds, and flat exports for other tools."""

from __future__ import annotations

import typer

from ddsem.cli import common
from ddsem.errors import UserError

app = typer.Typer(help="Inspect and export the database.", no_args_is_help=True)


@app.command("info")
def info(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Schema version and the number of rows in every table."""
    from ddsem.db.admin import table_counts

    db = common.open_database(create=False)
    counts = table_counts(db)
    if as_json:
        common.print_json({"url": db.url, "tables": counts})
        return
    common.echo(f"database: {db.url}")
    common.table("rows per table", ["table", "rows"], [[k, v] for k, v in counts.items()])


@app.command("export")
def export(
    what: str = typer.Option(
        ..., "--what", help="scores (attribute PR-AUC), influence-topk or annotations."
    ),
    out: str = typer.Option(..., "--out", help="Output file."),
    fmt: str = typer.Option(
        None, "--format", help="csv, parquet or json [default: from the file suffix]."
    ),
    set_name: str = typer.Option(
        None, "--set", help="scores and influence-topk: only this distilled set."
    ),
) -> None:
    """Write one table as flat rows with names resolved (set, attribute, class, ...)."""
    from ddsem.db import export as ex

    if what not in ex.WHAT:
        raise UserError(f"unknown --what {what!r}: use scores, influence-topk or annotations")
    path, fmt = ex.check_target(out, fmt)
    if set_name and what == "annotations":
        raise UserError("--set applies to scores and influence-topk, not annotations")
    db = common.open_database(create=False)
    if what == "scores":
        rows, columns, hint = ex.scores_for_export(db, set_name), ex.SCORE_COLUMNS, "`ddsem rank`"
    elif what == "influence-topk":
        rows, columns, hint = ex.topk_for_export(db, set_name), ex.TOPK_COLUMNS, "`ddsem influence`"
    else:
        rows, columns = ex.annotations_for_export(db), ex.ANNOTATION_COLUMNS
        hint = "`ddsem annotate`"
    if not rows:
        where = f" for set {set_name!r}" if set_name else ""
        raise UserError(f"no {what} to export{where} yet: {hint} makes them")
    ex.write_rows(rows, columns, path, fmt)
    common.echo(f"wrote {len(rows)} {what} rows to {path} ({fmt})")
