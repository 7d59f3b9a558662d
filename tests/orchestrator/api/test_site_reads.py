"""``GET /v1/site/messages`` on a SQLite file reads through its own ``sqlite3`` connection
and answers in front of FastAPI: the same answers as the SQLAlchemy read, the same CORS
headers as the site's other endpoints, a locked database is a 503 to retry (not a 500),
and the kept connection follows schema changes and survives a restart of the app."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import insert, text
from starlette.testclient import TestClient

from orchestrator.api.state import ApiState
from orchestrator.db import tables as t
from orchestrator.runtime import Runtime
from tests.orchestrator.api import support
from tests.orchestrator.api.support import SITE

ORIGIN = {"Origin": "https://shop.example"}


def add_message(runtime: Runtime, key: str, customer: str = "u1", **values: Any) -> None:
    """With a non-ASCII body and every column given: both reads must decode them alike."""
    html = {"html": f"<p>{key} \u00e9</p>", "expires_at": None, "dismissed_at": None}
    support.add_message(runtime, key, customer, **(html | values))


def state_of(app: FastAPI) -> ApiState:
    state: ApiState = app.state.parcours
    return state


def database_path(runtime: Runtime) -> str:
    path = runtime.db.url.database
    assert path
    return path


def test_the_sqlite3_read_answers_as_the_sqlalchemy_read(
    app: FastAPI, client: TestClient, runtime: Runtime
) -> None:
    now = runtime.clock.now()
    with runtime.db.begin() as conn:
        conn.execute(
            insert(t.anonymous_ids),
            [{"anonymous_id": "dev-1", "customer_id": "u1", "linked_at": now}],
        )
    add_message(runtime, "old", created_at=now - timedelta(hours=2))
    add_message(runtime, "tie-1", created_at=now - timedelta(hours=1))
    add_message(runtime, "tie-2", created_at=now - timedelta(hours=1))
    add_message(runtime, "whole-second", created_at=now.replace(microsecond=0))
    add_message(runtime, "expiring", expires_at=now + timedelta(minutes=5))
    add_message(runtime, "expires-now", expires_at=now)
    add_message(runtime, "dismissed", dismissed_at=now)
    add_message(runtime, "footer", slot="footer")
    add_message(runtime, "someone-else", customer="u2")
    for i in range(55):
        add_message(runtime, f"many-{i:02}", customer="u3", created_at=now - timedelta(seconds=i))
    queries = [
        "userId=u1",
        "userId=u1&slot=footer",
        "userId=u3",
        "userId=nobody",
        "anonymousId=dev-1",
        "anonymousId=dev-1&slot=banner",
        "anonymousId=dev-2",
        "userId=%20u1%20",
    ]
    state = state_of(app)
    assert state.site_reader is not None  # a SQLite file: the sqlite3 read answers

    def answers() -> list[tuple[int, bytes]]:
        found = []
        for q in queries:
            r = client.get(f"/v1/site/messages?{q}", headers=SITE)
            found.append((r.status_code, r.content))
        return found

    fast = answers()
    reader, state.site_reader = state.site_reader, None  # now SQLAlchemy's read answers
    try:
        assert answers() == fast
    finally:
        state.site_reader = reader
    assert len(client.get("/v1/site/messages?userId=u3", headers=SITE).json()["messages"]) == 50


def test_the_site_answers_carry_the_cors_headers_of_the_other_site_endpoints(
    client: TestClient, runtime: Runtime
) -> None:
    add_message(runtime, "k1")
    click = {"userId": "u1", "delivery_key": "k1"}
    for extra in ({}, ORIGIN):
        page = client.get("/v1/site/messages?userId=u1", headers={**SITE, **extra})
        reaction = client.post("/v1/site/click", json=click, headers={**SITE, **extra})
        assert (page.status_code, reaction.status_code) == (200, 200)
        for name in ("access-control-allow-origin", "vary"):
            assert page.headers.get(name) == reaction.headers.get(name), name
        refused = client.get("/v1/site/messages?userId=u1", headers=extra)
        assert refused.status_code == 401
        assert refused.headers.get("access-control-allow-origin") == page.headers.get(
            "access-control-allow-origin"
        )
    assert page.headers["access-control-allow-origin"] == "*"


def release_the_file(app: FastAPI, runtime: Runtime) -> None:
    """Close every connection to the database file (so another may lock or replace it);
    the API's reader connects again on its next request."""
    state = state_of(app)
    runtime.db.dispose()
    state.reader.dispose()
    assert state.site_reader is not None
    state.site_reader.close()


def test_a_locked_database_is_a_503_to_retry_and_reads_resume_after(
    app: FastAPI, client: TestClient, runtime: Runtime
) -> None:
    add_message(runtime, "k1")
    release_the_file(app, runtime)
    locker = sqlite3.connect(database_path(runtime), isolation_level=None)
    try:
        locker.execute("PRAGMA locking_mode=EXCLUSIVE")
        locker.execute("BEGIN EXCLUSIVE")
        locker.execute("DELETE FROM site_messages")
        r = client.get("/v1/site/messages?userId=u1", headers=SITE)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["code"] == "unavailable"
        locker.execute("ROLLBACK")
    finally:
        locker.close()
    r = client.get("/v1/site/messages?userId=u1", headers=SITE)
    assert r.status_code == 200
    assert [m["delivery_key"] for m in r.json()["messages"]] == ["k1"]


def test_the_kept_connection_follows_a_schema_change(client: TestClient, runtime: Runtime) -> None:
    add_message(runtime, "k1")
    assert len(client.get("/v1/site/messages?userId=u1", headers=SITE).json()["messages"]) == 1
    with runtime.db.begin() as conn:  # as a later migration might
        conn.execute(text("ALTER TABLE site_messages ADD COLUMN note TEXT"))
        conn.execute(text("CREATE INDEX ix_site_messages_slot ON site_messages (slot)"))
    add_message(runtime, "k2", created_at=runtime.clock.now() + timedelta(seconds=1))
    r = client.get("/v1/site/messages?userId=u1", headers=SITE)
    assert [m["delivery_key"] for m in r.json()["messages"]] == ["k2", "k1"]


def test_the_app_reads_again_after_a_restart(app: FastAPI, runtime: Runtime) -> None:
    add_message(runtime, "k1")
    for _ in range(2):  # each TestClient starts and stops the app, on a thread of its own
        with TestClient(app, base_url="http://testserver") as c:
            r = c.get("/v1/site/messages?userId=u1", headers=SITE)
            assert [m["delivery_key"] for m in r.json()["messages"]] == ["k1"]


def test_a_damaged_database_file_is_a_503_not_a_500(
    app: FastAPI, client: TestClient, runtime: Runtime
) -> None:
    add_message(runtime, "k1")
    release_the_file(app, runtime)
    path = Path(database_path(runtime))
    good = path.read_bytes()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"not a database" * 512)  # a botched restore
    try:
        r = client.get("/v1/site/messages?userId=u1", headers=SITE)
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "unavailable"
    finally:
        path.write_bytes(good)
    r = client.get("/v1/site/messages?userId=u1", headers=SITE)  # a fresh connection
    assert r.status_code == 200
    assert [m["delivery_key"] for m in r.json()["messages"]] == ["k1"]
