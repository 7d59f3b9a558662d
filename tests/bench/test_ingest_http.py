"""The site-messages load generators report what the docs claim: the open loop counts
latency from when a request was due (so an overloaded server shows as queueing, not as a
lower rate), and wrk's output is read in the right units."""

from __future__ import annotations

import asyncio

from bench.ingest_http import _wrk_ms, site_open

BODY = b'{"messages":[{"delivery_key":"a"},{"delivery_key":"b"}]}'


async def slow_server(delay: float) -> tuple[asyncio.Server, str]:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 answering every GET after ``delay``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(delay)
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
                writer.write(head + BODY)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def test_an_open_loop_over_capacity_shows_the_queue_in_its_latency() -> None:
    server, base = await slow_server(0.02)
    async with server:
        # 2 connections x 50 answers/s = 100/s of capacity, asked for 200/s during 1 s:
        # the last requests were due ~0.5 s before a connection was free for them.
        over = await site_open(base, rate=200, seconds=1, connections=2, customers=10)
        under = await site_open(base, rate=50, seconds=1, connections=10, customers=10)
    assert over["errors"] == 0 and under["errors"] == 0
    assert over["p99_ms"] > 300
    assert under["p50_ms"] >= 20
    assert under["requests_per_s"] > 25


def test_wrk_times_are_read_in_milliseconds() -> None:
    assert _wrk_ms("812.00us") == 0.81
    assert _wrk_ms("10.43ms") == 10.43
    assert _wrk_ms("1.02s") == 1020.0
