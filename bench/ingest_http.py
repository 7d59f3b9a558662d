"""HTTP API throughput: events/s accepted by one uvicorn process through ``POST /v1/batch``
(target 5,000/s), and ``GET /v1/site/messages`` latency at 100 concurrent clients (target
p99 < 10 ms).

The server is the daemon's own HTTP server (``parcours run --role api``: the same uvicorn
configuration, HTTP parser and lifespan) in its own process on a fresh SQLite file
(``python -m bench.ingest_http serve ...``), so the load generator does not share its GIL;
both share the machine's cores. Site messages are measured three ways, each after a
warm-up pass that takes today's impressions (the steady state of a shop's pages: reads):

* closed loop with ``wrk`` when it is installed (C, little CPU; ``apt-get install wrk``):
  100 connections each sending the next request as soon as the last is answered. Its p99
  is about 100 / throughput, so it measures throughput more than latency;
* closed loop with the Python client below (fallback without wrk, and a cross-check);
* open loop at stated rates (``--site-rates``): requests are due at fixed times over 100
  connections whatever the server does, and latency counts from the time a request was
  due, so waiting for a free connection counts too (no coordinated omission). This is what
  page renders look like: a rate, not clients that wait for each other.

    python -m bench.ingest_http [--seconds 5] [--batch 100] [--concurrency 8]
    python -m bench.ingest_http --site-only --seconds 5 --site-rates 1000 2000 4000 6000
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import shutil
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


def _settings(db: Path, port: int = 8080) -> Any:
    from orchestrator.config import load_settings

    return load_settings(
        ROOT / "config/parcours.toml",
        database_url=f"sqlite:///{db}",
        journeys=[str(ROOT / "journeys/examples")],
        templates=str(ROOT / "journeys/examples/templates"),
        http={"host": "127.0.0.1", "port": port, "base_url": f"http://127.0.0.1:{port}"},
        keys={
            "write_keys": ["bench-write-key"],
            "site_keys": ["bench-site-key"],
            "admin_keys": ["bench-admin-key"],
            "signing_key": "bench-signing-key-0123456789",
        },
    )


def serve(db: Path, port: int) -> None:
    """The daemon with ``--role api``, as ``parcours run --role api`` starts it."""
    import structlog

    from orchestrator.daemon import run
    from orchestrator.db.connect import open_engine
    from orchestrator.db.migrate import upgrade
    from orchestrator.runtime import build_runtime

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    settings = _settings(db, port)
    engine = open_engine(settings.database_url)
    upgrade(engine)
    run(build_runtime(settings, db=engine), "api")


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


def _user(n: int, customers: int) -> int:
    """The n-th request's customer: spread over all customers, every one of them seen."""
    return (n * 7919) % customers


def _summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(statistics.quantiles(ordered, n=100)[98] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def warm_up(base: str, concurrency: int, customers: int) -> dict[str, Any]:
    """Every customer's first view of the day (each takes its impressions), then a pause
    for the impression buffer to write them."""
    host, port = base.removeprefix("http://").split(":")
    errors = 0

    async def run(ids: list[int]) -> None:
        nonlocal errors
        reader, writer = await _raw_client(host, int(port))
        try:
            for uid in ids:
                status, body = await _get(reader, writer, f"/v1/site/messages?userId=c{uid}")
                errors += status != 200 or body.count(b"delivery_key") != 2
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(run(list(range(k, customers, concurrency))) for k in range(concurrency)))
    elapsed = time.perf_counter() - t0
    await asyncio.sleep(1.0)
    return {
        "case": f"GET /v1/site/messages, first view of the day ({concurrency} clients)",
        "mode": "closed, Python",
        "requests_per_s": round(customers / elapsed),
        "errors": errors,
    }


async def site_closed(
    base: str, seconds: float, concurrency: int, customers: int
) -> dict[str, Any]:
    """Closed loop, Python client in this process: each of ``concurrency`` connections sends
    its next request when the last is answered."""
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def run(k: int) -> None:
        nonlocal errors
        reader, writer = await _raw_client(host, int(port))
        try:
            n = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                status, body = await _get(
                    reader, writer, f"/v1/site/messages?userId=c{_user(n, customers)}"
                )
                latencies.append(time.perf_counter() - t0)
                errors += status != 200 or body.count(b"delivery_key") != 2
                n += concurrency
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(run(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return {
        "case": f"GET /v1/site/messages, {concurrency} connections",
        "mode": "closed, Python",
        "requests_per_s": round(len(latencies) / elapsed),
        **_summary(latencies),
        "errors": errors,
    }


async def site_open(
    base: str, rate: float, seconds: float, connections: int, customers: int
) -> dict[str, Any]:
    """Open loop: request n is due at ``start + n / rate``, sent on the first free one of
    ``connections`` keep-alive connections; its latency is answer time minus due time."""
    host, port = base.removeprefix("http://").split(":")
    conns = [await _raw_client(host, int(port)) for _ in range(connections)]
    queue: asyncio.Queue[tuple[float, int] | None] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)

    async def worker(reader: Any, writer: Any) -> None:
        nonlocal errors
        while (item := await queue.get()) is not None:
            due, uid = item
            status, body = await _get(reader, writer, f"/v1/site/messages?userId=c{uid}")
            latencies.append(time.perf_counter() - due)
            errors += status != 200 or body.count(b"delivery_key") != 2

    async def schedule() -> None:
        start = time.perf_counter()
        n = 0
        while n < total:
            due_now = min(total, int((time.perf_counter() - start) * rate) + 1)
            while n < due_now:
                queue.put_nowait((start + n / rate, _user(n, customers)))
                n += 1
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        for _ in conns:
            queue.put_nowait(None)

    t0 = time.perf_counter()
    await asyncio.gather(schedule(), *(worker(r, w) for r, w in conns))
    elapsed = time.perf_counter() - t0
    for _, w in conns:
        w.close()
    return {
        "case": f"GET /v1/site/messages at {rate:,.0f} req/s, {connections} connections",
        "mode": "open, Python",
        "requests_per_s": round(len(latencies) / elapsed),
        **_summary(latencies),
        "errors": errors,
    }


WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  local uid = (counter * 7919) %% %d
  return wrk.format("GET", "/v1/site/messages?userId=c" .. uid, {["X-Site-Key"] = "%s"})
end
"""


def _wrk_ms(token: str) -> float:
    """``812.00us`` / ``10.43ms`` / ``1.02s`` in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", token)
    if not match:
        raise RuntimeError(f"unexpected wrk time {token!r}")
    return round(float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)], 2)


def site_wrk(base: str, seconds: float, connections: int, customers: int) -> dict[str, Any]:
    """Closed loop with wrk (2 threads): the same request mix as the Python clients."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT % (customers, SITE["X-Site-Key"]))
        script.flush()
        command = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
        out = subprocess.run(
            [*command, "-s", script.name, f"{base}/"], capture_output=True, text=True, check=True
        ).stdout
    found = {
        label: re.search(pattern, out, re.M)
        for label, pattern in {
            "rate": r"^Requests/sec:\s+([\d.]+)",
            "max": r"^\s+Latency\s+\S+\s+\S+\s+(\S+)",
            "50": r"^\s+50%\s+(\S+)",
            "99": r"^\s+99%\s+(\S+)",
        }.items()
    }
    missing = [label for label, m in found.items() if m is None]
    if missing:
        raise RuntimeError(f"wrk printed no {missing}:\n{out}")
    value = {label: m.group(1) for label, m in found.items() if m is not None}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    failed = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, failed.groups())) if failed else 0)
    return {
        "case": f"GET /v1/site/messages, {connections} connections",
        "mode": "closed, wrk",
        "requests_per_s": round(float(value["rate"])),
        "p50_ms": _wrk_ms(value["50"]),
        "p99_ms": _wrk_ms(value["99"]),
        "max_ms": _wrk_ms(value["max"]),
        "errors": errors,
    }


def site(
    base: str, seconds: float, connections: int, customers: int, rates: list[float]
) -> list[dict[str, Any]]:
    rows = [asyncio.run(warm_up(base, connections, customers))]
    if shutil.which("wrk"):
        rows.append(site_wrk(base, seconds, connections, customers))
    rows.append(asyncio.run(site_closed(base, seconds, connections, customers)))
    for rate in rates:
        rows.append(asyncio.run(site_open(base, rate, seconds, connections, customers)))
    return rows


def _http_parser() -> str:
    """The HTTP parser uvicorn's ``http="auto"`` picks: httptools when installed, else h11."""
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


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
    parser.add_argument(
        "--site-rates",
        type=float,
        nargs="*",
        default=[1000.0, 2000.0, 4000.0, 6000.0],
        help="open-loop request rates for GET /v1/site/messages (requests/s)",
    )
    parser.add_argument("--site-only", action="store_true", help="skip the ingest case")
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.db, args.port)
        return
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.ingest_http", "serve", f"--db={db}", f"--port={port}"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            asyncio.run(_wait_ready(base))
            seed_site_messages(db, args.customers)
            rows = []
            if not args.site_only:
                rows.append(asyncio.run(ingest(base, args.seconds, args.batch, args.concurrency)))
            rows += site(base, args.seconds, args.site_concurrency, args.customers, args.site_rates)
        finally:
            server.terminate()
            server.wait(10)
    meta = {
        "command": "python -m bench.ingest_http " + " ".join(sys.argv[1:]),
        "server": "parcours run --role api: one uvicorn process (daemon config), SQLite WAL file",
        "http_parser": _http_parser(),
        "load_generators": "wrk (closed loop, if installed); Python asyncio, raw HTTP/1.1 "
        "keep-alive, in a process of its own (closed and open loop)",
        "seconds": args.seconds,
        "site_customers": args.customers,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
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
