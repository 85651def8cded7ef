"""Where a job runs: the open database, the device to compute on and where progress goes.

Every job takes a ``Workspace`` and a request. The CLI builds one from the global options
(``--db``, ``--device``, ``--quiet``); a test or a notebook builds one directly::

    ws = Workspace.open("runs.db", progress=Recorder())
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ddsem.errors import UserError
from ddsem.jobs.common import clip
from ddsem.jobs.progress import SILENT, Progress

if TYPE_CHECKING:
    import torch

    from ddsem.db import Database


DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(name: str) -> None:
    """The --device syntax, checked without torch (whether it exists here is checked when a
    job first computes): a mistyped device is one line even for a command that never uses it."""
    if not DEVICE.fullmatch((name or "auto").strip().lower()):
        raise UserError(f"unknown device {clip(repr(name))}: use auto, cpu or cuda[:N]")


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

        check_device(device)
        ro = (not create) if readonly is None else readonly
        return cls(open_db(db, create=create, readonly=ro), device, progress)

    def torch_device(self) -> torch.device:
        """The device as torch sees it; one clear line when it does not exist here."""
        if self._resolved is None:
            from ddsem.runtime import resolve_device

            self._resolved = resolve_device(self.device)
        return self._resolved
