"""The ``meta_audience`` adapter: Meta (Facebook/Instagram) Customer File Custom Audiences.

``POST /{version}/{audience_id}/users`` adds and ``DELETE`` on the same path removes. Rows
are hashed on our side (see ``channels.hashing``): only SHA-256 hex ever leaves, never an
address or a number. With only emails the schema is ``EMAIL_SHA256``; when phone numbers or
external ids are present it is the multi-key schema
``["EMAIL_SHA256", "PHONE_SHA256", "EXTERN_ID"]`` with empty strings for unknown values.

Meta takes at most 10,000 rows a call; larger batches are one upload *session* of several
requests (``session_id``, ``batch_seq`` from 1, ``last_batch_flag``,
``estimated_num_total``). The ``session_id`` is derived from the batch key, so a retried
batch is the same session and Meta can de-duplicate it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from channels.base import ChannelKind, Delivery, PermanentError, Recipient, SendResult
from channels.chunking import chunked
from channels.hashing import external_id_hash, meta_email_hash, meta_phone_hash
from channels.http import Clock, HttpChannelFactory, json_body, send_json, utcnow
from channels.settings import Settings

GRAPH_URL = "https://graph.facebook.com"
DEFAULT_VERSION = "v21.0"
MAX_ROWS = 10_000
MULTI_KEY_SCHEMA = ("EMAIL_SHA256", "PHONE_SHA256", "EXTERN_ID")

#: Graph API error codes that mean "slow down / try later" even on a 4xx answer:
#: 1/2 unknown/service, 4/17/32/613 rate limits, 80003 custom-audience rate limit.
TRANSIENT_CODES = frozenset({1, 2, 4, 17, 32, 613, 80003})


def session_id(batch_key: str, operation: str) -> int:
    """A positive 63-bit integer determined by the batch key and operation."""
    digest = hashlib.sha256(f"{operation}:{batch_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1) or 1


def _graph_error(response: httpx.Response) -> Mapping[str, Any]:
    body = json_body(response)
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _error_text(response: httpx.Response) -> str:
    error = _graph_error(response)
    if not error:
        return response.text[:500] or response.reason_phrase
    parts = [str(error.get("message", ""))]
    if error.get("error_user_msg"):
        parts.append(str(error["error_user_msg"]))
    parts.append(f"(code {error.get('code')}, subcode {error.get('error_subcode')})")
    return " ".join(parts)


def _transient(response: httpx.Response) -> bool:
    error = _graph_error(response)
    return bool(error.get("is_transient")) or error.get("code") in TRANSIENT_CODES


class MetaAudienceChannel:
    """One Custom Audience."""

    kind: ChannelKind = "paid"
    medium = "audience"

    def __init__(
        self,
        name: str,
        *,
        audience_id: str,
        access_token: str,
        version: str = DEFAULT_VERSION,
        default_country_code: str | None = None,
        max_rows: int = MAX_ROWS,
        client: httpx.AsyncClient,
        clock: Clock = utcnow,
    ) -> None:
        self.name = name
        self._url = f"{GRAPH_URL}/{version}/{audience_id}/users"
        self._token = access_token
        self._cc = default_country_code
        self._max_rows = max_rows
        self._client = client
        self._clock = clock

    def rows(self, recipients: Sequence[Recipient]) -> tuple[list[str], list[list[str]]]:
        """The schema and hashed rows; recipients without any usable identifier are skipped."""
        multi = any(r.phone or r.external_id for r in recipients)
        rows: list[list[str]] = []
        for r in recipients:
            email = meta_email_hash(r.email) if r.email else ""
            phone = ""
            if r.phone:
                try:
                    phone = meta_phone_hash(r.phone, self._cc)
                except ValueError:
                    phone = ""
            extern = external_id_hash(r.external_id) if r.external_id else ""
            if multi:
                if email or phone or extern:
                    rows.append([email, phone, extern])
            elif email:
                rows.append([email])
        schema = list(MULTI_KEY_SCHEMA) if multi else ["EMAIL_SHA256"]
        return schema, rows

    async def _upload(
        self, method: str, recipients: Sequence[Recipient], batch_key: str
    ) -> list[dict[str, Any]]:
        schema, rows = self.rows(recipients)
        if not rows:
            return []
        sid = session_id(batch_key, method)
        chunks = list(chunked(rows, self._max_rows))
        answers: list[dict[str, Any]] = []
        for seq, chunk in enumerate(chunks, start=1):
            body = {
                "payload": {
                    "schema": schema if len(schema) > 1 else schema[0],
                    "data": list(chunk),
                },
                "session": {
                    "session_id": sid,
                    "batch_seq": seq,
                    "last_batch_flag": seq == len(chunks),
                    "estimated_num_total": len(rows),
                },
            }
            response = await send_json(
                self._client,
                method,
                self._url,
                provider="meta",
                body=body,
                headers={"Authorization": f"Bearer {self._token}"},
                error_text=_error_text,
                is_retryable=_transient,
                clock=self._clock,
            )
            data = json_body(response)
            answers.append(data if isinstance(data, dict) else {})
        return answers

    async def add(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        await self._upload("POST", recipients, batch_key)

    async def remove(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        await self._upload("DELETE", recipients, batch_key)

    async def send(self, delivery: Delivery) -> SendResult:
        """Add one recipient; the delivery's idempotency key is the batch key."""
        answers = await self._upload("POST", [delivery.recipient], delivery.idempotency_key)
        if not answers:
            raise PermanentError(
                f"delivery {delivery.idempotency_key}: recipient has no email, phone or "
                "external id to match on"
            )
        sid = session_id(delivery.idempotency_key, "POST")
        return SendResult(provider_message_id=f"meta-session:{sid}", detail=answers[0])

    async def aclose(self) -> None:
        await self._client.aclose()


class MetaAudienceChannelFactory(HttpChannelFactory):
    """Entry point ``meta_audience``.

    Settings: ``audience_id``, ``access_token_env``, ``api_version`` (default
    ``v21.0``), ``default_country_code`` (for numbers stored without one), ``timeout``.
    """

    type_name: ClassVar[str] = "meta_audience"
    kind: ClassVar[ChannelKind | None] = "paid"
    medium: ClassVar[str | None] = "audience"
    needs_template: ClassVar[bool] = False

    default_timeout: ClassVar[float] = 30.0

    def build(
        self, name: str, settings: Mapping[str, Any], env: Mapping[str, str]
    ) -> MetaAudienceChannel:
        s = Settings(name, self.type_name, settings, env)
        audience_id = s.text("audience_id", example='audience_id = "23850000000000000"')
        token = s.secret("access_token_env", example='access_token_env = "META_ACCESS_TOKEN"')
        return MetaAudienceChannel(
            name,
            audience_id=audience_id,
            access_token=token,
            version=s.opt_text("api_version") or DEFAULT_VERSION,
            default_country_code=s.opt_text("default_country_code"),
            client=self.client(s),
            clock=self._clock,
        )
