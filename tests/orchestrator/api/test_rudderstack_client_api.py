"""The official RudderStack Python SDK (rudder-sdk-python, ``rudderstack.analytics``) sends
to a real uvicorn server on loopback, configured as its documentation says (a write key
and a ``dataPlaneUrl``) and otherwise unchanged: gzip on, its ``/v1/batch`` path, HTTP
Basic with the write key, identify traits in ``context.traits`` rather than at the root.
Its batch enrolls a customer into cart-recovery and its identifies merge traits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import rudderstack.analytics as rudder_analytics
from fastapi import FastAPI, Request, Response

from orchestrator.api.app import create_app
from orchestrator.db import tables as t
from orchestrator.runtime import Runtime
from tests.orchestrator.api.support import ENV, WRITE_KEY, enrollment, rows

Seen = list[tuple[str, str, str | None]]


@pytest.fixture
def seen() -> Seen:
    return []


@pytest.fixture
def app(runtime: Runtime, seen: Seen) -> FastAPI:
    """The API, noting the method, path and Content-Encoding of each request it gets."""
    application = create_app(runtime, env=ENV)

    @application.middleware("http")
    async def note(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Any:
        seen.append((request.method, request.url.path, request.headers.get("content-encoding")))
        return await call_next(request)

    return application


@pytest.fixture
def rudder(server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, list[Any]]]:
    """The SDK's module-level client, as an application configures it, and the errors it
    reports. The module keeps one client per process: it is reset around each test."""
    errors: list[Any] = []
    monkeypatch.setattr(rudder_analytics, "default_client", None)
    monkeypatch.setattr(rudder_analytics, "write_key", WRITE_KEY)
    monkeypatch.setattr(rudder_analytics, "dataPlaneUrl", server, raising=False)
    monkeypatch.setattr(rudder_analytics, "max_retries", 0)
    monkeypatch.setattr(rudder_analytics, "on_error", lambda e, batch: errors.append(e))
    yield rudder_analytics, errors
    if rudder_analytics.default_client is not None:
        rudder_analytics.shutdown()


def test_the_rudderstack_sdk_enrolls_a_customer_and_merges_traits(
    rudder: tuple[ModuleType, list[Any]], runtime: Runtime, seen: Seen
) -> None:
    analytics, errors = rudder
    analytics.identify("u1", {"email": "anna@example.com", "first_name": "Anna"})
    analytics.track("u1", "cart_abandoned", {"cart_id": "c1", "total": 42.5}, message_id="c-c1")
    analytics.page("u1", name="Cart", properties={"path": "/cart"})
    analytics.identify("u1", {"plan": "gold"})  # a later identify adds to the traits
    analytics.flush()  # the background consumer sends the queue as one gzipped batch
    assert errors == []
    assert seen == [("POST", "/v1/batch", "gzip")]

    names = sorted(r.name or "identify" for r in rows(runtime, t.events))
    assert names == ["cart_abandoned", "identify", "identify", "page_viewed"]
    runtime.engine.run_until_idle()
    row = enrollment(runtime, "u1")
    assert (row.journey, row.key, row.state) == ("cart-recovery", "c1", "wait_email")
    [customer] = rows(runtime, t.customers)
    assert customer.email == "anna@example.com"
    assert customer.traits["first_name"] == "Anna"
    assert customer.traits["plan"] == "gold"


def test_the_rudderstack_sdk_sees_an_unknown_key_as_a_client_error(
    rudder: tuple[ModuleType, list[Any]], runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    analytics, errors = rudder
    monkeypatch.setattr(analytics, "write_key", "wrong")
    analytics.track("u1", "cart_abandoned", {"cart_id": "c1", "total": 1})
    analytics.flush()
    assert [(e.status, e.code) for e in errors] == [(401, "unauthorized")]
    assert rows(runtime, t.events) == []
