"""The conformance kit: what every parcours channel adapter must do, as runnable checks.

An adapter package describes its adapter once as an :class:`AdapterCase` and runs the
checks, e.g. with pytest::

    @pytest.mark.parametrize("check", sorted(CHECKS))
    async def test_conformance(check):
        await CHECKS[check](my_case())

or all at once with ``await run_conformance(my_case())``. The case says how to build the
adapter wired to a :class:`ProviderDouble`; the checks then make the provider succeed,
fail and time out, and look at what the adapter did. A failed check raises
:class:`ConformanceFailure` with a message meant for the adapter's author.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from channels.base import (
    MEDIUM_EVENTS,
    AudienceChannel,
    Channel,
    ChannelFactory,
    ConfigurationError,
    Delivery,
    PermanentError,
    Recipient,
    RetryableError,
    SendResult,
)
from channels.testing.double import Exchange, OkResponder, Outcome, ProviderDouble

KeyOf = Callable[[Exchange, Delivery], str | None]


class ConformanceFailure(AssertionError):
    """An adapter does not honour the channel protocol."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ConformanceFailure(message)


def sample_delivery() -> Delivery:
    """A delivery with every part an adapter might need."""
    return Delivery(
        idempotency_key="kit-enr-42.step-mail.visit-1",
        channel="kit",
        journey="kit-journey",
        step="kit-step",
        recipient=Recipient(
            customer_id="kit-customer-1",
            email="kit.person@kit-leak.example",
            phone="+1 555 010 0001",
            external_id="kit-ext-000001",
            traits={"first_name": "Kit"},
            consent={"ad_user_data": True, "ad_personalization": True},
        ),
        content={
            "subject": "Hello Kit",
            "text": "Hello Kit",
            "html": "<p>Hello Kit</p>",
            "slot": "banner",
            "body": '{"hello": "kit"}',
        },
        unsubscribe_url="https://t.example/u/kit-token",
    )


def key_in_request(exchange: Exchange, delivery: Delivery) -> str | None:
    """The idempotency key when it appears verbatim in the request (headers or body)."""
    return delivery.idempotency_key if delivery.idempotency_key in exchange.text() else None


def body_digest(exchange: Exchange, delivery: Delivery) -> str | None:
    """For providers without an idempotency field: identical attempts send identical bodies."""
    return hashlib.sha256(exchange.body).hexdigest()


@dataclass
class AdapterCase:
    """How to build and exercise one adapter."""

    name: str
    factory: ChannelFactory
    settings: Mapping[str, Any]
    env: Mapping[str, str]
    #: Build the adapter wired to the provider double.
    connect: Callable[[ProviderDouble], Channel]
    #: Settings whose absence must be a ConfigurationError naming them.
    required_settings: Sequence[str] = ()
    #: Whether the provider can fail at all (the site adapter cannot).
    can_fail: bool = True
    #: Whether a retryable answer's Retry-After reaches ``RetryableError.retry_after``.
    honours_retry_after: bool = True
    #: How the idempotency key shows in a request; must be equal on every attempt.
    key_of: KeyOf = key_in_request
    #: What the double answers on success (the provider's documented success response).
    ok_response: OkResponder | None = None
    delivery: Delivery = field(default_factory=sample_delivery)
    #: Rows per request the platform accepts (audience adapters).
    batch_limit: int = 10_000

    def double(self) -> ProviderDouble:
        return ProviderDouble(self.ok_response)


async def check_declares_facts(case: AdapterCase) -> None:
    f = case.factory
    _expect(isinstance(f.type_name, str) and bool(f.type_name), "type_name must be a name")
    _expect(f.kind in ("owned", "paid", None), f"kind must be owned/paid/None, got {f.kind!r}")
    _expect(
        f.medium is None or f.medium in MEDIUM_EVENTS,
        f"medium must be one of {sorted(MEDIUM_EVENTS)} (or None), got {f.medium!r}",
    )
    _expect(isinstance(f.needs_template, bool), "needs_template must be a bool")
    channel = f.build(case.name, case.settings, case.env)
    try:
        _expect(isinstance(channel, Channel), "build() must return a Channel")
        _expect(channel.name == case.name, "the channel must carry the configured name")
        if f.kind is not None:
            _expect(channel.kind == f.kind, "instance kind differs from the factory's")
        if f.medium is not None:
            _expect(channel.medium == f.medium, "instance medium differs from the factory's")
    finally:
        await channel.aclose()


async def check_missing_settings(case: AdapterCase) -> None:
    for key in case.required_settings:
        partial = {k: v for k, v in case.settings.items() if k != key}
        try:
            channel = case.factory.build(case.name, partial, case.env)
        except ConfigurationError as exc:
            _expect(key in str(exc), f"ConfigurationError for missing {key!r} must name it: {exc}")
            continue
        await channel.aclose()
        raise ConformanceFailure(f"build without {key!r} must raise ConfigurationError")
    if case.env:
        try:
            channel = case.factory.build(case.name, case.settings, {})
        except ConfigurationError:
            return
        await channel.aclose()
        raise ConformanceFailure("build without its secrets in env must raise ConfigurationError")


async def check_send_returns_result(case: AdapterCase) -> None:
    double = case.double()
    channel = case.connect(double)
    try:
        result = await channel.send(case.delivery)
    finally:
        await channel.aclose()
    _expect(isinstance(result, SendResult), f"send() must return SendResult, got {result!r}")


async def check_same_key_on_every_attempt(case: AdapterCase) -> None:
    if not case.can_fail:
        return
    double = case.double()
    double.script(Outcome.RETRYABLE, Outcome.TIMEOUT)
    channel = case.connect(double)
    try:
        for _ in range(2):
            try:
                await channel.send(case.delivery)
            except RetryableError:
                continue
            raise ConformanceFailure("a failing provider must make send() raise RetryableError")
        await channel.send(case.delivery)
    finally:
        await channel.aclose()
    keys = [case.key_of(ex, case.delivery) for ex in double.exchanges]
    _expect(len(keys) >= 3, f"expected a request per attempt, saw {len(keys)}")
    _expect(keys[0] is not None, "the idempotency key must travel with the request")
    _expect(len(set(keys)) == 1, f"every attempt must carry the same key, saw {keys}")


async def _expect_error(
    case: AdapterCase, outcome: Outcome, error: type[Exception]
) -> BaseException:
    double = case.double()
    double.script(outcome)
    channel = case.connect(double)
    try:
        await channel.send(case.delivery)
    except error as exc:
        return exc
    except Exception as exc:
        raise ConformanceFailure(
            f"provider outcome {outcome.value} must raise {error.__name__}, got {exc!r}"
        ) from exc
    finally:
        await channel.aclose()
    raise ConformanceFailure(f"provider outcome {outcome.value} must raise {error.__name__}")


async def check_retryable_mapping(case: AdapterCase) -> None:
    if not case.can_fail:
        return
    exc = await _expect_error(case, Outcome.RETRYABLE, RetryableError)
    if case.honours_retry_after:
        seen = getattr(exc, "retry_after", None)
        _expect(seen == 7.0, f"Retry-After: 7 must become retry_after=7.0, got {seen!r}")
    await _expect_error(case, Outcome.TIMEOUT, RetryableError)


async def check_permanent_mapping(case: AdapterCase) -> None:
    if case.can_fail:
        await _expect_error(case, Outcome.PERMANENT, PermanentError)


async def check_aclose(case: AdapterCase) -> None:
    channel = case.connect(case.double())
    await channel.aclose()
    await channel.aclose()


def kit_recipients(count: int) -> list[Recipient]:
    """Recipients with raw identifiers that are easy to spot if they ever leak."""
    return [
        Recipient(
            customer_id=f"kit-c{i}",
            email=f"Kit.Person{i}@kit-leak.example",
            phone=f"+1 555 {i // 10000:03d} {i % 10000:04d}",
            external_id=f"kit-ext-{i:06d}",
            consent={"ad_user_data": True, "ad_personalization": i % 2 == 0},
        )
        for i in range(count)
    ]


def _leaks(exchanges: Sequence[Exchange], recipients: Sequence[Recipient]) -> list[str]:
    found = []
    blob = "\n".join(ex.text() for ex in exchanges)
    if "kit-leak" in blob.lower():
        found.append("a raw email address")
    if "kit-ext-" in blob:
        found.append("a raw external id")
    for r in recipients[:: max(1, len(recipients) // 200)]:
        if r.phone is None:
            continue
        digits = "".join(ch for ch in r.phone if ch.isdigit())
        if digits in blob or r.phone in blob:
            found.append(f"a raw phone number ({r.phone})")
            break
    return found


async def check_audience_batches_without_leaks(case: AdapterCase) -> None:
    double = case.double()
    channel = case.connect(double)
    try:
        if not isinstance(channel, AudienceChannel) or channel.kind != "paid":
            return
        count = case.batch_limit * 2 + case.batch_limit // 2
        recipients = kit_recipients(count)
        await channel.add(recipients, batch_key="kit-batch-1")
        adds = len(double.exchanges)
        expected = math.ceil(count / case.batch_limit)
        _expect(adds == expected, f"{count} recipients must take {expected} requests, took {adds}")
        await channel.remove(recipients[:3], batch_key="kit-batch-2")
        _expect(len(double.exchanges) == adds + 1, "remove() must reach the provider")
        await channel.send(case.delivery)
        leaks = _leaks(double.exchanges, [*recipients, case.delivery.recipient])
        _expect(not leaks, f"only hashes may reach an ad platform; found {', '.join(leaks)}")
    finally:
        await channel.aclose()


CHECKS: Mapping[str, Callable[[AdapterCase], Awaitable[None]]] = {
    "declares_facts": check_declares_facts,
    "missing_settings": check_missing_settings,
    "send_returns_result": check_send_returns_result,
    "same_key_on_every_attempt": check_same_key_on_every_attempt,
    "retryable_mapping": check_retryable_mapping,
    "permanent_mapping": check_permanent_mapping,
    "aclose": check_aclose,
    "audience_batches_without_leaks": check_audience_batches_without_leaks,
}


async def run_conformance(case: AdapterCase) -> None:
    """Run every check; the first failure raises ``ConformanceFailure``."""
    for check in CHECKS.values():
        await check(case)


__all__ = [
    "CHECKS",
    "AdapterCase",
    "ConformanceFailure",
    "body_digest",
    "key_in_request",
    "kit_recipients",
    "run_conformance",
    "sample_delivery",
]
