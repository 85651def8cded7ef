"""Writes that two processes may race on: retried once the other's row is visible.

A conflict is a unique constraint (``IntegrityError``, SQLite and PostgreSQL alike) or, on
PostgreSQL, a deadlock or serialization failure the server resolved by aborting this
transaction (SQLSTATE 40P01 / 40001, raised as ``OperationalError``): retrying is right for both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retry_on_conflict(write: Callable[[], T], attempts: int = 3) -> T:
    """Run ``write()`` (one transaction that skips what is already stored) again when another
    process inserted the same natural key between its read and its commit: the next attempt
    reads that row and skips it, so concurrent writers never crash or duplicate."""
    from sqlalchemy.exc import DBAPIError, IntegrityError

    for attempt in range(attempts):
        try:
            return write()
        except DBAPIError as e:
            if not (isinstance(e, IntegrityError) or is_transient(e)) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


TRANSIENT_SQLSTATES = ("40001", "40P01")  # serialization failure, deadlock detected


def is_transient(e: BaseException) -> bool:
    """A server's "try again": PostgreSQL aborted this transaction to resolve a conflict."""
    return getattr(getattr(e, "orig", None), "sqlstate", None) in TRANSIENT_SQLSTATES
