"""API keys: write keys (ingest), site keys (on-site messages) and admin keys.

Keys are compared in constant time against every configured key (no early exit), on their
SHA-256 digests so that the comparison does not even leak a key's length. A key kind with
no configured keys accepts nothing: a deployment that forgot its admin keys is locked, not
open.

Where the key travels follows each caller's convention: Segment and RudderStack clients
send the write key as the HTTP Basic user name with an empty password; a website sends its
site key as ``X-Site-Key`` (or Basic); operators send the admin key as a Bearer token (or
Basic).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

from fastapi.security import APIKeyHeader, HTTPBasic, HTTPBearer
from starlette.requests import Request

from orchestrator.api.errors import unauthorized

#: Security schemes: they document the conventions in OpenAPI (and /docs' Authorize button);
#: the checks below read the headers themselves so that a malformed header is a plain 401.
basic_scheme = HTTPBasic(auto_error=False, description="The key as the user name; no password.")
bearer_scheme = HTTPBearer(auto_error=False, description="The admin key as a Bearer token.")
site_key_scheme = APIKeyHeader(name="X-Site-Key", auto_error=False)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class KeyRing:
    """The configured keys of one kind."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(k) for k in keys if k]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def matches(self, candidate: str | None) -> bool:
        if not candidate:
            return False
        given = _digest(candidate)
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(known, given)
        return found


def basic_user(request: Request) -> str | None:
    """The user name of an ``Authorization: Basic`` header, or None."""
    return basic_user_of(request.headers.get("authorization", ""))


def basic_user_of(authorization: str) -> str | None:
    """The user name in an ``Authorization`` header's value if it is Basic, or None."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error):
        return None
    return decoded.partition(":")[0]


def bearer_token(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def require_site_key(request: Request, keys: KeyRing) -> None:
    check_site_key(keys, request.headers.get("x-site-key"), request.headers.get("authorization"))


def check_site_key(keys: KeyRing, site_key: str | None, authorization: str | None) -> None:
    """The site key check on raw header values, for the ASGI fast path of
    ``GET /v1/site/messages`` that never builds a ``Request``."""
    if not (keys.matches(site_key) or keys.matches(basic_user_of(authorization or ""))):
        raise unauthorized("site key")


def require_admin_key(request: Request, keys: KeyRing) -> None:
    if not (keys.matches(bearer_token(request)) or keys.matches(basic_user(request))):
        raise unauthorized("admin key")
