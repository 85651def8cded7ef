"""Where a job runs: the open database, the device to compute on and where progress goes.

Every job takes a ``Workspace`` and a request. The CLI builds one from the global options
(``--db``, ``--device``, ``--quiet``); a test or a notebook builds one directly::

    ws = Workspace.open("runs.db", progress=Recorder())
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ddsem.jobs.progress import SILENT, Progress

if TYPE_CHECKING:
    import torch

    from ddsem.db import Database


@dataclass
class Workspace:
    db: Database
    device: str = "auto"  # auto | cpu | cuda[:N], resolved once by ddsem.runtime
    progress: Progress = SILENT
    _resolved: Any = field(default=None, init=False, repr=False)

    @classmethod
    def open(
        cls,
        db: str | None = None,
        *,
        create: bool = True,
        readonly: bool | None = None,
        device: str = "auto",
        progress: Progress = SILENT,
    ) -> Workspace:
        """Open ``db`` (a path or SQLAlchemy URL; None: $DDSEM_DB, then ./ddsem.db).

        ``create=False`` (the reading commands): an existing database only, opened read-only
        (SQLite ``mode=ro``) unless ``readonly=False``; a write then raises "the database is
        read-only". A file this process cannot write is opened read-only either way."""
        from ddsem.db import open_db

        ro = (not create) if readonly is None else readonly
        return cls(open_db(db, create=create, readonly=ro), device, progress)

    def torch_device(self) -> torch.device:
        """The device as torch sees it; one clear line when it does not exist here."""
        if self._resolved is None:
            from ddsem.runtime import resolve_device

            self._resolved = resolve_device(self.device)
        return self._resolved
