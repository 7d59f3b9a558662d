"""HTTP API throughput: events/s accepted by one uvicorn process through ``POST /v1/batch``
(target 5,000/s), and ``GET /v1/site/messages`` latency at 100 concurrent clients (target
p99 < 10 ms).

The server runs in its own process (``python -m bench.ingest_http serve ...``) on a fresh
SQLite file, so the load generator (httpx, asyncio, in this process) does not share its
GIL. Latencies are measured by the client and so include the client's own overhead.

    python -m bench.ingest_http [--seconds 5] [--batch 100] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
WRITE = ("bench-write-key", "")
SITE = {"X-Site-Key": "bench-site-key"}


def _settings(db: Path) -> Any:
    from orchestrator.config import load_settings

    return load_settings(
        ROOT / "config/parcours.toml",
        database_url=f"sqlite:///{db}",
        journeys=[str(ROOT / "journeys/examples")],
        templates=str(ROOT / "journeys/examples/templates"),
        keys={
            "write_keys": ["bench-write-key"],
            "site_keys": ["bench-site-key"],
            "admin_keys": ["bench-admin-key"],
            "signing_key": "bench-signing-key-0123456789",
        },
    )


def serve(db: Path, port: int) -> None:
    import structlog
    import uvicorn

    from orchestrator.api.app import create_app
    from orchestrator.db.connect import open_engine
    from orchestrator.db.migrate import upgrade
    from orchestrator.runtime import build_runtime

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    settings = _settings(db)
    engine = open_engine(settings.database_url)
    upgrade(engine)
    runtime = build_runtime(settings, db=engine)
    uvicorn.run(
        create_app(runtime), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


def seed_site_messages(db: Path, customers: int) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from orchestrator.db import tables as t
    from orchestrator.db.connect import open_engine

    engine = open_engine(f"sqlite:///{db}")
    now = datetime.now(UTC)
    rows = [
        {
            "delivery_key": f"d-{i}-{k}",
            "customer_id": f"c{i}",
            "channel": "site",
            "slot": "banner",
            "html": "<div>Your cart is waiting</div>",
            "created_at": now,
        }
        for i in range(customers)
        for k in range(2)
    ]
    with engine.begin() as conn:
        conn.execute(insert(t.site_messages), rows)
    engine.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_ready(base: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("server did not start")


async def ingest(base: str, seconds: float, batch: int, concurrency: int) -> dict[str, Any]:
    sent = 0
    errors = 0
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent, errors
        while time.perf_counter() < stop:
            n = next(counter)
            body = {
                "batch": [
                    {
                        "type": "track",
                        "userId": f"u{(n * batch + i) % 50_000}",
                        "event": "product_viewed",
                        "messageId": f"b{n}-{i}",
                        "properties": {"sku": f"sku-{i}", "price": 19.99},
                    }
                    for i in range(batch)
                ]
            }
            t0 = time.perf_counter()
            r = await client.post(f"{base}/v1/batch", json=body, auth=WRITE)
            latencies.append(time.perf_counter() - t0)
            if r.status_code == 200:
                sent += batch
            else:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {
        "case": f"POST /v1/batch ({batch} events, {concurrency} connections)",
        "events_per_s": round(sent / elapsed),
        "requests": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(statistics.quantiles(latencies, n=100)[98] * 1000, 2),
        "errors": errors,
    }


async def _raw_client(host: str, port: int) -> tuple[Any, Any]:
    return await asyncio.open_connection(host, port)


async def _get(reader: Any, writer: Any, target: str) -> tuple[int, bytes]:
    """One keep-alive HTTP/1.1 GET on an open connection. A minimal client on purpose:
    httpx's pool costs more than the server at 100 connections, and the figure we want is
    the server's."""
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: bench\r\nX-Site-Key: {SITE['X-Site-Key']}\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def site(base: str, seconds: float, concurrency: int, customers: int) -> dict[str, Any]:
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = 0

    async def run(k: int, stop: float, ids: list[int], record: bool) -> None:
        nonlocal errors
        reader, writer = await _raw_client(host, int(port))
        try:
            i = 0
            while (time.perf_counter() < stop) if stop else i < len(ids):
                uid = ids[i % len(ids)]
                i += 1
                t0 = time.perf_counter()
                status, body = await _get(reader, writer, f"/v1/site/messages?userId=c{uid}")
                if record:
                    latencies.append(time.perf_counter() - t0)
                if status != 200 or body.count(b"delivery_key") != 2:
                    errors += 1
        finally:
            writer.close()

    # A warm-up pass writes today's impressions (one write per customer and day); the timed
    # run is the steady state of a shop's pages: reads.
    w0 = time.perf_counter()
    await asyncio.gather(
        *(run(k, 0.0, list(range(k, customers, concurrency)), False) for k in range(concurrency))
    )
    warmup = time.perf_counter() - w0
    stop = time.perf_counter() + seconds
    t0 = time.perf_counter()
    await asyncio.gather(
        *(
            run(k, stop, [(k * 7919 + j * 104729) % customers for j in range(997)], True)
            for k in range(concurrency)
        )
    )
    elapsed = time.perf_counter() - t0
    return {
        "case": f"GET /v1/site/messages ({concurrency} concurrent clients)",
        "first_views_per_s": round(customers / warmup),
        "requests_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(statistics.quantiles(latencies, n=100)[98] * 1000, 2),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "serve"])
    parser.add_argument("--db", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--site-concurrency", type=int, default=100)
    parser.add_argument("--customers", type=int, default=1000)
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.db, args.port)
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.ingest_http",
                "serve",
                "--db",
                str(db),
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            asyncio.run(_wait_ready(base))
            seed_site_messages(db, args.customers)
            rows = [
                asyncio.run(ingest(base, args.seconds, args.batch, args.concurrency)),
                asyncio.run(site(base, args.seconds, args.site_concurrency, args.customers)),
            ]
        finally:
            server.terminate()
            server.wait(10)
    meta = {
        "command": "python -m bench.ingest_http " + " ".join(sys.argv[1:]),
        "server": "one uvicorn process, SQLite WAL file, default config",
        "seconds": args.seconds,
        "targets": {"events_per_s": 5000, "site_p99_ms": 10},
    }
    try:
        from bench.report import emit
    except ImportError:  # pragma: no cover - report helper not present
        import json

        print(json.dumps({"name": "ingest_http", "rows": rows, "meta": meta}, indent=2))
        return
    emit("ingest_http", rows, meta)


if __name__ == "__main__":
    main()
