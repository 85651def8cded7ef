"""Whole-database facts: row counts per table."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlmodel import SQLModel

from ddsem.db.engine import Database


def table_counts(db: Database) -> dict[str, int]:
    out: dict[str, int] = {}
    with db.session() as s:
        for name, tbl in sorted(SQLModel.metadata.tables.items()):
            out[name] = int(s.execute(select(func.count()).select_from(tbl)).scalar_one())
    return out
