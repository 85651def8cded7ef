"""Claims on units of work, so that two processes running the same job split it instead of
doing it twice (or crashing on a unique constraint).

``claim`` inserts a row keyed by the unit; the primary key makes it atomic on SQLite and
PostgreSQL alike (the loser's insert fails and it reads the winner's row). A claim is stale,
and taken over by the next ``claim``, when its owner's process is dead on this host or its
heartbeat is older than ``STALE_SECONDS``: a killed job never blocks a re-run. A takeover is
an update conditional on the old owner, so of two processes taking over one claim one wins.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import delete, select, update

from ddsem.db.engine import Database
from ddsem.db.tables import JobClaim, now

STALE_SECONDS = 600  # a live owner refreshes its heartbeat far more often (see ``heartbeat``)
HOST = socket.gethostname()


def new_owner() -> str:
    """This process's owner id: host, pid and a random part (one per job run)."""
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _alive(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != HOST or not pid.isdigit():
        return True  # another machine: only the heartbeat can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _held(row: JobClaim) -> bool:
    """Whether a claim's owner still holds it: alive and heard from within STALE_SECONDS."""
    old = (
        row.heartbeat.replace(tzinfo=now().tzinfo)
        if row.heartbeat.tzinfo is None
        else row.heartbeat
    )
    return _alive(row.owner) and now() - old < timedelta(seconds=STALE_SECONDS)


def claim(db: Database, key: str, owner: str) -> bool:
    """Take the unit ``key`` for ``owner``: True when it is ours now (new, ours already, or
    taken over from a dead or silent owner), False while another live process holds it."""
    for _ in range(3):
        try:
            with db.session() as s:
                row = s.get(JobClaim, key)
                if row is None:
                    s.add(JobClaim(key=key, owner=owner))
                    return True
                if row.owner == owner:
                    return True
                if _held(row):
                    return False
                # a dead or silent owner: take over, only if no other process took it over
                # since we read it (PostgreSQL lets both of two plain updates succeed)
                taken = s.exec(
                    update(JobClaim)
                    .where(JobClaim.key == key, JobClaim.owner == row.owner)
                    .values(owner=owner, heartbeat=now())
                )
                return taken.rowcount == 1
        except IntegrityError:
            continue  # another process inserted it between our read and write: look again
    return False


def heartbeat(db: Database, key: str, owner: str) -> None:
    """Keep a claim fresh during long work (a claim not refreshed goes stale)."""
    with db.session() as s:
        row = s.get(JobClaim, key)
        if row is not None and row.owner == owner:
            row.heartbeat = now()
            s.add(row)


def release(db: Database, key: str, owner: str) -> None:
    with db.session() as s:
        s.exec(delete(JobClaim).where(JobClaim.key == key, JobClaim.owner == owner))


def held_by_others(db: Database, prefix: str, owner: str) -> list[str]:
    """Owners of live claims under ``prefix`` other than ``owner`` (for a one-line message)."""
    with db.session() as s:
        rows = s.exec(select(JobClaim).where(JobClaim.key.startswith(prefix))).all()
    return sorted({r.owner for r in rows if r.owner != owner and _alive(r.owner)})


def clear_abandoned(db: Database, prefix: str) -> int:
    """Delete the claims under ``prefix`` that no live owner holds: a process killed after it
    stored its unit but before it released the claim leaves one, which no later claim takes
    over (the unit is done). Called when the work under ``prefix`` is complete."""
    with db.session() as s:
        rows = s.exec(select(JobClaim).where(JobClaim.key.startswith(prefix))).all()
        gone = [r.key for r in rows if not _held(r)]
        if gone:
            s.exec(delete(JobClaim).where(JobClaim.key.in_(gone)))
    return len(gone)
