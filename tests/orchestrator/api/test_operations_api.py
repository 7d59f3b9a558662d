"""Operations endpoints: liveness, readiness (database and schema), Prometheus metrics
computed from the database, and the OpenAPI document behind /docs."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.clock import VirtualClock
from orchestrator.db.connect import open_engine
from orchestrator.runtime import Runtime
from tests.orchestrator.api.support import ENV, WRITE, email_sent_to, make_runtime, make_settings


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"


def test_readyz_is_503_on_an_unmigrated_database(
    tmp_path: Path, migrated_db: Path, clock: VirtualClock
) -> None:
    path = tmp_path / "p.db"
    shutil.copyfile(migrated_db, path)
    runtime = make_runtime(make_settings(path, ""), clock)
    with TestClient(create_app(runtime, env=ENV)) as client:
        engine = open_engine(f"sqlite:///{path}")
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM alembic_version")
        engine.dispose()
        r = client.get("/readyz")
        assert r.status_code == 503
        assert "parcours db upgrade" in r.json()["reason"]
        assert client.get("/healthz").status_code == 200
    runtime.db.dispose()


def test_metrics_show_queues_deliveries_transitions_and_timer_lag(
    client: TestClient, runtime: Runtime, clock: VirtualClock
) -> None:
    email_sent_to(client, runtime)
    client.post(
        "/v1/track", json={"userId": "u2", "event": "page_viewed", "messageId": "x"}, headers=WRITE
    )
    client.app.state.metrics_collector._ttl = 0  # type: ignore[attr-defined]
    m = samples(client)
    assert m[("parcours_events_total", ())] == 3
    assert m[("parcours_inbox_unprocessed", ())] == 1
    assert m[("parcours_transitions_total", ())] >= 2
    assert m[("parcours_deliveries", (("channel", "email"), ("status", "sent")))] == 1
    assert m[("parcours_enrollments_live", (("journey", "cart-recovery"),))] == 1
    assert m[("parcours_timer_lag_seconds", ())] == 0
    assert m[("parcours_api_events_ingested_total", ())] == 3
    clock.advance(timedelta(days=2, minutes=5))  # the wait_email timeout is 5 minutes late
    m = samples(client)
    assert m[("parcours_timers_due", ())] == 1
    assert m[("parcours_timer_lag_seconds", ())] == 300


def test_metrics_are_cached_between_scrapes(client: TestClient) -> None:
    first = samples(client)[("parcours_events_total", ())]
    client.post("/v1/track", json={"userId": "u", "event": "x", "messageId": "1"}, headers=WRITE)
    assert samples(client)[("parcours_events_total", ())] == first


def test_openapi_documents_every_endpoint(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = set(spec["paths"])
    assert {
        "/v1/track",
        "/v1/identify",
        "/v1/page",
        "/v1/batch",
        "/t/o/{token}",
        "/t/c/{token}",
        "/u/{token}",
        "/v1/webhooks/sendgrid",
        "/v1/webhooks/mailgun",
        "/v1/webhooks/postmark",
        "/v1/site/messages",
        "/v1/site/click",
        "/v1/admin/journeys",
        "/v1/admin/journeys/{name}/pause",
        "/v1/admin/journeys/{name}/resume",
        "/v1/admin/customers/{customer_id}",
        "/v1/admin/customers/{customer_id}/export",
        "/v1/admin/enroll",
        "/v1/admin/enrollments/{enrollment_id}/exit",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= paths
    batch = spec["paths"]["/v1/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert batch["schema"] == {"$ref": "#/components/schemas/BatchCall"}
    assert "BatchItem" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_unknown_paths_and_methods_get_json_errors(client: TestClient) -> None:
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
    r = client.get("/v1/track")
    assert r.status_code == 405
