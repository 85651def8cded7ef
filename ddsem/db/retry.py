"""Writes that two processes may race on: retried once the other's row is visible."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retry_on_conflict(write: Callable[[], T], attempts: int = 3) -> T:
    """Run ``write()`` (one transaction that skips what is already stored) again when another
    process inserted the same natural key between its read and its commit: the next attempt
    reads that row and skips it, so concurrent writers never crash or duplicate."""
    from sqlalchemy.exc import IntegrityError

    for attempt in range(attempts):
        try:
            return write()
        except IntegrityError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
