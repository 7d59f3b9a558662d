"""Bad events are rejected with a clear reason and stored nowhere."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.db import tables as t
from orchestrator.ingest import EventIn, record
from tests.orchestrator.conftest import Harness


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"event": "x"}, "", "userId or anonymousId is required"),
        ({"userId": "u"}, "", "event (the event name) is required"),
        ({"userId": "u", "event": "x", "properties": [1, 2]}, "properties", "dictionary"),
        ({"userId": "u", "event": "x", "timestamp": "yesterday"}, "timestamp", "datetime"),
        ({"userId": True, "event": "x"}, "userId", "string"),
        ({"userId": "u" * 300, "event": "x"}, "userId", "at most 255"),
        ({"type": "alias", "userId": "u"}, "type", "track"),
    ],
)
def test_bad_events_name_the_field(body: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        EventIn.model_validate(body)
    err = info.value.errors()[0]
    assert ".".join(str(p) for p in err["loc"]) == field
    assert words in err["msg"]


def test_message_id_deduplicates_and_anonymous_ids_link(harness: Harness) -> None:
    h = harness
    events = [
        EventIn.model_validate({"anonymousId": "a1", "event": "product_viewed", "messageId": "m1"}),
        EventIn.model_validate(
            {
                "type": "identify",
                "anonymousId": "a1",
                "userId": "ann",
                "messageId": "m2",
                "traits": {"email": "ann@example.nl"},
            }
        ),
    ]
    with h.rt.db.begin() as conn:
        assert record(conn, events, h.clock.now()) == (2, 0)
    with h.rt.db.begin() as conn:
        assert record(conn, events[:1], h.clock.now()) == (0, 1)
    later = EventIn.model_validate(
        {
            "anonymousId": "a1",
            "event": "cart_abandoned",
            "messageId": "m3",
            "properties": {"cart_id": "c", "total": 3},
        }
    )
    with h.rt.db.begin() as conn:
        record(conn, [later], h.clock.now())
    h.engine.run_until_idle()
    assert h.count(t.events) == 3
    # The anonymous visitor, once identified, is the same customer: the cart enrolls "ann".
    assert h.one("ann").key == "c"


def test_cli_rejects_a_bad_event_and_stores_nothing(harness: Harness, tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    h = harness
    from tests.conftest import write_config

    config = write_config(tmp_path, h.rt.settings.database_url)
    before = h.count(t.events)
    result = CliRunner().invoke(app, ["send-event", "x" * 300, "cart_abandoned", "-c", str(config)])
    assert result.exit_code == 2
    assert "userId" in result.output and "nothing was stored" in result.output
    assert h.count(t.events) == before
