"""``ddsem db info``: what the database holds."""

from __future__ import annotations

import typer

from ddsem.cli import common

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
