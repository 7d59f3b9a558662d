"""A scriptable stand-in for a provider, for adapter tests and the conformance kit.

It records every request the adapter makes (an :class:`Exchange`) and answers with the
next scripted :class:`Outcome`. HTTP adapters plug it in through httpx's transport seam
(:attr:`ProviderDouble.transport`); adapters over other protocols call
:meth:`ProviderDouble.next_outcome` from a small fake client of their own.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import httpx


class Outcome(Enum):
    OK = "ok"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request as the provider would have seen it."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        """URL, headers and body as one string, for "does X appear anywhere" checks."""
        heads = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        return f"{self.method} {self.url}\n{heads}\n\n{self.body.decode('utf-8', 'replace')}"


OkResponder = Callable[[httpx.Request], httpx.Response]


def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={})


class ProviderDouble:
    """Records requests; answers OK unless told otherwise with :meth:`script`."""

    def __init__(self, ok: OkResponder | None = None, *, retry_after: float = 7.0) -> None:
        self.exchanges: list[Exchange] = []
        self.retry_after = retry_after
        self._ok = ok or _ok
        self._script: deque[Outcome] = deque()

    def script(self, *outcomes: Outcome) -> None:
        """Queue outcomes for the next requests; after the queue empties, requests succeed."""
        self._script.extend(outcomes)

    def next_outcome(self, exchange: Exchange) -> Outcome:
        self.exchanges.append(exchange)
        return self._script.popleft() if self._script else Outcome.OK

    def _handle(self, request: httpx.Request) -> httpx.Response:
        exchange = Exchange(
            method=request.method,
            url=str(request.url),
            headers=dict(request.headers),
            body=request.read(),
        )
        outcome = self.next_outcome(exchange)
        if outcome is Outcome.TIMEOUT:
            raise httpx.ReadTimeout("provider double timed out", request=request)
        if outcome is Outcome.RETRYABLE:
            return httpx.Response(
                503,
                headers={"Retry-After": f"{self.retry_after:g}"},
                json={"error": {"message": "provider double is unavailable"}},
            )
        if outcome is Outcome.PERMANENT:
            return httpx.Response(
                400, json={"error": {"message": "provider double rejected the request"}}
            )
        return self._ok(request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)
