"""Deliveries per second through the dispatcher and the real ``webhook`` adapter to a local
HTTP sink, and the most requests the sink ever had in flight at once.

N deliveries are queued in the outbox (customers and rows written in bulk beforehand); the
timed part is ``Dispatcher.run_until_idle``: claim, render the JSON template, sign, POST,
record. The sink is a real uvicorn server on 127.0.0.1 in its own process (so it does not
share the dispatcher's GIL), answering like a webhook receiver after a small simulated
provider latency, and counting requests in flight: that maximum must not exceed
``dispatch.concurrency_per_channel``. Every run checks that all N rows ended ``sent`` and the
sink saw exactly N requests.

    python -m bench.dispatch_throughput                          # 20,000 on SQLite, 3 runs
    python -m bench.dispatch_throughput --deliveries 5000 --runs 1 --postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.report import emit

PG_ADMIN = os.environ.get(
    "PARCOURS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SECRET = "bench-webhook-secret-0123456789"
TEMPLATE = """\
body:
  event: cart_reminder
  email: "{{ customer.email }}"
  name: "{{ customer.first_name | default('') }}"
  cart: "{{ event.cart_id }}"
  total: "{{ event.total }}"
"""


# -- the sink (runs in its own process) ------------------------------------------------------


def sink_app(latency: float) -> Callable[..., Any]:
    """A raw ASGI app: POST -> 200 ``{"id": ...}`` after ``latency`` seconds; ``GET /stats``
    -> requests seen and the most in flight at once; ``POST /reset`` zeroes both."""
    state = {"requests": 0, "in_flight": 0, "max_in_flight": 0}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        more = True
        while more:
            msg = await receive()
            more = msg.get("more_body", False)
        path = scope["path"]
        if path == "/stats":
            body = json.dumps(state).encode()
        elif path == "/reset":
            state.update(requests=0, in_flight=0, max_in_flight=0)
            body = b"{}"
        else:
            state["requests"] += 1
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
            try:
                if latency:
                    await asyncio.sleep(latency)
            finally:
                state["in_flight"] -= 1
            body = b'{"id":"%d"}' % state["requests"]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def serve_sink(port: int, latency: float) -> None:
    import uvicorn

    uvicorn.run(
        sink_app(latency),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


class Sink:
    """The sink subprocess, started and stopped by the benchmark."""

    def __init__(self, latency: float) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.dispatch_throughput",
                "--serve-sink",
                str(self.port),
                "--latency-ms",
                str(latency * 1000),
            ],
            cwd=Path(__file__).resolve().parent.parent,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                self.stats()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("the HTTP sink did not start") from None
                time.sleep(0.05)

    def _call(self, method: str, path: str) -> dict[str, int]:
        req = urllib.request.Request(self.url + path, method=method, data=b"" if method else None)
        with urllib.request.urlopen(req, timeout=5) as r:
            data: dict[str, int] = json.loads(r.read())
            return data

    def stats(self) -> dict[str, int]:
        return self._call("GET", "/stats")

    def reset(self) -> None:
        self._call("POST", "/reset")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the workload ----------------------------------------------------------------------------


def _pg_database() -> tuple[str, Callable[[], None]]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"parcours_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False), drop


def queue(db: Any, n: int, now: datetime) -> None:
    """N customers and one pending webhook delivery each, written in bulk."""
    from sqlalchemy import insert

    from orchestrator.db import tables as t

    due = now - timedelta(seconds=1)
    with db.begin() as conn:
        for start in range(0, n, 5000):
            ids = range(start, min(n, start + 5000))
            conn.execute(
                insert(t.customers),
                [
                    {
                        "id": f"c{i}",
                        "email": f"customer{i}@example.nl",
                        "traits": {"first_name": f"Klant {i}"},
                        "consent": {},
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in ids
                ],
            )
            conn.execute(
                insert(t.deliveries),
                [
                    {
                        "idempotency_key": f"e{i}-notify-1",
                        "operation": "send",
                        "enrollment_id": f"e{i}",
                        "journey": "bench",
                        "step": "notify",
                        "channel": "hook",
                        "customer_id": f"c{i}",
                        "template": "bench_hook",
                        "payload": {"event": {"cart_id": f"cart-{i}", "total": 42.5}},
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": due,
                        "created_at": now,
                    }
                    for i in ids
                ],
            )


class NullChannel:
    """An adapter that does no I/O: what the dispatcher alone costs (claim, policies,
    render, record) with the provider taken out."""

    kind = "owned"
    medium = "webhook"

    def __init__(self) -> None:
        self.name = "hook"

    async def send(self, delivery: Any) -> Any:
        from channels.base import SendResult

        await asyncio.sleep(0)
        return SendResult(provider_message_id=delivery.idempotency_key)

    async def aclose(self) -> None:
        return None


def one_run(
    url: str, sink: Sink, n: int, concurrency: int, batch: int, adapter: str = "webhook"
) -> dict[str, Any]:
    from sqlalchemy import func, select

    from channels.registry import factory
    from channels.templates import TemplateSet
    from channels.tracking import TrackingConfig
    from orchestrator.clock import SystemClock
    from orchestrator.config import DispatchSettings
    from orchestrator.db import tables as t
    from orchestrator.db.connect import open_engine
    from orchestrator.db.migrate import upgrade
    from orchestrator.dispatcher import Dispatcher

    db = open_engine(url)
    upgrade(db)
    clock = SystemClock()
    queue(db, n, clock.now())
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bench_hook.yaml").write_text(TEMPLATE, encoding="utf-8")
        templates = TemplateSet.load(tmp)
    hook: Any = NullChannel()
    if adapter == "webhook":
        hook = factory("webhook").build(
            "hook",
            {"url": f"{sink.url}/hooks", "secret_env": "HOOK_SECRET"},
            {"HOOK_SECRET": SECRET},
        )
    dispatcher = Dispatcher(
        db,
        clock,
        {"hook": hook},
        templates,
        TrackingConfig(base_url="http://127.0.0.1:8080", key=SECRET),
        DispatchSettings(concurrency_per_channel=concurrency),
    )
    sink.reset()

    async def run() -> tuple[int, float]:
        started = time.perf_counter()
        handled = await dispatcher.run_until_idle(batch)
        elapsed = time.perf_counter() - started
        await hook.aclose()
        return handled, elapsed

    handled, elapsed = asyncio.run(run())
    stats = sink.stats()
    with db.connect() as conn:
        by_status = dict(
            conn.execute(
                select(t.deliveries.c.status, func.count()).group_by(t.deliveries.c.status)
            ).all()
        )
    db.dispose()
    expected = n if adapter == "webhook" else 0
    if by_status != {"sent": n} or stats["requests"] != expected or handled != n:
        raise RuntimeError(f"lost work: statuses {by_status}, sink {stats}, handled {handled}")
    if stats["max_in_flight"] > concurrency:
        raise RuntimeError(f"sink saw {stats['max_in_flight']} in flight > bound {concurrency}")
    return {
        "seconds": round(elapsed, 3),
        "per_s": round(n / elapsed, 1),
        "sink_max_in_flight": stats["max_in_flight"],
    }


def httpx_alone(sink: Sink, n: int, concurrency: int) -> dict[str, Any]:
    """The HTTP client's own ceiling: the same httpx client the adapters use, the same
    body size and concurrency, against the same sink, with no dispatcher at all."""
    from channels.http import make_client

    body = json.dumps({"delivery": {"idempotency_key": "e0-notify-1"}, "body": {}}).encode()
    sink.reset()

    async def run() -> float:
        client = make_client(transport=None, timeout=10.0)
        limit = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with limit:
                r = await client.post(f"{sink.url}/hooks", content=body)
                r.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - started
        await client.aclose()
        return elapsed

    elapsed = asyncio.run(run())
    stats = sink.stats()
    return {
        "seconds": round(elapsed, 3),
        "per_s": round(n / elapsed, 1),
        "sink_max_in_flight": stats["max_in_flight"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--deliveries", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=16, help="concurrency_per_channel")
    p.add_argument("--batch", type=int, default=500, help="rows claimed per dispatch round")
    p.add_argument("--latency-ms", type=float, default=2.0, help="sink's simulated latency")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--httpx-requests", type=int, default=5000, help="requests for the httpx-alone row"
    )
    p.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database")
    p.add_argument("--serve-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_sink:
        serve_sink(args.serve_sink, args.latency_ms / 1000)
        return

    load_at_start = os.getloadavg()
    sink = Sink(args.latency_ms / 1000)
    db_name = "postgresql" if args.postgres else "sqlite"
    cases: list[tuple[str, str, int]] = [
        ("dispatcher + webhook adapter -> sink", "webhook", args.deliveries),
        ("dispatcher + null adapter (no I/O)", "null", args.deliveries),
        ("httpx client alone -> sink", "httpx", args.httpx_requests),
    ]
    rows: list[dict[str, Any]] = []
    try:
        for run in range(1, args.runs + 1):
            for case, adapter, n in cases:
                if n <= 0:
                    continue
                if adapter == "httpx":
                    result = httpx_alone(sink, n, args.concurrency)
                    rows.append({"case": case, "run": run, "database": "-", "n": n} | result)
                    print(f"{case} run {run}: {result}", file=sys.stderr)
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    drop: Callable[[], None] | None = None
                    if args.postgres:
                        url, drop = _pg_database()
                    else:
                        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
                    try:
                        result = one_run(url, sink, n, args.concurrency, args.batch, adapter)
                    finally:
                        if drop is not None:
                            drop()
                rows.append({"case": case, "run": run, "database": db_name, "n": n} | result)
                print(f"{case} run {run}: {result}", file=sys.stderr)
    finally:
        sink.stop()
    medians = {
        case: statistics.median(r["per_s"] for r in rows if r["case"] == case)
        for case, _, n in cases
        if n > 0
    }
    emit(
        "dispatch_throughput",
        rows,
        {
            "deliveries": args.deliveries,
            "concurrency_per_channel": args.concurrency,
            "batch": args.batch,
            "sink_latency_ms": args.latency_ms,
            "median_per_s": medians,
            "max_in_flight_overall": max(r["sink_max_in_flight"] for r in rows),
            "adapter": "webhook (HMAC-signed JSON POST, httpx)",
            "sink": "uvicorn raw ASGI app on 127.0.0.1, separate process",
            "loadavg_at_start": load_at_start,
            "loadavg_at_end": os.getloadavg(),
            "command": "python -m bench.dispatch_throughput " + " ".join(sys.argv[1:]),
        },
    )


if __name__ == "__main__":
    main()
