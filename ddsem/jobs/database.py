"""Jobs ``db info`` and ``db export``: what the database holds, and flat exports for other
tools (attribute scores, the influence top-k table, annotations) with names resolved."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddsem.errors import UserError
from ddsem.jobs.common import check

if TYPE_CHECKING:
    from ddsem.jobs.workspace import Workspace

__all__ = ["DatabaseInfo", "TableExportRequest", "TableExportResult", "export", "info"]


@dataclass
class DatabaseInfo:
    url: str
    tables: dict[str, int]  # table -> rows

    def as_json(self) -> dict[str, Any]:
        return {"url": self.url, "tables": self.tables}


def info(ws: Workspace) -> DatabaseInfo:
    """The database's URL and the number of rows in every table."""
    from ddsem.db.admin import table_counts

    return DatabaseInfo(ws.db.url, table_counts(ws.db))


@dataclass(frozen=True)
class TableExportRequest:
    what: str  # scores (attribute PR-AUC) | influence-topk | annotations
    out: str | os.PathLike
    fmt: str | None = None  # csv | parquet | json; None: from the file suffix
    set_name: str | None = None  # scores and influence-topk: only this distilled set
    force: bool = False  # replace an existing file (never the database or its -wal/-shm)

    def __post_init__(self) -> None:
        from ddsem.db.export import WHAT

        check(
            self.what in WHAT,
            f"unknown --what {self.what!r}: use scores, influence-topk or annotations",
        )
        self.target()  # the file and format are checked before anything is read
        if self.set_name and self.what == "annotations":
            raise UserError("--set applies to scores and influence-topk, not annotations")

    def target(self) -> tuple[Path, str]:
        """(the output file, its format)."""
        from ddsem.db.export import check_target

        return check_target(str(self.out), self.fmt)


@dataclass
class TableExportResult:
    what: str
    path: Path
    fmt: str
    rows: int

    def as_json(self) -> dict[str, Any]:
        return {"what": self.what, "path": str(self.path), "format": self.fmt, "rows": self.rows}


def export(ws: Workspace, request: TableExportRequest) -> TableExportResult:
    """Write one table as flat rows; refuses an empty table, naming the command that fills it.
    Never writes over the database or its side files, nor over an existing file without
    ``force``; the rows go to a temporary file that replaces the target only when complete."""
    from ddsem.db import export as ex
    from ddsem.db.engine import database_files

    path, fmt = request.target()
    ex.check_output(path, force=request.force, protected=database_files(ws.db))
    if request.what == "scores":
        rows, columns, hint = (
            ex.scores_for_export(ws.db, request.set_name),
            ex.SCORE_COLUMNS,
            "`ddsem rank`",
        )
    elif request.what == "influence-topk":
        rows, columns, hint = (
            ex.topk_for_export(ws.db, request.set_name),
            ex.TOPK_COLUMNS,
            "`ddsem influence`",
        )
    else:
        rows, columns = ex.annotations_for_export(ws.db), ex.ANNOTATION_COLUMNS
        hint = "`ddsem annotate`"
    if not rows:
        where = f" for set {request.set_name!r}" if request.set_name else ""
        raise UserError(f"no {request.what} to export{where} yet: {hint} makes them")
    ex.write_rows(rows, columns, path, fmt)
    return TableExportResult(request.what, path, fmt, len(rows))
