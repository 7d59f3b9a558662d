"""The official Segment Python client (analytics-python) sends to a real uvicorn server on
loopback, unchanged but for its ``host``: its batch enrolls a customer into cart-recovery."""

from __future__ import annotations

import pytest
from segment.analytics.client import Client
from segment.analytics.request import APIError

from orchestrator.db import tables as t
from orchestrator.runtime import Runtime
from tests.orchestrator.api.support import WRITE_KEY, enrollment, rows


@pytest.mark.parametrize("gzip", [False, True])
def test_the_segment_client_enrolls_a_customer(server: str, runtime: Runtime, gzip: bool) -> None:
    errors: list[Exception] = []
    client = Client(
        WRITE_KEY,
        host=server,
        sync_mode=True,
        gzip=gzip,
        max_retries=0,
        on_error=lambda e, batch: errors.append(e),
    )
    client.identify("u1", {"email": "anna@example.com", "first_name": "Anna"})
    client.track("u1", "cart_abandoned", {"cart_id": "c1", "total": 42.5}, message_id="cart-c1")
    client.page("u1", name="Cart", properties={"path": "/cart"})
    client.flush()
    assert errors == []
    names = sorted(r.name or "identify" for r in rows(runtime, t.events))
    assert names == ["cart_abandoned", "identify", "page_viewed"]
    runtime.engine.run_until_idle()
    row = enrollment(runtime, "u1")
    assert (row.journey, row.key, row.state) == ("cart-recovery", "c1", "wait_email")
    [customer] = rows(runtime, t.customers)
    assert customer.email == "anna@example.com"


def test_the_segment_client_sees_an_unknown_key_as_a_client_error(
    server: str, runtime: Runtime
) -> None:
    client = Client("wrong", host=server, sync_mode=True, max_retries=0)
    with pytest.raises(APIError) as caught:  # sync mode raises; 4xx are not retried
        client.track("u1", "cart_abandoned", {"cart_id": "c1", "total": 1})
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    assert rows(runtime, t.events) == []
