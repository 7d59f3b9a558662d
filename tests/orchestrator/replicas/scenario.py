"""A population through cart-recovery, driven by real worker processes on PostgreSQL.

Three groups: A clicks the reminder email within the hour, B buys after reaching the paid
audience, C never reacts. Every customer also sends five identify events whose ``seq``
trait must end at 5 (events applied in order of occurrence even when they are inserted
shuffled and split across batches taken by different workers).
"""

from __future__ import annotations

import itertools
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from orchestrator.clock import VirtualClock
from orchestrator.db import tables as t
from orchestrator.db.connect import open_engine
from orchestrator.db.migrate import upgrade
from orchestrator.ingest import EventIn, record
from orchestrator.model import enrollment_id
from orchestrator.runtime import build_runtime
from tests.conftest import ROOT, settings_for

T0 = VirtualClock().now()
PHASES: list[timedelta] = [
    timedelta(0),
    timedelta(hours=1),
    timedelta(days=2, minutes=1),
    timedelta(days=5, minutes=2),
    timedelta(days=6),
    timedelta(days=13),
    timedelta(days=20),
]


def publish(path: Path, content: str) -> None:
    """Write a marker atomically: a worker polling for it never reads a half-written file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(content)
    tmp.rename(path)


def group(i: int) -> str:
    return "ABC"[i % 3]


@dataclass
class Outcome:
    enrollments: list[Any]
    history: dict[str, list[tuple[str | None, str, str]]]
    deliveries: list[Any]
    traits: dict[str, dict[str, Any]]
    sends: list[tuple[str, str, int, int]] = field(default_factory=list)
    audience: list[tuple[str, str, str]] = field(default_factory=list)
    kills: int = 0


def _events_for_phase(k: int, customers: int, rng: random.Random) -> list[dict[str, Any]]:
    at = T0 + PHASES[k]
    out: list[dict[str, Any]] = []
    if k == 0:
        for i in range(customers):
            cid = f"cust{i:04d}"
            for seq in rng.sample(range(1, 6), 5):  # inserted shuffled, occurred in order
                out.append(
                    {
                        "type": "identify",
                        "userId": cid,
                        "messageId": f"id-{cid}-{seq}",
                        "traits": {"seq": seq, "email": f"{cid}@example.test"},
                        "timestamp": (at + timedelta(milliseconds=seq)).isoformat(),
                    }
                )
            out.append(
                {
                    "userId": cid,
                    "event": "cart_abandoned",
                    "messageId": f"cart-{cid}",
                    "properties": {"cart_id": "c1", "total": 20},
                    "timestamp": (at + timedelta(milliseconds=10)).isoformat(),
                }
            )
        rng.shuffle(out)
    elif k == 1:
        for i in range(0, customers, 3):
            cid = f"cust{i:04d}"
            eid = enrollment_id(
                "cart-recovery", cid, "c1", f"cart-{cid}", T0 + timedelta(milliseconds=10)
            )
            out.append(
                {
                    "userId": cid,
                    "event": "email.clicked",
                    "messageId": f"click-{cid}",
                    "properties": {"delivery_key": f"{eid}-reminder_email-1"},
                    "timestamp": at.isoformat(),
                }
            )
    elif k == 4:
        for i in range(1, customers, 3):
            cid = f"cust{i:04d}"
            out.append(
                {
                    "userId": cid,
                    "event": "order_completed",
                    "messageId": f"order-{cid}",
                    "timestamp": at.isoformat(),
                }
            )
    return out


def _spawn(url: str, run_dir: Path, worker: str, batch: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.orchestrator.replicas.worker",
            url,
            str(run_dir),
            worker,
            str(batch),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(run_dir / f"err-{worker}.log").open("wb"),
    )


def run(
    url: str,
    run_dir: Path,
    *,
    workers: int,
    customers: int,
    batch: int = 50,
    kill_every: float | None = None,
    max_kills: int = 8,
    seed: int = 7,
) -> Outcome:
    """Run the scenario; with ``kill_every`` seconds, SIGKILL a random worker that often and
    start a replacement, throughout every phase."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    db = open_engine(url)
    upgrade(db)
    clock = VirtualClock()
    parent = build_runtime(settings_for(url), clock=clock, db=db, channels={})
    procs: dict[str, subprocess.Popen[bytes]] = {}
    serial = 0
    kills = 0
    for _ in range(workers):
        serial += 1
        procs[f"w{serial}"] = _spawn(url, run_dir, f"w{serial}", batch)
    try:
        # Every worker is up before the first events land, so none of them finds the work
        # already taken by the others only because it started late.
        started = time.monotonic() + 60
        while not all((run_dir / f"ready-{w}").exists() for w in procs):
            for w, p in procs.items():
                if p.poll() is not None:
                    raise RuntimeError(
                        f"worker {w} failed: {(run_dir / f'err-{w}.log').read_text()}"
                    )
            if time.monotonic() > started:
                raise TimeoutError("workers did not start within 60 s")
            time.sleep(0.02)
        for k in range(len(PHASES)):
            bodies = _events_for_phase(k, customers, rng)
            if bodies:
                with db.begin() as conn:
                    record(conn, [EventIn.model_validate(b) for b in bodies], T0 + PHASES[k])
            publish(run_dir / f"phase-{k}", (T0 + PHASES[k]).isoformat())
            deadline = time.monotonic() + 120
            next_kill = time.monotonic() + (kill_every or 0) * rng.uniform(0.3, 1.0)
            while True:
                done = all((run_dir / f"done-{k}-{w}").exists() for w in procs)
                if done:
                    break
                for w, p in list(procs.items()):
                    if p.poll() not in (None, -signal.SIGKILL):
                        raise RuntimeError(
                            f"worker {w} failed: {(run_dir / f'err-{w}.log').read_text()[-3000:]}"
                        )
                ready = sorted(w for w in procs if (run_dir / f"ready-{w}").exists())
                if kill_every and kills < max_kills and ready and time.monotonic() >= next_kill:
                    victim = rng.choice(ready)
                    procs[victim].send_signal(signal.SIGKILL)
                    procs[victim].wait()
                    del procs[victim]
                    kills += 1
                    serial += 1
                    procs[f"w{serial}"] = _spawn(url, run_dir, f"w{serial}", batch)
                    next_kill = time.monotonic() + kill_every * rng.uniform(0.3, 1.0)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"phase {k} did not finish")
                time.sleep(0.02)
    finally:
        publish(run_dir / "stop", "stop")
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    out = collect(parent.db)
    out.kills = kills
    for log in run_dir.glob("sink-*.log"):
        for line in log.read_text().splitlines():
            kind, worker, key, a, b = line.split()
            if kind == "send":
                out.sends.append((worker, key, int(a), int(b)))
            else:
                out.audience.append((kind, worker, key))
    parent.db.dispose()
    return out


def collect(db: Any) -> Outcome:
    with db.connect() as conn:
        enrollments = list(conn.execute(select(t.enrollments).order_by(t.enrollments.c.id)))
        history: dict[str, list[tuple[str | None, str, str]]] = defaultdict(list)
        for h in conn.execute(select(t.history).order_by(t.history.c.id)):
            history[h.enrollment_id].append((h.from_state, h.to_state, h.trigger))
        deliveries = list(conn.execute(select(t.deliveries).order_by(t.deliveries.c.id)))
        traits = {c.id: dict(c.traits) for c in conn.execute(select(t.customers))}
    return Outcome(enrollments, dict(history), deliveries, traits)


def final_states(o: Outcome) -> set[tuple[str, str, str, str | None]]:
    return {(e.customer_id, e.state, e.status, e.exit_reason) for e in o.enrollments}


def check_invariants(o: Outcome, customers: int, *, resends_allowed: bool) -> None:
    """Everything the replicas must guarantee, as assertions."""
    by_customer = {e.customer_id: e for e in o.enrollments}
    assert len(o.enrollments) == customers == len(by_customer), "one enrollment per cart"
    expected = {"A": "reacted", "B": "converted", "C": "no_conversion"}
    for i in range(customers):
        e = by_customer[f"cust{i:04d}"]
        assert e.status == "ended", (e.customer_id, e.state)  # nothing lost or stuck
        assert e.exit_reason == expected[group(i)], (e.customer_id, e.exit_reason)
    # Every due timeout fired exactly once, and history is one unbroken chain per enrollment
    # ending in the enrollment's state (no two workers advanced one enrollment at once).
    for e in o.enrollments:
        chain = o.history[e.id]
        timeouts = Counter(src for src, _, trig in chain if trig == "timeout")
        want = {
            "A": {},
            "B": {"wait_email": 1, "wait_site": 1},
            "C": {"wait_email": 1, "wait_site": 1},
        }[group(int(e.customer_id[4:]))]
        assert dict(timeouts) == want, (e.customer_id, chain)
        assert chain[0][0] is None
        for (_, prev_to, _), (src, _, _) in itertools.pairwise(chain):
            assert src == prev_to, (e.customer_id, chain)
        assert chain[-1][1] == e.state
    # Exactly one outbox row per intended message.
    per_customer = Counter(d.customer_id for d in o.deliveries)
    for i in range(customers):
        assert per_customer[f"cust{i:04d}"] == {"A": 1, "B": 4, "C": 4}[group(i)]
    keys = {d.idempotency_key for d in o.deliveries}
    assert len(keys) == len(o.deliveries)
    assert all(d.status == "sent" for d in o.deliveries), Counter(d.status for d in o.deliveries)
    # Each delivery in flight in one worker at a time; every attempt carries its row's key.
    by_key: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for _, key, start, end in o.sends:
        assert key in keys
        by_key[key].append((start, end))
    for key, spans in by_key.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"{key} was being sent by two workers at once"
        if not resends_allowed:
            assert len(spans) == 1, f"{key} sent {len(spans)} times"
    sent_keys = {d.idempotency_key for d in o.deliveries if d.operation == "send"}
    assert set(by_key) == sent_keys
    # One customer's events applied in order of occurrence: the last identify wins.
    for i in range(customers):
        assert o.traits[f"cust{i:04d}"]["seq"] == 5
    # Audience: B and C added; B removed on conversion, C on expiry; A never.
    added = {cid for kind, _, cid in o.audience if kind == "add"}
    assert all(group(int(c[4:])) != "A" for c in added)
