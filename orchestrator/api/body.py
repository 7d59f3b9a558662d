"""Reading request bodies without trusting them.

Every body is bounded by ``http.max_body_bytes`` twice: the declared ``Content-Length`` is
checked before reading, and the bytes actually streamed are counted (a chunked upload has
no length to declare). Segment's clients may gzip their batches (``gzip=True``), so
``Content-Encoding: gzip``/``deflate`` are inflated incrementally with the same limit on
the inflated size: a small compressed bomb cannot grow past it.

JSON is parsed strictly: ``NaN``/``Infinity`` are refused (no database stores them as
JSON), and so are integers beyond 64 bits, strings with NUL characters or lone surrogates
(PostgreSQL rejects both) and nesting deeper than ``MAX_DEPTH``. Each refusal is a 400
naming what was wrong, never a 500 from deeper down.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

from starlette.requests import ClientDisconnect, Request

from orchestrator.api.errors import ApiError, bad_request

MAX_DEPTH = 32
#: The database's JSON encoder (and PostgreSQL's bigint-minded tools) stop at 64 bits.
MIN_INT, MAX_INT = -(2**63), 2**63 - 1
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body larger than {limit} bytes", field="body")


async def read_raw(request: Request, limit: int) -> bytes:
    """The body as sent (still encoded), at most ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise bad_request("Content-Length is not a number", "Content-Length") from None
        if size > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise bad_request("the client disconnected before sending the whole body") from None
    return b"".join(chunks)


def inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate or identity) with a limit on the output."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise ApiError(
            415, f"Content-Encoding {encoding!r} is not supported (use gzip)", field="body"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(raw, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise _too_large(limit)
        out += inflater.flush()
    except zlib.error as exc:
        raise bad_request(f"body is not valid {encoding}: {exc}", "body") from None
    if len(out) > limit:
        raise _too_large(limit)
    if not inflater.eof:
        raise bad_request(f"body is truncated {encoding}", "body")
    return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def check_json(value: Any) -> None:
    """Refuse strings and keys a database cannot store, and absurd nesting."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _BAD_TEXT.search(item):
                raise bad_request("strings must not contain NUL characters or lone surrogates")
        elif isinstance(item, int) and not MIN_INT <= item <= MAX_INT:
            raise bad_request("integers must fit in 64 bits (send larger numbers as strings)")
        elif isinstance(item, dict):
            if depth >= MAX_DEPTH:
                raise bad_request(f"JSON nested deeper than {MAX_DEPTH} levels")
            for k, v in item.items():
                if _BAD_TEXT.search(k):
                    raise bad_request("keys must not contain NUL characters or lone surrogates")
                stack.append((v, depth + 1))
        elif isinstance(item, list):
            if depth >= MAX_DEPTH:
                raise bad_request(f"JSON nested deeper than {MAX_DEPTH} levels")
            stack.extend((v, depth + 1) for v in item)


def parse_json(data: bytes) -> Any:
    if not data.strip():
        raise bad_request("the body is empty; send a JSON object", "body")
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise bad_request(f"JSON nested deeper than {MAX_DEPTH} levels", "body") from None
    except UnicodeDecodeError:
        raise bad_request("the body is not valid UTF-8", "body") from None
    except ValueError as exc:  # JSONDecodeError, huge integers, NaN/Infinity
        raise bad_request(f"the body is not valid JSON: {exc}", "body") from None
    check_json(value)
    return value


async def read_json(request: Request, limit: int) -> Any:
    """The decoded, parsed and checked JSON body."""
    raw = await read_raw(request, limit)
    return parse_json(inflate(raw, request.headers.get("content-encoding", ""), limit))


async def read_object(request: Request, limit: int) -> dict[str, Any]:
    value = await read_json(request, limit)
    if not isinstance(value, dict):
        raise bad_request("the body must be a JSON object", "body")
    return value
