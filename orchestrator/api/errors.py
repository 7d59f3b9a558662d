"""One error shape for every endpoint, compatible with Segment's clients.

analytics-python reads ``code`` and ``message`` from a non-2xx JSON body to build its
``APIError``, so those two are top-level; ``field`` names the offending input (``batch[3].
userId``) so a developer can fix a payload without guessing. FastAPI's own 422 for bad
query or path parameters becomes a 400 of the same shape: one convention, not two.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger("parcours.api")

CODES: Mapping[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}


class ApiError(Exception):
    """An answer to the client that is not a success; raised anywhere in a request."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.code = code or CODES.get(status, "error")
        self.headers = dict(headers or {})


def bad_request(message: str, field: str | None = None) -> ApiError:
    return ApiError(400, message, field=field)


def unauthorized(what: str) -> ApiError:
    return ApiError(
        401, f"missing or unknown {what}", headers={"WWW-Authenticate": 'Basic realm="parcours"'}
    )


def error_body(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"success": False, "code": code, "message": message}
    if field is not None:
        body["field"] = field
    return body


def field_path(loc: Sequence[str | int], prefix: str = "") -> str:
    """``("batch", 3, "userId")`` -> ``batch[3].userId``."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(
        error_body(exc.status, exc.code, exc.message, exc.field),
        status_code=exc.status,
        headers=exc.headers,
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [p for p in first.get("loc", ()) if p not in ("query", "path", "header", "body")]
    field = field_path(loc) or None
    message = str(first.get("msg", "invalid request"))
    return JSONResponse(
        error_body(400, "invalid_request", f"{field}: {message}" if field else message, field),
        status_code=400,
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = CODES.get(exc.status_code, "error")
    return JSONResponse(
        error_body(exc.status_code, code, str(exc.detail), None),
        status_code=exc.status_code,
        headers=dict(exc.headers or {}),
    )


class _Every:
    """Lets a repeated warning through at most once per ``seconds``, counting the rest:
    during an outage every request fails the same way, and one line per request would
    bury the log."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.last = -float("inf")
        self.suppressed = 0

    def due(self, now: float) -> int | None:
        """The number suppressed since the last line, or None while still quiet."""
        if now - self.last < self.seconds:
            self.suppressed += 1
            return None
        self.last, count, self.suppressed = now, self.suppressed, 0
        return count


_outage_log = _Every(10.0)


def database_busy(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The answer to a database error: (status, body, headers).

    SQLite waits busy_timeout for the write lock and PostgreSQL may drop a connection:
    both are worth a retry, which Segment's clients do on 503 with Retry-After."""
    suppressed = _outage_log.due(time.monotonic())
    if suppressed is not None:
        log.warning(
            "database unavailable: answering 503 with Retry-After",
            error=(str(exc).splitlines() or [""])[0][:200],
            similar_since_last=suppressed,
        )
    body = error_body(503, "unavailable", "the database is busy or unreachable; retry", None)
    return 503, body, {"Retry-After": "1"}


async def _database_busy(_: Request, exc: Exception) -> JSONResponse:
    status, body, headers = database_busy(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_busy)
    app.add_exception_handler(InterfaceError, _database_busy)  # a connection lost mid-use


def from_validation(exc: Any, prefix: str = "") -> ApiError:
    """A pydantic ``ValidationError`` as a 400 naming its first field."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid"}
    loc = [p for p in first.get("loc", ()) if isinstance(p, str | int)]
    field = field_path(loc, prefix) or prefix or "body"
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return bad_request(f"{field}: {message}", field)
