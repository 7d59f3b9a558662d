"""Transitions per second through the cart-recovery journey, with peak memory, and the same
row writes as raw SQL for the ceiling.

The population takes the longest path (no reactions): enter, email, 2 days, banner, 3 days,
paid audience, 7 days, exit: seven persisted transitions and three outbox rows per
customer, on a virtual clock. Only the engine's work is timed (inbox + timers); the entry
events are written to the inbox beforehand.

    python -m bench.engine_throughput --customers 1000000            # SQLite
    python -m bench.engine_throughput --customers 200000 --postgres  # throwaway PostgreSQL

Each size runs in its own process so peak RSS belongs to that size alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get(
    "PARCOURS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _settings(url: str) -> Any:
    from orchestrator.config import load_settings

    examples = ROOT / "journeys" / "examples"
    return load_settings(
        ROOT / "config" / "parcours.toml",
        database_url=url,
        journeys=[str(examples)],
        templates=str(examples / "templates"),
    )


ARRIVALS = timedelta(minutes=1)


def arrival(now: datetime, i: int, customers: int) -> datetime:
    """When customer ``i`` abandoned the cart: the population arrives over the minute
    before the engine starts, in order, as a burst of real traffic would (ids and
    timestamps distinct to the millisecond), rather than all at one instant."""
    return now - ARRIVALS + ARRIVALS * i / customers


def between_phases(db: Any) -> None:
    """Days pass between a journey's steps; on PostgreSQL autovacuum would clear the dead
    row versions the last phase left in the queue tables and refresh their statistics
    meanwhile. The machine's server runs with autovacuum off, so do it here, untimed.

    Not before the first phase: the tables are still growing then, and statistics taken
    of empty tables would make the planner scan whole tables for lookups by key until
    the next analyze (what autovacuum, within its first minute, would also suffer)."""
    if db.dialect.name != "postgresql":
        return
    with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"VACUUM (ANALYZE) {Autoanalyze.TABLES}")


class Autoanalyze:
    """While the engine runs on PostgreSQL, refresh the hot tables' statistics every
    ``every`` seconds, as autovacuum's analyze would on a production server (this
    machine's runs with autovacuum off). Without it, tables that grow from empty during a
    phase keep the planner's "empty" estimate and lookups by key turn into full scans.
    It runs concurrently and its cost is inside the timed figures, as autovacuum's is."""

    TABLES = "events, customers, enrollments, deliveries, audience_memberships"

    def __init__(self, db: Any, every: float = 15.0) -> None:
        self.db = db
        self.every = every
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.wait(self.every):
            with self.db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql(f"ANALYZE {self.TABLES}")

    def __enter__(self) -> Autoanalyze:
        if self.db.dialect.name == "postgresql":
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()


def _pg_database() -> tuple[str, Any]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"parcours_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False), drop


def run_engine(customers: int, url: str, batch: int) -> dict[str, Any]:
    """One measurement in this process."""
    from sqlalchemy import func, insert, select

    from orchestrator.clock import VirtualClock
    from orchestrator.db import tables as t
    from orchestrator.db.connect import open_engine
    from orchestrator.db.migrate import upgrade
    from orchestrator.runtime import build_runtime

    db = open_engine(url)
    upgrade(db)
    clock = VirtualClock()
    settings = _settings(url)
    settings.workers.batch_size = batch
    rt = build_runtime(settings, clock=clock, db=db, channels={})
    now = clock.now()
    chunk = 20_000
    t0 = time.perf_counter()
    for start in range(0, customers, chunk):
        rows = [
            {
                "message_id": f"e{i}",
                "kind": "track",
                "name": "cart_abandoned",
                "customer_id": f"c{i:08d}",
                "properties": {"cart_id": f"k{i}", "total": 20},
                "traits": {},
                "context": {},
                "occurred_at": arrival(now, i, customers),
                "received_at": now,
            }
            for i in range(start, min(customers, start + chunk))
        ]
        with db.begin() as conn:
            conn.execute(insert(t.events), rows)
    ingest_s = time.perf_counter() - t0

    engine_s = 0.0
    cpu0 = time.process_time()
    phases = []
    for label, advance in (
        ("enter", None),
        ("email timeout", 2),
        ("banner timeout", 3),
        ("audience ends", 7),
    ):
        if advance:
            clock.advance(timedelta(days=advance, minutes=1))
            between_phases(db)
        t1 = time.perf_counter()
        with Autoanalyze(db):
            n = rt.engine.run_until_idle()
        dt = time.perf_counter() - t1
        engine_s += dt
        phases.append({"phase": label, "items": n, "seconds": round(dt, 2)})
    engine_cpu = time.process_time() - cpu0
    with db.connect() as conn:
        transitions = conn.execute(select(func.count()).select_from(t.history)).scalar_one()
        deliveries = conn.execute(select(func.count()).select_from(t.deliveries)).scalar_one()
        ended = conn.execute(
            select(func.count()).where(t.enrollments.c.status == "ended")
        ).scalar_one()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    db.dispose()
    return {
        "customers": customers,
        "transitions": transitions,
        "deliveries": deliveries,
        "ended": ended,
        "engine_seconds": round(engine_s, 2),
        "transitions_per_s": round(transitions / engine_s),
        "transitions_per_cpu_s": round(transitions / engine_cpu),
        "ingest_events_per_s": round(customers / ingest_s),
        "peak_rss_mb": round(rss_mb, 1),
        "phases": phases,
    }


PHASES = (("enter", 0), ("email timeout", 2), ("banner timeout", 5), ("audience ends", 12))


def phase_child(url: str, day: int, batch: int, go: Path) -> None:
    """One worker process of a multi-process phase: wait for the barrier, then drain."""
    from orchestrator.clock import VirtualClock
    from orchestrator.runtime import build_runtime

    clock = VirtualClock()
    clock.advance(timedelta(days=day, minutes=day))
    settings = _settings(url)
    settings.workers.batch_size = batch
    rt = build_runtime(settings, clock=clock, channels={}, sync=False)
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    start, cpu = time.time(), time.process_time()
    rt.engine.run_until_idle()
    print(
        json.dumps(
            {
                "start": start,
                "end": time.time(),
                "cpu": time.process_time() - cpu,
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def run_workers(customers: int, url: str, batch: int, workers: int) -> dict[str, Any]:
    """The same population, each phase drained by ``workers`` processes at once."""
    from sqlalchemy import func, insert, select

    from orchestrator.clock import VirtualClock
    from orchestrator.db import tables as t
    from orchestrator.db.connect import open_engine
    from orchestrator.db.migrate import upgrade
    from orchestrator.runtime import build_runtime

    db = open_engine(url)
    upgrade(db)
    now = VirtualClock().now()
    build_runtime(_settings(url), clock=VirtualClock(), db=db, channels={})
    for start in range(0, customers, 20_000):
        with db.begin() as conn:
            conn.execute(
                insert(t.events),
                [
                    {
                        "message_id": f"e{i}",
                        "kind": "track",
                        "name": "cart_abandoned",
                        "customer_id": f"c{i:08d}",
                        "properties": {"cart_id": f"k{i}", "total": 20},
                        "traits": {},
                        "context": {},
                        "occurred_at": arrival(now, i, customers),
                        "received_at": now,
                    }
                    for i in range(start, min(customers, start + 20_000))
                ],
            )
    elapsed = 0.0
    rss = 0.0
    with tempfile.TemporaryDirectory() as d:
        for label, day in PHASES:
            if day:
                between_phases(db)
            go = Path(d) / f"go-{label.replace(' ', '-')}"
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.engine_throughput",
                        "--phase-child",
                        url,
                        str(day),
                        str(batch),
                        str(go),
                    ],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for _ in range(workers)
            ]
            for p in procs:
                assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            go.write_text("go")
            with Autoanalyze(db):
                results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
            elapsed += max(r["end"] for r in results) - min(r["start"] for r in results)
            rss = max(rss, *(r["rss_mb"] for r in results))
    with db.connect() as conn:
        transitions = conn.execute(select(func.count()).select_from(t.history)).scalar_one()
    db.dispose()
    return {
        "customers": customers,
        "transitions": transitions,
        "engine_seconds": round(elapsed, 2),
        "transitions_per_s": round(transitions / elapsed),
        "peak_rss_mb": round(rss, 1),
    }


def run_raw_sql(customers: int, path: str, batch: int) -> dict[str, Any]:
    """The ceiling: exactly the rows the engine writes for this population, written with
    ``sqlite3.executemany`` and no engine logic (no reads, no decisions, no Python model).

    Same schema and indexes, same values in the same shapes (time-ordered enrollment ids,
    delivery keys, JSON documents), in the same order: phase by phase (a journey's steps
    happen days apart), one transaction per batch of the engine's batch size. Per
    customer: the inbox row marked processed, a customer row, an enrollment inserted and
    updated three times, seven history rows, four outbox rows (email, banner, audience
    add, audience removal), and an audience membership added and ended.
    """
    from orchestrator.db.connect import open_engine
    from orchestrator.db.migrate import upgrade
    from orchestrator.model import enrollment_id

    upgrade(open_engine(f"sqlite:///{path}"))
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA cache_size=-65536")
    con.execute("PRAGMA wal_autocheckpoint=10000")
    t0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
    now = t0.strftime("%Y-%m-%d %H:%M:%S.%f")

    def at(days: int, minutes: int = 0) -> str:
        return (t0 + timedelta(days=days, minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S.%f")

    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO events (message_id, kind, name, customer_id, properties, traits, context,"
        " occurred_at, received_at) VALUES (?, 'track', 'cart_abandoned', ?, ?, '{}', '{}',"
        " ?, ?)",
        (
            (
                f"e{i}",
                f"c{i:08d}",
                f'{{"cart_id":"k{i}","total":20}}',
                arrival(t0, i, customers).strftime("%Y-%m-%d %H:%M:%S.%f"),
                now,
            )
            for i in range(customers)
        ),
    )
    con.execute("COMMIT")
    from orchestrator.runtime import build_runtime

    url = f"sqlite:///{path}"
    version = build_runtime(_settings(url), channels={}).registry.current["cart-recovery"].version
    eids = [
        enrollment_id("cart-recovery", f"c{i:08d}", f"k{i}", f"e{i}", arrival(t0, i, customers))
        for i in range(customers)
    ]
    visits = ["reminder_email", "wait_email", "site_banner", "wait_site", "retarget"]

    def visited(n: int) -> str:
        return "{" + ",".join(f'"{v}":1' for v in visits[:n]) + "}"

    def payload(i: int) -> str:
        return f'{{"event":{{"cart_id":"k{i}","total":20}},"arm":null,"version":"{version}"}}'

    def deliveries(rows: list[tuple[Any, ...]], transactional: int = 0) -> None:
        con.executemany(
            "INSERT INTO deliveries (idempotency_key, operation, enrollment_id, journey, step,"
            " channel, customer_id, template, payload, transactional, status, attempts,"
            " next_attempt_at, created_at) VALUES (?, ?, ?, 'cart-recovery', ?, ?, ?, ?, ?,"
            f" {int(transactional)}, 'pending', 0, ?, ?)",
            rows,
        )

    def history(rows: list[tuple[Any, ...]]) -> None:
        con.executemany(
            "INSERT INTO history (enrollment_id, journey, customer_id, from_state, to_state,"
            " trigger, at) VALUES (?, 'cart-recovery', ?, ?, ?, ?, ?)",
            rows,
        )

    moves = (
        "UPDATE enrollments SET state = ?, wake_at = ?, wake_trigger = ?, visits = ?,"
        " last_delivery = ?, arm = ?, step_entered_at = ? WHERE id = ?"
    )
    started = time.perf_counter()
    for phase in range(4):
        for lo in range(0, customers, batch):
            ids = range(lo, min(customers, lo + batch))
            con.execute("BEGIN IMMEDIATE")
            if phase == 0:
                con.execute(
                    "UPDATE events SET processed_at = ? WHERE id >= ? AND id <= ?",
                    (now, lo + 1, ids[-1] + 1),
                )
                con.executemany(
                    "INSERT INTO customers (id, email, phone, timezone, traits, consent,"
                    " created_at, updated_at) VALUES (?, NULL, NULL, NULL, '{}', '{}', ?, ?)",
                    [(f"c{i:08d}", now, now) for i in ids],
                )
                con.executemany(
                    "INSERT INTO enrollments (id, journey, version, customer_id, key, state,"
                    " status, entered_at, step_entered_at, wake_at, wake_trigger, visits,"
                    " context, last_delivery, arm, ended_at, exit_reason) VALUES (?,"
                    " 'cart-recovery', ?, ?, ?, 'wait_email', 'live', ?, ?, ?, 'timeout', ?, ?,"
                    " ?, NULL, NULL, NULL)",
                    [
                        (
                            eids[i],
                            version,
                            f"c{i:08d}",
                            f"k{i}",
                            now,
                            now,
                            at(2),
                            visited(2),
                            f'{{"cart_id":"k{i}","total":20}}',
                            f"{eids[i]}-reminder_email-1",
                        )
                        for i in ids
                    ],
                )
                history([(eids[i], f"c{i:08d}", None, "reminder_email", "enter", now) for i in ids])
                history(
                    [
                        (eids[i], f"c{i:08d}", "reminder_email", "wait_email", "advance", now)
                        for i in ids
                    ]
                )
                deliveries(
                    [
                        (
                            f"{eids[i]}-reminder_email-1",
                            "send",
                            eids[i],
                            "reminder_email",
                            "email",
                            f"c{i:08d}",
                            "cart_reminder",
                            payload(i),
                            now,
                            now,
                        )
                        for i in ids
                    ]
                )
            elif phase in (1, 2):
                when = at(2, 1) if phase == 1 else at(5, 2)
                wait, send, step = (
                    ("wait_email", "site_banner", "wait_site")
                    if phase == 1
                    else ("wait_site", "retarget", "in_audience")
                )
                wake = at(5, 1) if phase == 1 else at(12, 2)
                trigger = "timeout" if phase == 1 else "advance"
                seen = visited(4) if phase == 1 else visited(5)[:-1] + ',"in_audience":1}'
                con.executemany(
                    moves,
                    [
                        (
                            step,
                            wake,
                            trigger,
                            seen,
                            f"{eids[i]}-{send}-1",
                            None,
                            when,
                            eids[i],
                        )
                        for i in ids
                    ],
                )
                history([(eids[i], f"c{i:08d}", wait, send, "timeout", when) for i in ids])
                history([(eids[i], f"c{i:08d}", send, step, "advance", when) for i in ids])
                deliveries(
                    [
                        (
                            f"{eids[i]}-{send}-1",
                            "send" if phase == 1 else "audience_add",
                            eids[i],
                            send,
                            "site" if phase == 1 else "retargeting",
                            f"c{i:08d}",
                            "cart_banner" if phase == 1 else None,
                            payload(i),
                            when,
                            when,
                        )
                        for i in ids
                    ]
                )
                if phase == 2:
                    con.executemany(
                        "INSERT INTO audience_memberships (enrollment_id, channel, customer_id,"
                        " added_at, removed_at) VALUES (?, 'retargeting', ?, ?, NULL)",
                        [(eids[i], f"c{i:08d}", when) for i in ids],
                    )
            else:
                when = at(12, 3)
                con.executemany(
                    "UPDATE enrollments SET state = 'expired', wake_at = NULL, wake_trigger ="
                    " NULL, visits = ?, last_delivery = ?, arm = NULL, step_entered_at = ?,"
                    " status = 'ended', ended_at = ?, exit_reason = 'no_conversion' WHERE id = ?",
                    [
                        (
                            visited(5)[:-1] + ',"in_audience":1,"expired":1}',
                            f"{eids[i]}-retarget-1",
                            when,
                            when,
                            eids[i],
                        )
                        for i in ids
                    ],
                )
                history(
                    [(eids[i], f"c{i:08d}", "in_audience", "expired", "advance", when) for i in ids]
                )
                deliveries(
                    [
                        (
                            f"{eids[i]}-remove-retargeting",
                            "audience_remove",
                            eids[i],
                            None,
                            "retargeting",
                            f"c{i:08d}",
                            None,
                            "{}",
                            when,
                            when,
                        )
                        for i in ids
                    ],
                    transactional=1,
                )
                con.executemany(
                    "UPDATE audience_memberships SET removed_at = ? WHERE enrollment_id = ?"
                    " AND removed_at IS NULL",
                    [(when, eids[i]) for i in ids],
                )
            con.execute("COMMIT")
    dt = time.perf_counter() - started
    return {
        "customers": customers,
        "transitions": 7 * customers,
        "seconds": round(dt, 2),
        "transitions_per_s": round(7 * customers / dt),
    }


def child(args: argparse.Namespace) -> None:
    if args.raw:
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(run_raw_sql(args.customers, str(Path(d) / "raw.db"), args.batch)))
        return
    if args.postgres:
        url, drop = _pg_database()
        try:
            if args.workers > 1:
                print(json.dumps(run_workers(args.customers, url, args.batch, args.workers)))
            else:
                print(json.dumps(run_engine(args.customers, url, args.batch)))
        finally:
            drop()
        return
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(run_engine(args.customers, f"sqlite:///{Path(d) / 'e.db'}", args.batch)))


def spawn(*extra: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.engine_throughput", "--child", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        sys.exit(f"the measurement failed ({' '.join(extra)}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--phase-child":
        url, day, batch, go = sys.argv[2:6]
        phase_child(url, int(day), int(batch), Path(go))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--postgres", action="store_true")
    p.add_argument("--workers", type=int, default=1, help="worker processes (PostgreSQL)")
    p.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.customers = args.customers[0]
        child(args)
        return
    from bench.report import emit

    rows: list[dict[str, object]] = []
    backend = "postgresql" if args.postgres else "sqlite"
    for n in args.customers:
        r = spawn(
            "--customers",
            str(n),
            "--batch",
            str(args.batch),
            *(["--postgres", "--workers", str(args.workers)] if args.postgres else []),
        )
        row: dict[str, object] = {
            "backend": backend,
            "workers": args.workers,
            "customers": n,
            "transitions": r["transitions"],
            "engine_s": r["engine_seconds"],
            "transitions_per_s": r["transitions_per_s"],
            "peak_rss_mb": r["peak_rss_mb"],
        }
        if not args.postgres:
            raw = spawn("--customers", str(n), "--raw", "--batch", str(args.batch))
            row["raw_sql_per_s"] = raw["transitions_per_s"]
            row["share_of_ceiling"] = f"{r['transitions_per_s'] / raw['transitions_per_s']:.0%}"
        rows.append(row)
    emit(
        "engine_throughput",
        rows,
        {
            "journey": "cart-recovery",
            "batch": args.batch,
            "path": "no reactions: 7 transitions, 4 outbox rows each",
        },
    )


if __name__ == "__main__":
    main()
