"""Splitting recipient lists into provider-sized requests.

The ad platforms take at most 10,000 rows a call; batching is done here once so every
audience adapter chunks the same way and the tests can count calls.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items (nothing for an empty sequence)."""
    if size <= 0:
        raise ValueError("chunk size must be positive")
    for start in range(0, len(items), size):
        yield items[start : start + size]
