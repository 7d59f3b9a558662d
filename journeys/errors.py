"""Errors a journey designer reads: each names the file, line and column, and what is valid.

Loading collects every problem it can find before failing, so a designer fixes a file in
one pass instead of one error per run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One problem at one place. ``line`` and ``column`` are 1-based (0 when unknown)."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class JourneyLoadError(Exception):
    """Raised when a journey set does not load; carries every problem found.

    Nothing is half-loaded: when this is raised, no journey of the set is returned.
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "journey set failed to load")


class ConditionError(ValueError):
    """A condition expression is malformed or uses something not allowed.

    ``offset`` is the 0-based character offset inside the expression, so the caller can
    point the designer at the exact column.
    """

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset
