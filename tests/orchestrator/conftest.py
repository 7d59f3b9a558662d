"""Runtime fixtures for the engine, dispatcher and CLI tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from channels.log import LogChannel
from orchestrator.clock import VirtualClock
from orchestrator.db import tables as t
from orchestrator.db.connect import open_engine
from orchestrator.db.migrate import upgrade
from orchestrator.db.types import as_utc
from orchestrator.dispatcher import Dispatcher
from orchestrator.ingest import EventIn, record
from orchestrator.runtime import Runtime, build_runtime
from tests.conftest import EXAMPLES, settings_for


class Harness:
    """A runtime on a virtual clock with helpers that read like the journey does."""

    def __init__(self, rt: Runtime, clock: VirtualClock) -> None:
        self.rt = rt
        self.clock = clock
        self.engine = rt.engine
        self.dispatcher = Dispatcher(
            rt.db, clock, rt.channels, rt.templates, rt.tracking, rt.settings.dispatch
        )
        self._n = 0

    def event(self, user: str, name: str, **props: Any) -> None:
        self._n += 1
        body = {
            "userId": user,
            "event": name,
            "properties": props,
            "messageId": f"m{self._n}-{user}-{name}",
        }
        with self.rt.db.begin() as conn:
            record(conn, [EventIn.model_validate(body)], self.clock.now())
        self.engine.run_until_idle()

    def identify(self, user: str, **traits: Any) -> None:
        self._n += 1
        body = {
            "type": "identify",
            "userId": user,
            "traits": traits,
            "messageId": f"m{self._n}-{user}-identify",
        }
        with self.rt.db.begin() as conn:
            record(conn, [EventIn.model_validate(body)], self.clock.now())
        self.engine.run_until_idle()

    def advance(self, **delta: float) -> None:
        """Walk virtual time forward, stopping at every due timer on the way, as a daemon
        running throughout would."""
        target = self.clock.now() + timedelta(**delta)
        self.engine.run_until_idle()
        while True:
            e = t.enrollments.c
            with self.rt.db.connect() as conn:
                nxt = as_utc(
                    conn.execute(
                        select(func.min(e.wake_at)).where(
                            e.status == "live", e.wake_at.is_not(None)
                        )
                    ).scalar_one()
                )
            if nxt is None or nxt > target:
                break
            self.clock.set(max(nxt, self.clock.now()))
            self.engine.run_until_idle()
        self.clock.set(target)
        self.engine.run_until_idle()

    def dispatch(self) -> int:
        import asyncio

        return asyncio.run(self.dispatcher.run_until_idle())

    def enrollments(self, user: str | None = None, journey: str | None = None) -> list[Any]:
        q = select(t.enrollments).order_by(t.enrollments.c.entered_at)
        if user:
            q = q.where(t.enrollments.c.customer_id == user)
        if journey:
            q = q.where(t.enrollments.c.journey == journey)
        with self.rt.db.connect() as conn:
            return list(conn.execute(q).all())

    def one(self, user: str, journey: str = "cart-recovery") -> Any:
        rows = self.enrollments(user, journey)
        assert len(rows) == 1, rows
        return rows[0]

    def deliveries(self, user: str | None = None) -> list[Any]:
        q = select(t.deliveries).order_by(t.deliveries.c.id)
        if user:
            q = q.where(t.deliveries.c.customer_id == user)
        with self.rt.db.connect() as conn:
            return list(conn.execute(q).all())

    def history(self, user: str) -> list[tuple[str | None, str, str]]:
        with self.rt.db.connect() as conn:
            rows = conn.execute(
                select(t.history).where(t.history.c.customer_id == user).order_by(t.history.c.id)
            ).all()
        return [(r.from_state, r.to_state, r.trigger) for r in rows]

    def count(self, table: Any) -> int:
        with self.rt.db.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    def channel(self, name: str) -> LogChannel:
        ch = self.rt.channels[name]
        assert isinstance(ch, LogChannel)
        return ch


HarnessFactory = Callable[..., Harness]


def with_journeys(tmp_path: Path, files: Mapping[str, str]) -> list[str]:
    """The example journeys plus ``files`` (name -> YAML) written to a folder of the test's
    own: the ``journeys`` setting of a harness that needs journeys of its own."""
    extra = tmp_path / "extra"
    extra.mkdir(exist_ok=True)
    for name, text in files.items():
        (extra / name).write_text(text)
    return [str(EXAMPLES), str(extra)]


@pytest.fixture
def make_harness(database_url: str) -> Iterator[HarnessFactory]:
    made: list[Harness] = []

    def make(url: str | None = None, **overrides: Any) -> Harness:
        settings = settings_for(url or database_url, **overrides)
        db = open_engine(settings.database_url)
        upgrade(db)
        clock = VirtualClock()
        channels = {
            name: LogChannel(
                name,
                "paid" if conf.get("kind") == "paid" else "owned",
                str(conf.get("medium", "email")),
            )
            for name, conf in settings.channels.items()
        }
        rt = build_runtime(settings, clock=clock, db=db, channels=dict(channels))
        h = Harness(rt, clock)
        made.append(h)
        return h

    yield make
    for h in made:
        h.rt.db.dispose()


@pytest.fixture
def harness(make_harness: HarnessFactory) -> Harness:
    return make_harness()
