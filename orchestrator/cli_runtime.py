"""The runtime commands of ``parcours``: the database, the daemon, and looking at and
poking customers by hand (``enroll``, ``send-event``, ``status``, ``customer``,
``deliveries``, ``simulate``)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table
from sqlalchemy import func, select

from journeys import JourneyLoadError
from orchestrator.cli import ConfigOption, err, load_journeys_or_exit, out, settings_or_exit
from orchestrator.config import ConfigError, Settings
from orchestrator.db import tables as t
from orchestrator.db.connect import open_engine
from orchestrator.db.migrate import SchemaOutdated, current_revision, head_revision, upgrade
from orchestrator.engine import EngineError
from orchestrator.ingest import EventIn, record
from orchestrator.runtime import Runtime, build_runtime

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


def _runtime(settings: Settings, *, channels: bool = True) -> Runtime:
    try:
        return build_runtime(settings, channels=None if channels else {})
    except SchemaOutdated as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except JourneyLoadError:
        load_journeys_or_exit(settings)  # prints every problem and exits 1
        raise typer.Exit(1) from None


def _pairs(items: list[str] | None, what: str) -> dict[str, Any]:
    """``key=value`` options; values are JSON when they parse as JSON (numbers, true...)."""
    out_: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            err.print(f"[red]error:[/red] {what} {item!r} must look like key=value")
            raise typer.Exit(2)
        k, v = item.split("=", 1)
        try:
            out_[k] = json.loads(v)
        except json.JSONDecodeError:
            out_[k] = v
    return out_


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create or migrate the database schema to the newest revision."""
    settings = settings_or_exit(config)
    engine = open_engine(settings.database_url)
    before = current_revision(engine)
    upgrade(engine)
    after = current_revision(engine)
    url = engine.url.render_as_string(hide_password=True)
    if before == after:
        out.print(f"database {url} is up to date (revision {after})")
    else:
        out.print(f"database {url} upgraded from {before or 'empty'} to {after}")


@db_app.command("current")
def db_current(config: ConfigOption = None) -> None:
    """Show the schema revision of the database and the one this parcours needs."""
    settings = settings_or_exit(config)
    engine = open_engine(settings.database_url)
    out.print(f"current: {current_revision(engine) or 'empty'}; needed: {head_revision(engine)}")


def run(
    role: Annotated[str, typer.Option(help="all (API and workers), api or worker")] = "all",
    config: ConfigOption = None,
) -> None:
    """Run the daemon: the HTTP API and the workers (inbox, timers, dispatch, schedules)."""
    from orchestrator.daemon import run as run_daemon
    from orchestrator.logs import configure

    if role not in ("all", "api", "worker"):
        err.print(f"[red]error:[/red] unknown role {role!r}; use all, api or worker")
        raise typer.Exit(2)
    settings = settings_or_exit(config)
    configure(settings.log_format)
    rt = _runtime(settings)
    out.print(
        f"parcours: {len(rt.journeys)} journeys, channels "
        f"{', '.join(sorted(rt.channels)) or 'none'}; role {role}; "
        f"http://{settings.http.host}:{settings.http.port}"
        if role != "worker"
        else f"parcours: {len(rt.journeys)} journeys; role worker"
    )
    run_daemon(rt, role)  # type: ignore[arg-type]


def enroll(
    journey: Annotated[str, typer.Argument(help="journey name")],
    customer: Annotated[str, typer.Argument(help="customer id (userId)")],
    key: Annotated[str, typer.Option(help="enrollment key, e.g. a cart id")] = "",
    prop: Annotated[list[str] | None, typer.Option("--prop", "-p", help="key=value")] = None,
    config: ConfigOption = None,
) -> None:
    """Enroll a customer in a journey by hand (the daemon moves them on from there)."""
    rt = _runtime(settings_or_exit(config), channels=False)
    try:
        eid = rt.engine.enroll(journey, customer, key=key, context=_pairs(prop, "--prop"))
    except EngineError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if eid is None:
        err.print(
            f"not enrolled: {customer} already has a live enrollment in {journey} with "
            "this key, or the journey's re-entry policy refuses it"
        )
        raise typer.Exit(1)
    out.print(f"enrolled {customer} in {journey}: enrollment {eid}")


def send_event(
    customer: Annotated[str, typer.Argument(help="customer id (userId)")],
    event: Annotated[str, typer.Argument(help="event name, or 'identify'")],
    prop: Annotated[list[str] | None, typer.Option("--prop", "-p", help="key=value")] = None,
    trait: Annotated[list[str] | None, typer.Option("--trait", "-t", help="key=value")] = None,
    message_id: Annotated[str | None, typer.Option(help="deduplication id")] = None,
    apply: Annotated[
        bool, typer.Option(help="apply it now instead of leaving it to the daemon")
    ] = True,
    config: ConfigOption = None,
) -> None:
    """Send an event as a website would (track, or identify with --trait)."""
    settings = settings_or_exit(config)
    rt = _runtime(settings, channels=False)
    body: dict[str, Any] = {
        "type": "identify" if event == "identify" else "track",
        "userId": customer,
        "messageId": message_id or f"cli-{uuid.uuid4()}",
        "properties": _pairs(prop, "--prop"),
        "traits": _pairs(trait, "--trait"),
    }
    if event != "identify":
        body["event"] = event
    try:
        ev = EventIn.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "event"
        err.print(f"[red]rejected:[/red] {where}: {first['msg']}; nothing was stored")
        raise typer.Exit(2) from None
    with rt.db.begin() as conn:
        _accepted, dup = record(conn, [ev], rt.clock.now())
    if dup:
        out.print(f"duplicate messageId {ev.message_id}: already recorded, ignored")
        return
    out.print(f"recorded {event} for {customer}")
    if apply:
        n = rt.engine.run_until_idle()
        out.print(f"applied ({n} events and timers processed)")


def status(config: ConfigOption = None) -> None:
    """Live customers per journey and step, due timers, and the outbox."""
    settings = settings_or_exit(config)
    rt = _runtime(settings, channels=False)
    now = rt.clock.now()
    e = t.enrollments.c
    d = t.deliveries.c
    with rt.db.connect() as conn:
        steps = conn.execute(
            select(e.journey, e.state, func.count())
            .where(e.status == "live")
            .group_by(e.journey, e.state)
            .order_by(e.journey, e.state)
        ).all()
        ended = conn.execute(
            select(e.journey, e.exit_reason, func.count())
            .where(e.status == "ended")
            .group_by(e.journey, e.exit_reason)
        ).all()
        due = conn.execute(
            select(func.count()).where(e.status == "live", e.wake_at <= now)
        ).scalar_one()
        pending_timers = conn.execute(
            select(func.count()).where(e.status == "live", e.wake_at.is_not(None))
        ).scalar_one()
        outbox = conn.execute(select(d.status, func.count()).group_by(d.status)).all()
        inbox = conn.execute(
            select(func.count()).where(t.events.c.processed_at.is_(None))
        ).scalar_one()
        paused = {
            r.name
            for r in conn.execute(select(t.journeys.c.name).where(t.journeys.c.status == "paused"))
        }
    table = Table(title="live customers by journey and step")
    table.add_column("journey")
    table.add_column("step")
    table.add_column("live", justify="right")
    for journey, state, count in steps:
        table.add_row(journey + (" (paused)" if journey in paused else ""), state, str(count))
    out.print(table)
    if ended:
        done = Table(title="ended enrollments")
        done.add_column("journey")
        done.add_column("reason")
        done.add_column("count", justify="right")
        for journey, reason, count in ended:
            done.add_row(journey, reason or "", str(count))
        out.print(done)
    out.print(f"timers: {pending_timers} pending, {due} due now")
    out.print(f"inbox: {inbox} unprocessed events")
    out.print("outbox: " + (", ".join(f"{s} {c}" for s, c in sorted(outbox)) or "empty"))


def customer(
    customer_id: Annotated[str, typer.Argument(help="customer id")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    config: ConfigOption = None,
) -> None:
    """A customer's timeline: events, transitions and deliveries, in time order."""
    settings = settings_or_exit(config)
    rt = _runtime(settings, channels=False)
    rows: list[tuple[datetime, str, str]] = []
    with rt.db.connect() as conn:
        cust = conn.execute(select(t.customers).where(t.customers.c.id == customer_id)).first()
        if cust is None:
            err.print(f"no customer {customer_id!r}")
            raise typer.Exit(1)
        for ev in conn.execute(select(t.events).where(t.events.c.customer_id == customer_id)):
            what = ev.name or ev.kind
            detail = json.dumps(ev.properties or ev.traits or {}, ensure_ascii=False)[:120]
            rows.append((ev.occurred_at, "event", f"{what} {detail}"))
        for h in conn.execute(
            select(t.history).where(t.history.c.customer_id == customer_id).order_by(t.history.c.id)
        ):
            rows.append(
                (
                    h.at,
                    "transition",
                    f"{h.journey}: {h.from_state or '(entry)'} -> {h.to_state} [{h.trigger}]",
                )
            )
        for dl in conn.execute(
            select(t.deliveries).where(t.deliveries.c.customer_id == customer_id)
        ):
            extra = f" ({dl.last_error})" if dl.last_error else ""
            rows.append(
                (
                    dl.created_at,
                    "delivery",
                    f"{dl.operation} via {dl.channel} {dl.template or ''} -> {dl.status}"
                    f"{extra} key={dl.idempotency_key}",
                )
            )
    rows.sort(key=lambda r: r[0])
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "customer": {"id": cust.id, "traits": cust.traits, "timezone": cust.timezone},
                    "timeline": [{"at": a.isoformat(), "kind": k, "what": w} for a, k, w in rows],
                }
            )
        )
        return
    out.print(f"customer {cust.id}  traits {json.dumps(cust.traits, ensure_ascii=False)}")
    table = Table()
    table.add_column("at (UTC)")
    table.add_column("kind")
    table.add_column("what")
    for at, kind, what in rows:
        table.add_row(at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), kind, escape(what))
    out.print(table)


def deliveries(
    dead: Annotated[bool, typer.Option("--dead", help="only dead deliveries")] = False,
    limit: Annotated[int, typer.Option(help="at most this many rows")] = 50,
    config: ConfigOption = None,
) -> None:
    """The outbox: deliveries with status, attempts and the last error (dead ones with why)."""
    settings = settings_or_exit(config)
    rt = _runtime(settings, channels=False)
    d = t.deliveries.c
    q = select(t.deliveries).order_by(d.id.desc()).limit(limit)
    if dead:
        q = q.where(d.status == "dead")
    table = Table()
    for col in ("key", "channel", "customer", "status", "attempts", "last error"):
        table.add_column(col)
    with rt.db.connect() as conn:
        for r in conn.execute(q):
            table.add_row(
                r.idempotency_key,
                r.channel,
                r.customer_id,
                r.status,
                str(r.attempts),
                escape(r.last_error or ""),
            )
    out.print(table)


def simulate(
    journey: Annotated[str, typer.Argument(help="journey name")],
    customers: Annotated[int, typer.Option("--customers", "-n", help="population size")] = 1000,
    react: Annotated[
        list[str] | None,
        typer.Option(
            "--react",
            "-r",
            help="channel=probability that a message gets a reaction, e.g. email=0.3 (repeatable)",
        ),
    ] = None,
    convert: Annotated[
        float,
        typer.Option(
            help="probability that a reaction (or an ad exposure) leads to the goal event"
        ),
    ] = 0.3,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same result)")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """Run a synthetic population through a journey on a virtual clock, in a throwaway
    database, and print the funnel per step."""
    from orchestrator.simulate import Simulation, print_report

    settings = settings_or_exit(config)
    load_journeys_or_exit(settings)
    probabilities = {k: float(v) for k, v in _pairs(react, "--react").items()}
    try:
        sim = Simulation(settings, journey, probabilities=probabilities, convert=convert, seed=seed)
    except (KeyError, ValueError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    with sim:
        report = sim.run(customers, progress=not as_json)
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        print_report(report, out)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.command()(run)
    app.command()(enroll)
    app.command("send-event")(send_event)
    app.command()(status)
    app.command()(customer)
    app.command()(deliveries)
    app.command()(simulate)
    from orchestrator.cli_report import report  # parcours report (orchestrator.reports)

    app.command()(report)


__all__ = ["register"]
