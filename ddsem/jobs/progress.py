"""How a job reports what it is doing without printing: a two-method protocol.

A job calls ``progress.phase(description, total)`` around a long loop and ``advance(n)`` inside
it, and ``progress.note(text)`` for a line a person would want to read as it happens ("seed 0:
already complete"). The CLI renders phases as rich progress bars and notes as lines; the TUI,
a notebook or a test passes its own object, or ``SILENT``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

Advance = Callable[..., None]  # advance(n: int = 1)


class Progress(Protocol):
    def phase(self, description: str, total: int) -> AbstractContextManager[Advance]:
        """A unit of long work with ``total`` steps; the context yields ``advance(n=1)``."""
        ...

    def note(self, text: str) -> None:
        """A line of news for a person (never machine output)."""
        ...


class Silent:
    """Progress that goes nowhere: the default for jobs called from code."""

    @contextmanager
    def phase(self, description: str, total: int) -> Iterator[Advance]:
        yield lambda n=1: None

    def note(self, text: str) -> None:
        pass


SILENT = Silent()


@dataclass
class Recorder:
    """Progress that remembers everything (tests, notebooks): phases with the steps advanced,
    and notes in order."""

    phases: list[tuple[str, int, int]] = field(default_factory=list)  # (description, total, done)
    notes: list[str] = field(default_factory=list)

    @contextmanager
    def phase(self, description: str, total: int) -> Iterator[Advance]:
        index = len(self.phases)
        self.phases.append((description, total, 0))

        def advance(n: int = 1) -> None:
            d, t, done = self.phases[index]
            self.phases[index] = (d, t, done + n)

        yield advance

    def note(self, text: str) -> None:
        self.notes.append(text)
