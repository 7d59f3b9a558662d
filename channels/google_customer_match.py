"""The ``google_customer_match`` adapter: Customer Match through the Data Manager API.

``POST https://datamanager.googleapis.com/v1/audienceMembers:ingest`` adds and
``audienceMembers:remove`` removes, at most 10,000 audience members per request. Each
member's ``userData.userIdentifiers`` carry SHA-256 hex (``encoding: HEX``) of the email and
phone normalised as Google's "Format user data" page says; each member carries its own
``consent`` (``adUserData``/``adPersonalization``) from the recipient's recorded consent, so
a customer who refused ad personalisation is uploaded as ``CONSENT_DENIED`` rather than
silently treated as granted. Ingest requests state that the Customer Match terms of service
were accepted (``termsOfService``), which Google requires for user data.

Authentication is an OAuth 2.0 access token (scope ``.../auth/datamanager``) read from the
environment; refreshing it is the deployment's job (e.g. a sidecar or workload identity).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from channels.base import ChannelKind, Delivery, PermanentError, Recipient, SendResult
from channels.chunking import chunked
from channels.hashing import google_email_hash, google_phone_hash
from channels.http import Clock, HttpChannelFactory, json_body, send_json, utcnow
from channels.settings import Settings

API_ROOT = "https://datamanager.googleapis.com/v1"
MAX_MEMBERS = 10_000
ACCOUNT_TYPES = ("GOOGLE_ADS", "DISPLAY_VIDEO_ADVERTISER", "DISPLAY_VIDEO_PARTNER", "DATA_PARTNER")


def _error_text(response: httpx.Response) -> str:
    body = json_body(response)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"{error.get('status', '')}: {error.get('message', '')}".strip(": ")
    return response.text[:500] or response.reason_phrase


def _consent_status(value: bool | None) -> str | None:
    if value is None:
        return None
    return "CONSENT_GRANTED" if value else "CONSENT_DENIED"


class GoogleCustomerMatchChannel:
    """One Customer Match user list in one operating account."""

    kind: ChannelKind = "paid"
    medium = "audience"

    def __init__(
        self,
        name: str,
        *,
        access_token: str,
        operating_account_id: str,
        audience_id: str,
        account_type: str = "GOOGLE_ADS",
        login_account_id: str | None = None,
        login_account_type: str | None = None,
        default_country_code: str | None = None,
        max_members: int = MAX_MEMBERS,
        client: httpx.AsyncClient,
        clock: Clock = utcnow,
    ) -> None:
        self.name = name
        self._token = access_token
        destination: dict[str, Any] = {
            "operatingAccount": {"accountType": account_type, "accountId": operating_account_id},
            "productDestinationId": audience_id,
        }
        if login_account_id:
            destination["loginAccount"] = {
                "accountType": login_account_type or account_type,
                "accountId": login_account_id,
            }
        self._destination = destination
        self._cc = default_country_code
        self._max = max_members
        self._client = client
        self._clock = clock

    def member(self, recipient: Recipient) -> dict[str, Any] | None:
        """One ``AudienceMember`` with hashed identifiers and consent, or None if unmatchable."""
        identifiers: list[dict[str, str]] = []
        if recipient.email:
            identifiers.append({"emailAddress": google_email_hash(recipient.email)})
        if recipient.phone:
            with contextlib.suppress(ValueError):
                identifiers.append({"phoneNumber": google_phone_hash(recipient.phone, self._cc)})
        if not identifiers:
            return None
        member: dict[str, Any] = {"userData": {"userIdentifiers": identifiers}}
        consent = {
            key: status
            for key, status in (
                ("adUserData", _consent_status(recipient.consent.get("ad_user_data"))),
                ("adPersonalization", _consent_status(recipient.consent.get("ad_personalization"))),
            )
            if status is not None
        }
        if consent:
            member["consent"] = consent
        return member

    async def _call(self, operation: str, recipients: Sequence[Recipient]) -> list[Any]:
        members = [m for m in (self.member(r) for r in recipients) if m is not None]
        answers: list[Any] = []
        for chunk in chunked(members, self._max):
            body: dict[str, Any] = {
                "destinations": [self._destination],
                "audienceMembers": list(chunk),
                "encoding": "HEX",
            }
            if operation == "ingest":
                body["termsOfService"] = {"customerMatchTermsOfServiceStatus": "ACCEPTED"}
            response = await send_json(
                self._client,
                "POST",
                f"{API_ROOT}/audienceMembers:{operation}",
                provider="google data manager",
                body=body,
                headers={"Authorization": f"Bearer {self._token}"},
                error_text=_error_text,
                clock=self._clock,
            )
            answers.append(json_body(response))
        return answers

    async def add(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        await self._call("ingest", recipients)

    async def remove(self, recipients: Sequence[Recipient], *, batch_key: str) -> None:
        await self._call("remove", recipients)

    async def send(self, delivery: Delivery) -> SendResult:
        answers = await self._call("ingest", [delivery.recipient])
        if not answers:
            raise PermanentError(
                f"delivery {delivery.idempotency_key}: recipient has no email or phone to match"
            )
        first = answers[0] if isinstance(answers[0], dict) else {}
        return SendResult(provider_message_id=first.get("requestId"), detail=first)

    async def aclose(self) -> None:
        await self._client.aclose()


class GoogleCustomerMatchChannelFactory(HttpChannelFactory):
    """Entry point ``google_customer_match``.

    Settings: ``operating_account_id`` (e.g. the Google Ads customer id, digits only),
    ``audience_id`` (the user list id), ``account_type`` (default ``GOOGLE_ADS``),
    optional ``login_account_id``/``login_account_type`` (a manager account),
    ``access_token_env``, ``default_country_code``, ``timeout``.
    """

    type_name: ClassVar[str] = "google_customer_match"
    kind: ClassVar[ChannelKind | None] = "paid"
    medium: ClassVar[str | None] = "audience"
    needs_template: ClassVar[bool] = False

    default_timeout: ClassVar[float] = 30.0

    def build(
        self, name: str, settings: Mapping[str, Any], env: Mapping[str, str]
    ) -> GoogleCustomerMatchChannel:
        s = Settings(name, self.type_name, settings, env)
        account = s.text("operating_account_id", example='operating_account_id = "1234567890"')
        audience = s.text("audience_id", example='audience_id = "9876543210"')
        token = s.secret("access_token_env", example='access_token_env = "GOOGLE_DM_TOKEN"')
        account_type = s.choice("account_type", ACCOUNT_TYPES, "GOOGLE_ADS")
        login_type = s.choice("login_account_type", ACCOUNT_TYPES, account_type)
        return GoogleCustomerMatchChannel(
            name,
            access_token=token,
            operating_account_id=account.replace("-", ""),
            audience_id=audience,
            account_type=account_type,
            login_account_id=(s.opt_text("login_account_id") or "").replace("-", "") or None,
            login_account_type=login_type,
            default_country_code=s.opt_text("default_country_code"),
            client=self.client(s),
            clock=self._clock,
        )
