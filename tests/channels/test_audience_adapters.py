"""Meta Custom Audiences and Google Customer Match: exact request shapes, hashing, batching,
consent and error mapping. Every request body is inspected for raw identifiers."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from channels.base import Delivery, PermanentError, Recipient, RetryableError
from channels.google_customer_match import (
    GoogleCustomerMatchChannel,
    GoogleCustomerMatchChannelFactory,
)
from channels.meta_audience import MetaAudienceChannel, MetaAudienceChannelFactory, session_id

NOW = datetime(2025, 6, 1, tzinfo=UTC)
TEST_EMAIL_SHA256 = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Recorder:
    def __init__(self, response: httpx.Response | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.response = response or httpx.Response(200, json={"num_received": 1})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.response

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) for r in self.requests]

    def assert_no_raw_identifiers(self, recipients: list[Recipient]) -> None:
        blob = "\n".join(r.content.decode() + str(r.url) for r in self.requests)
        for r in recipients:
            for raw in (r.email, r.phone, r.external_id):
                if raw:
                    assert raw not in blob
                    assert raw.lower() not in blob
            if r.phone:
                assert "".join(c for c in r.phone if c.isdigit()) not in blob


def people(count: int) -> list[Recipient]:
    return [Recipient(customer_id=f"c{i}", email=f"Person{i}@Example.com ") for i in range(count)]


def meta(recorder: Recorder, **settings: Any) -> MetaAudienceChannel:
    base = {"audience_id": "23850001", "access_token_env": "META", "api_version": "v21.0"}
    base.update(settings)
    factory = MetaAudienceChannelFactory(transport=httpx.MockTransport(recorder), clock=lambda: NOW)
    return factory.build("meta", base, {"META": "EAAB-token"})


async def test_meta_add_one_email_exact_shape() -> None:
    recorder = Recorder()
    channel = meta(recorder)
    recipient = Recipient(customer_id="c1", email="  Test@Example.COM ")
    await channel.add([recipient], batch_key="batch-1")
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == "https://graph.facebook.com/v21.0/23850001/users"
    assert request.headers["Authorization"] == "Bearer EAAB-token"
    assert json.loads(request.content) == {
        "payload": {"schema": "EMAIL_SHA256", "data": [[TEST_EMAIL_SHA256]]},
        "session": {
            "session_id": session_id("batch-1", "POST"),
            "batch_seq": 1,
            "last_batch_flag": True,
            "estimated_num_total": 1,
        },
    }
    recorder.assert_no_raw_identifiers([recipient])


async def test_meta_multi_key_schema_with_phone_and_external_id() -> None:
    recorder = Recorder()
    recipients = [
        Recipient(customer_id="a", email="test@example.com", phone="+1 (800) 555-0100"),
        Recipient(customer_id="b", external_id="crm-42"),
        Recipient(customer_id="c"),
    ]
    await meta(recorder).add(recipients, batch_key="b")
    (body,) = recorder.bodies()
    assert body["payload"]["schema"] == ["EMAIL_SHA256", "PHONE_SHA256", "EXTERN_ID"]
    assert body["payload"]["data"] == [
        [TEST_EMAIL_SHA256, sha("18005550100"), ""],
        ["", "", sha("crm-42")],
    ]
    assert body["session"]["estimated_num_total"] == 2
    recorder.assert_no_raw_identifiers(recipients)


async def test_meta_25000_recipients_take_three_calls_in_one_session() -> None:
    recorder = Recorder()
    recipients = people(25_000)
    await meta(recorder).add(recipients, batch_key="nightly-7")
    bodies = recorder.bodies()
    assert [len(b["payload"]["data"]) for b in bodies] == [10_000, 10_000, 5_000]
    sessions = [b["session"] for b in bodies]
    assert {s["session_id"] for s in sessions} == {session_id("nightly-7", "POST")}
    assert [s["batch_seq"] for s in sessions] == [1, 2, 3]
    assert [s["last_batch_flag"] for s in sessions] == [False, False, True]
    assert {s["estimated_num_total"] for s in sessions} == {25_000}
    assert bodies[0]["payload"]["data"][0] == [sha("person0@example.com")]
    recorder.assert_no_raw_identifiers(recipients[:500])


async def test_meta_remove_uses_delete_and_its_own_session() -> None:
    recorder = Recorder()
    await meta(recorder).remove(people(2), batch_key="exit-1")
    (request,) = recorder.requests
    assert request.method == "DELETE"
    assert str(request.url) == "https://graph.facebook.com/v21.0/23850001/users"
    body = json.loads(request.content)
    assert body["session"]["session_id"] == session_id("exit-1", "DELETE")
    assert session_id("exit-1", "DELETE") != session_id("exit-1", "POST")


async def test_meta_send_is_add_of_one_and_needs_an_identifier() -> None:
    recorder = Recorder()
    channel = meta(recorder)
    delivery = Delivery("k-1", "meta", "j", "s", Recipient(customer_id="c", email="a@b.example"))
    result = await channel.send(delivery)
    assert result.provider_message_id == f"meta-session:{session_id('k-1', 'POST')}"
    with pytest.raises(PermanentError, match="no email"):
        await channel.send(Delivery("k-2", "meta", "j", "s", Recipient(customer_id="c")))
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (400, {"message": "(#80003) too many calls", "code": 80003}, RetryableError),
        (400, {"message": "temporary", "code": 100, "is_transient": True}, RetryableError),
        (
            400,
            {
                "message": "Invalid parameter",
                "code": 100,
                "error_subcode": 1713230,
                "error_user_msg": "Audience Upload Blocked",
            },
            PermanentError,
        ),
        (500, {"message": "An unknown error occurred", "code": 1}, RetryableError),
    ],
)
async def test_meta_error_mapping(
    status: int, error: dict[str, Any], expected: type[Exception]
) -> None:
    recorder = Recorder(httpx.Response(status, json={"error": error}))
    with pytest.raises(expected, match=f"code {error['code']}"):
        await meta(recorder).add(people(1), batch_key="b")


def google(recorder: Recorder, **settings: Any) -> GoogleCustomerMatchChannel:
    base = {
        "operating_account_id": "123-456-7890",
        "audience_id": "4455",
        "access_token_env": "GDM",
    }
    base.update(settings)
    factory = GoogleCustomerMatchChannelFactory(
        transport=httpx.MockTransport(recorder), clock=lambda: NOW
    )
    return factory.build("google", base, {"GDM": "ya29.token"})


async def test_google_ingest_exact_shape_with_consent() -> None:
    recorder = Recorder(httpx.Response(200, json={"requestId": "req-9"}))
    recipients = [
        Recipient(
            customer_id="a",
            email="Cloudy.SanFrancisco+shopping@gmail.com",
            phone="+1 800 555 0100",
            consent={"ad_user_data": True, "ad_personalization": False},
        ),
        Recipient(customer_id="b", email="test@example.com"),
        Recipient(customer_id="c"),
    ]
    await google(recorder, login_account_id="999-000-1111").add(recipients, batch_key="x")
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == "https://datamanager.googleapis.com/v1/audienceMembers:ingest"
    assert request.headers["Authorization"] == "Bearer ya29.token"
    assert json.loads(request.content) == {
        "destinations": [
            {
                "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
                "loginAccount": {"accountType": "GOOGLE_ADS", "accountId": "9990001111"},
                "productDestinationId": "4455",
            }
        ],
        "audienceMembers": [
            {
                "userData": {
                    "userIdentifiers": [
                        {"emailAddress": sha("cloudysanfrancisco@gmail.com")},
                        {"phoneNumber": sha("+18005550100")},
                    ]
                },
                "consent": {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_DENIED"},
            },
            {"userData": {"userIdentifiers": [{"emailAddress": TEST_EMAIL_SHA256}]}},
        ],
        "encoding": "HEX",
        "termsOfService": {"customerMatchTermsOfServiceStatus": "ACCEPTED"},
    }
    recorder.assert_no_raw_identifiers(recipients)


async def test_google_remove_shape_and_batching() -> None:
    recorder = Recorder(httpx.Response(200, json={"requestId": "r"}))
    recipients = people(25_000)
    await google(recorder).remove(recipients, batch_key="exit")
    assert {str(r.url) for r in recorder.requests} == {
        "https://datamanager.googleapis.com/v1/audienceMembers:remove"
    }
    bodies = recorder.bodies()
    assert [len(b["audienceMembers"]) for b in bodies] == [10_000, 10_000, 5_000]
    assert all("termsOfService" not in b and b["encoding"] == "HEX" for b in bodies)
    recorder.assert_no_raw_identifiers(recipients[:500])


async def test_google_errors() -> None:
    body = {"error": {"code": 400, "message": "Invalid user list", "status": "INVALID_ARGUMENT"}}
    with pytest.raises(PermanentError, match="INVALID_ARGUMENT: Invalid user list"):
        await google(Recorder(httpx.Response(400, json=body))).add(people(1), batch_key="b")
    quota = {"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}}
    response = httpx.Response(429, json=quota, headers={"Retry-After": "12"})
    with pytest.raises(RetryableError) as info:
        await google(Recorder(response)).add(people(1), batch_key="b")
    assert info.value.retry_after == 12.0


async def test_google_send_returns_request_id() -> None:
    recorder = Recorder(httpx.Response(200, json={"requestId": "req-1"}))
    delivery = Delivery("k", "g", "j", "s", Recipient(customer_id="c", email="a@b.example"))
    result = await google(recorder).send(delivery)
    assert result.provider_message_id == "req-1"
