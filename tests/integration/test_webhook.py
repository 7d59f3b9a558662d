"""A webhook journey end to end: the engine enrolls, the dispatcher renders the JSON body
and the real ``webhook`` adapter POSTs it to a receiver on 127.0.0.1 that does exactly what
we tell integrators to do: check the signature with ``verify_signature`` and de-duplicate
on ``Idempotency-Key``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from channels.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.integration.conftest import LiveFactory, LiveHarness

SECRET = "whsec-integration-0123456789abcdef"

JOURNEY = """\
journey: crm-sync
entry:
  event: signed_up
  reentry: never
steps:
  - id: notify_crm
    type: send
    channel: crm
    template: crm_signup
  - id: done
    type: exit
    reason: synced
"""

TEMPLATE = """\
body:
  type: signup
  email: "{{ customer.email }}"
  name: "{{ customer.first_name | default('') }}"
  plan: "{{ event.plan }}"
  tags: ["{{ event.source | default('web') }}", "parcours"]
"""


@dataclass
class Receiver:
    """What the integrator's endpoint saw; answers ``script`` first, then 200."""

    url: str
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    seen_keys: list[str] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    box = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hooks/parcours")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            key = self.headers.get("Idempotency-Key", "")
            box.seen_keys.append(key)
            ok = verify_signature(
                SECRET,
                body=raw,
                timestamp=self.headers.get(TIMESTAMP_HEADER, ""),
                signature=self.headers.get(SIGNATURE_HEADER, ""),
                now=datetime.now(UTC),
            )
            if not ok:
                box.rejected.append(key)
                self._answer(401, {"error": "bad signature"}, {})
                return
            if box.script:
                status, headers = box.script.pop(0)
                self._answer(status, {"error": "busy"}, headers)
                return
            if any(a["key"] == key for a in box.accepted):  # de-duplicated: same answer
                self._answer(200, {"id": f"crm-{key}"}, {})
                return
            box.accepted.append({"key": key, "path": self.path, "json": json.loads(raw)})
            self._answer(200, {"id": f"crm-{key}"}, {})

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()


def _live(make_live: LiveFactory, tmp_path: Path, url: str, secret: str = SECRET) -> LiveHarness:
    (tmp_path / "journeys").mkdir()
    (tmp_path / "journeys" / "crm-sync.yaml").write_text(JOURNEY, encoding="utf-8")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "crm_signup.yaml").write_text(TEMPLATE, encoding="utf-8")
    return make_live(
        channels={"crm": {"type": "webhook", "url": url, "secret_env": "CRM_SECRET"}},
        env={"CRM_SECRET": secret},
        journeys=[str(tmp_path / "journeys")],
        templates=str(tmp_path / "templates"),
    )


def _sign_up(h: LiveHarness) -> None:
    h.identify("u1", email="lena@example.nl", first_name='Lena "LJ"')
    h.event("u1", "signed_up", plan="pro", source="newsletter")


def test_signed_json_arrives_with_the_idempotency_key_and_is_recorded_as_sent(
    make_live: LiveFactory, tmp_path: Path, receiver: Receiver
) -> None:
    h = _live(make_live, tmp_path, receiver.url)
    _sign_up(h)
    assert h.dispatch() == 1

    row = h.deliveries("u1")[0]
    assert receiver.rejected == []
    [got] = receiver.accepted
    assert got["key"] == row.idempotency_key
    assert got["path"] == "/hooks/parcours"
    assert got["json"]["body"] == {
        "type": "signup",
        "email": "lena@example.nl",
        "name": 'Lena "LJ"',  # rendered, then JSON-encoded: quotes survive intact
        "plan": "pro",
        "tags": ["newsletter", "parcours"],
    }
    meta = got["json"]["delivery"]
    assert meta["idempotency_key"] == row.idempotency_key
    assert (meta["journey"], meta["step"], meta["customer_id"]) == ("crm-sync", "notify_crm", "u1")
    assert (row.status, row.provider_message_id) == ("sent", f"crm-{row.idempotency_key}")
    assert h.one("u1", "crm-sync").exit_reason == "synced"


def test_a_busy_receiver_gets_the_same_key_again_after_retry_after(
    make_live: LiveFactory, tmp_path: Path, receiver: Receiver
) -> None:
    h = _live(make_live, tmp_path, receiver.url)
    receiver.script.append((503, {"Retry-After": "90"}))
    _sign_up(h)
    h.dispatch()
    row = h.deliveries("u1")[0]
    assert (row.status, row.attempts) == ("pending", 1)
    assert "HTTP 503" in row.last_error
    wait = (row.next_attempt_at - h.clock.now()).total_seconds()
    assert 90 <= wait <= 91  # the receiver's Retry-After, plus at most a second of jitter
    h.clock.set(row.next_attempt_at)
    h.dispatch()
    row = h.deliveries("u1")[0]
    assert (row.status, row.attempts) == ("sent", 2)
    assert receiver.seen_keys == [row.idempotency_key, row.idempotency_key]
    assert len(receiver.accepted) == 1


def test_a_request_signed_with_another_secret_is_refused_and_the_delivery_dies(
    make_live: LiveFactory, tmp_path: Path, receiver: Receiver
) -> None:
    h = _live(make_live, tmp_path, receiver.url, secret="not-the-shared-secret-at-all")
    _sign_up(h)
    h.dispatch()
    row = h.deliveries("u1")[0]
    assert receiver.accepted == [] and receiver.rejected == [row.idempotency_key]
    assert row.status == "dead" and "HTTP 401" in row.last_error
