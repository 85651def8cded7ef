"""Whole-database facts: row counts per table."""

from __future__ import annotations

from sqlalchemy import func, inspect, select
from sqlmodel import SQLModel

from ddsem.db.engine import Database


def table_counts(db: Database) -> dict[str, int]:
    """Rows in each of ddsem's tables; 0 for a table a read-only older file does not have yet
    (one added since it was made, which opening could not create)."""
    present = set(inspect(db.engine).get_table_names())
    out: dict[str, int] = {}
    with db.session() as s:
        for name, tbl in sorted(SQLModel.metadata.tables.items()):
            if name in present:
                out[name] = int(s.execute(select(func.count()).select_from(tbl)).scalar_one())
            else:
                out[name] = 0
    return out
