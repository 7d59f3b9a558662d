"""One place where provider HTTP responses become ``RetryableError`` or ``PermanentError``.

Every HTTP adapter sends through :func:`send_json` so the mapping is identical across
providers: timeouts, connection failures, 429 and 5xx are retryable (honouring
``Retry-After`` in seconds or as an HTTP-date); every other non-2xx is permanent. The
provider's own error text goes into the message because that is what an operator needs to
read on a dead delivery. Clients take an injected ``transport`` (httpx's seam), which is
how tests replace the provider with ``httpx.MockTransport``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from channels.base import PermanentError, RetryableError
from channels.transport import AiohttpTransport

if TYPE_CHECKING:
    from channels.settings import Settings

DEFAULT_TIMEOUT = 10.0
USER_AGENT = "parcours (+https://github.com/parcours)"

Clock = Callable[[], datetime]
ErrorText = Callable[[httpx.Response], str]


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_client(
    *,
    transport: httpx.AsyncBaseTransport | None,
    timeout: float,
    headers: Mapping[str, str] | None = None,
) -> httpx.AsyncClient:
    """An ``AsyncClient`` with our user agent, a timeout and an optional injected transport
    (the default sends through aiohttp: see ``channels.transport``)."""
    base = {"User-Agent": USER_AGENT}
    base.update(headers or {})
    return httpx.AsyncClient(
        transport=transport if transport is not None else AiohttpTransport(),
        timeout=httpx.Timeout(timeout),
        headers=base,
        # Provider endpoints are configured explicitly; no proxy or .netrc lookups.
        trust_env=False,
    )


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def default_error_text(response: httpx.Response) -> str:
    """The response body, shortened; providers mostly explain themselves in it."""
    text = response.text.strip()
    return text[:500] if text else response.reason_phrase


def json_body(response: httpx.Response) -> Any:
    """The decoded JSON body or ``None`` when there is none or it is not JSON."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


async def send_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    body: Mapping[str, Any] | None = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    error_text: ErrorText = default_error_text,
    is_retryable: Callable[[httpx.Response], bool] | None = None,
    clock: Clock = utcnow,
) -> httpx.Response:
    """Send a request; return a 2xx response or raise the mapped channel error.

    ``content`` wins over ``body`` so callers that sign raw bytes send exactly those bytes.
    ``is_retryable`` lets an adapter mark provider-specific transient 4xx answers (Meta's
    ``is_transient``, Postmark's rate-limit code) as retryable.
    """
    all_headers = {"Content-Type": "application/json", "Accept": "application/json"}
    all_headers.update(headers or {})
    raw = content if content is not None else json.dumps(body or {}).encode()
    try:
        response = await client.request(method, url, content=raw, headers=all_headers)
    except httpx.TimeoutException as exc:
        raise RetryableError(f"{provider}: request timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise RetryableError(
            f"{provider}: connection failed ({type(exc).__name__}: {exc})"
        ) from exc
    status = response.status_code
    if 200 <= status < 300:
        return response
    detail = error_text(response)
    message = f"{provider}: HTTP {status}: {detail}"
    if status == 429 or status >= 500 or (is_retryable is not None and is_retryable(response)):
        retry_after = parse_retry_after(response.headers.get("retry-after"), clock())
        raise RetryableError(message, retry_after=retry_after)
    raise PermanentError(message)


class HttpChannelFactory:
    """What the HTTP adapters' factories share: an injectable transport (``MockTransport``
    in tests, aiohttp by default) and clock, and one way to build the client."""

    default_timeout: ClassVar[float] = 10.0

    def __init__(
        self, *, transport: httpx.AsyncBaseTransport | None = None, clock: Clock = utcnow
    ) -> None:
        self._transport = transport
        self._clock = clock

    def client(self, s: Settings) -> httpx.AsyncClient:
        """The adapter's client, with the ``timeout`` setting (seconds) or the default."""
        return make_client(
            transport=self._transport, timeout=s.number("timeout", self.default_timeout)
        )
