"""Checks that need the whole journey and the configuration: the mistakes a designer makes
that a schema cannot see.

Each check appends problems rather than raising, so one run reports everything. The graph
helpers here (edges, reachability, the owned-first rule) are reused by the compiler and the
diagram renderer, so a step's successors are computed in exactly one place.
"""

from __future__ import annotations

import difflib
import zoneinfo
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from journeys.catalog import BUILTIN_EVENTS, Catalog
from journeys.conditions import Condition, compile_condition
from journeys.durations import format_duration
from journeys.errors import ConditionError, Problem
from journeys.schema import (
    DelayStep,
    ExitStep,
    ExperimentStep,
    Journey,
    SendStep,
    SplitStep,
    WaitStep,
)
from journeys.yamlsource import Path, SourceMap

AnyStep = SendStep | WaitStep | DelayStep | SplitStep | ExperimentStep | ExitStep
INSTANT = (SendStep, SplitStep, ExperimentStep)


@dataclass(frozen=True, slots=True)
class Edge:
    """A possible move from one step to another, with the trigger that makes it."""

    source: str
    target: str
    trigger: str
    kind: str  # next | reaction | timeout | branch | otherwise | arm
    label: str
    path: Path  # where the target is written, for error positions


def suggest(word: str, options: list[str] | set[str] | frozenset[str]) -> str:
    close = difflib.get_close_matches(word, sorted(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def listing(options: list[str] | set[str] | frozenset[str]) -> str:
    return ", ".join(sorted(options)) if options else "none"


def implicit_next(journey: Journey, index: int) -> str | None:
    """The step after ``index`` in file order: the default ``next`` of send and delay."""
    return journey.steps[index + 1].id if index + 1 < len(journey.steps) else None


def edges(journey: Journey) -> Iterator[Edge]:
    """Every edge of the journey graph (targets may be unknown; the validator checks)."""
    for i, step in enumerate(journey.steps):
        base: Path = ("steps", i)
        if isinstance(step, (SendStep, DelayStep)):
            target = step.next or implicit_next(journey, i)
            if target is not None:
                yield Edge(step.id, target, "advance", "next", "", (*base, "next"))
        elif isinstance(step, WaitStep):
            if isinstance(step.on_reaction, dict):
                for ev, target in step.on_reaction.items():
                    yield Edge(
                        step.id, target, f"react:{ev}", "reaction", ev, (*base, "on_reaction", ev)
                    )
            elif step.on_reaction is not None:
                label = " / ".join(m.event for m in step.for_)
                yield Edge(
                    step.id, step.on_reaction, "react", "reaction", label, (*base, "on_reaction")
                )
            if step.on_timeout is not None:
                label = f"no reaction in {_fmt(step)}"
                yield Edge(
                    step.id, step.on_timeout, "timeout", "timeout", label, (*base, "on_timeout")
                )
        elif isinstance(step, SplitStep):
            for j, br in enumerate(step.branches):
                yield Edge(
                    step.id,
                    br.next,
                    f"branch:{j}",
                    "branch",
                    br.when,
                    (*base, "branches", j, "next"),
                )
            yield Edge(
                step.id, step.otherwise, "otherwise", "otherwise", "otherwise", (*base, "otherwise")
            )
        elif isinstance(step, ExperimentStep):
            for j, arm in enumerate(step.arms):
                label = f"{arm.name} {arm.weight:g}" + (" (control)" if arm.control else "")
                yield Edge(
                    step.id, arm.next, f"arm:{arm.name}", "arm", label, (*base, "arms", j, "next")
                )


def _fmt(step: WaitStep) -> str:
    return format_duration(step.timeout) if step.timeout else "?"


def reachable(
    start: str, adjacency: dict[str, list[Edge]], skip: set[Edge] | None = None
) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for e in adjacency.get(todo.pop(), []):
            if skip and e in skip:
                continue
            if e.target not in seen:
                seen.add(e.target)
                todo.append(e.target)
    return seen


def preceding_sends(
    step_id: str, steps: dict[str, AnyStep], reverse: dict[str, list[Edge]]
) -> set[str]:
    """The send steps whose message can be 'the message just sent' when entering ``step_id``:
    walk backwards through delays, splits and experiments, stopping at sends and waits."""
    found: set[str] = set()
    seen: set[str] = set()
    todo = [step_id]
    while todo:
        for e in reverse.get(todo.pop(), []):
            src = steps.get(e.source)
            if src is None or e.source in seen:
                continue
            seen.add(e.source)
            if isinstance(src, SendStep):
                found.add(src.id)
            elif not isinstance(src, WaitStep):
                todo.append(src.id)
    return found


class Validator:
    """Runs every semantic check of one journey and collects the problems."""

    def __init__(self, journey: Journey, smap: SourceMap, catalog: Catalog) -> None:
        self.j = journey
        self.smap = smap
        self.catalog = catalog
        self.problems: list[Problem] = []
        self.conditions: dict[Path, Condition] = {}
        #: Every edge of the journey graph, once ``run`` has been called.
        self.edges: tuple[Edge, ...] = ()

    def add(self, path: Path, message: str, *, key: bool = False, offset: int = 0) -> None:
        self.problems.append(self.smap.problem(path, message, key=key, offset=offset))

    def run(self) -> list[Problem]:
        steps = self.check_ids()
        all_edges = list(edges(self.j))
        self.edges = tuple(all_edges)
        self.check_targets(steps, all_edges)
        self.check_waits()
        known = [e for e in all_edges if e.target in steps]
        adjacency: dict[str, list[Edge]] = {}
        reverse: dict[str, list[Edge]] = {}
        for e in known:
            adjacency.setdefault(e.source, []).append(e)
            reverse.setdefault(e.target, []).append(e)
        self.check_reachable(steps, adjacency)
        self.check_instant_loops(steps, adjacency)
        self.check_channels()
        self.check_conditions()
        self.check_events(steps, reverse)
        self.check_owned_first(steps, adjacency, reverse)
        self.check_timezones()
        return self.problems

    # -- structure -------------------------------------------------------------------
    def check_ids(self) -> dict[str, AnyStep]:
        steps: dict[str, AnyStep] = {}
        for i, step in enumerate(self.j.steps):
            if step.id in steps:
                self.add(
                    ("steps", i, "id"),
                    f"duplicate step id {step.id!r}: step ids must be unique within a journey",
                )
                continue
            steps[step.id] = step
        return steps

    def check_targets(self, steps: dict[str, AnyStep], all_edges: list[Edge]) -> None:
        for i, step in enumerate(self.j.steps):
            if (
                isinstance(step, (SendStep, DelayStep))
                and step.next is None
                and implicit_next(self.j, i) is None
            ):
                self.add(
                    ("steps", i),
                    f"step {step.id!r} is the last step and has no next: "
                    "add 'next: <step>' or end the journey with an exit step",
                )
        for e in all_edges:
            if e.target not in steps:
                self.add(
                    e.path,
                    f"step {e.source!r} goes to unknown step {e.target!r}"
                    f"{suggest(e.target, set(steps))}; steps are: {listing(set(steps))}",
                )

    def check_waits(self) -> None:
        for i, step in enumerate(self.j.steps):
            if not isinstance(step, WaitStep):
                continue
            p: Path = ("steps", i)
            if step.timeout is None:
                self.add(
                    p,
                    f"wait step {step.id!r} has no timeout: a customer who never reacts "
                    "would wait forever; add e.g. 'timeout: 2d' and 'on_timeout: <step>'",
                )
            if step.on_timeout is None:
                self.add(
                    p,
                    f"wait step {step.id!r} has no on_timeout: say where customers go "
                    "when nothing happens",
                )
            if step.on_reaction is None:
                self.add(
                    p,
                    f"wait step {step.id!r} has no on_reaction: say where customers "
                    "go when they react",
                )
            if isinstance(step.on_reaction, dict):
                waited = {m.event for m in step.for_}
                for ev in step.on_reaction:
                    if ev not in waited:
                        self.add(
                            (*p, "on_reaction", ev),
                            f"on_reaction names {ev!r}, which this "
                            f"wait does not wait for; it waits for: {listing(waited)}",
                            key=True,
                        )
                for ev in waited - set(step.on_reaction):
                    self.add((*p, "on_reaction"), f"on_reaction has no target for {ev!r}")

    def check_reachable(self, steps: dict[str, AnyStep], adjacency: dict[str, list[Edge]]) -> None:
        seen = reachable(self.j.steps[0].id, adjacency)
        for i, step in enumerate(self.j.steps):
            if step.id not in seen:
                self.add(
                    ("steps", i, "id"),
                    f"step {step.id!r} is unreachable: no step leads "
                    "to it from the first step; connect it or remove it",
                )

    def check_instant_loops(
        self, steps: dict[str, AnyStep], adjacency: dict[str, list[Edge]]
    ) -> None:
        """A cycle made only of sends, splits and experiments would spin forever (and spam)."""
        # A delay with only ``until`` passes at once when the window is already open, so it
        # does not stop a loop from spinning during opening hours.
        instant = {
            sid
            for sid, s in steps.items()
            if isinstance(s, INSTANT) or (isinstance(s, DelayStep) and s.duration is None)
        }
        index = {s.id: i for i, s in reversed(list(enumerate(self.j.steps)))}
        color: dict[str, int] = {}  # 1: on the current path, 2: done
        reported: set[frozenset[str]] = set()
        # Iterative depth-first search: a long chain of sends must not hit the recursion
        # limit, and a recursive closure would be a reference cycle kept until the next GC.
        for root in sorted(instant):
            if root in color:
                continue
            path = [root]
            color[root] = 1
            todo = [iter(adjacency.get(root, []))]
            while todo:
                e = next(todo[-1], None)
                if e is None:
                    todo.pop()
                    color[path.pop()] = 2
                    continue
                if e.target not in instant:
                    continue
                state = color.get(e.target)
                if state == 1:
                    cycle = path[path.index(e.target) :]
                    key = frozenset(cycle)
                    if key not in reported:
                        reported.add(key)
                        loop = " -> ".join([*cycle, e.target])
                        self.add(
                            ("steps", index[e.target], "id"),
                            f"steps {loop} form a loop with no wait "
                            "or delay: customers would go round it forever; put a wait "
                            "or a delay with a duration in the loop (a delay with only "
                            "'until' passes at once while its window is open)",
                        )
                elif state is None:
                    color[e.target] = 1
                    path.append(e.target)
                    todo.append(iter(adjacency.get(e.target, [])))

    # -- configuration ---------------------------------------------------------------
    def check_channels(self) -> None:
        chans = self.catalog.channels
        tmpls = self.catalog.templates
        for i, step in enumerate(self.j.steps):
            if not isinstance(step, SendStep):
                continue
            p: Path = ("steps", i)
            if chans is not None and step.channel not in chans:
                self.add(
                    (*p, "channel"),
                    f"unknown channel {step.channel!r}"
                    f"{suggest(step.channel, set(chans))}; configured channels: "
                    f"{listing(set(chans))}",
                )
            info = chans.get(step.channel) if chans is not None else None
            if info is not None and info.needs_template and step.template is None:
                self.add(p, f"send step {step.id!r} on channel {step.channel!r} needs a template")
            names = [((*p, "template"), step.template)] + [
                ((*p, "variants", j, "template"), v.template) for j, v in enumerate(step.variants)
            ]
            for path, name in names:
                if name is not None and tmpls is not None and name not in tmpls:
                    self.add(
                        path,
                        f"unknown template {name!r}{suggest(name, tmpls)}; templates "
                        f"are: {listing(tmpls)}",
                    )

    def condition_sites(self) -> Iterator[tuple[Path, str]]:
        j = self.j
        if j.entry.where:
            yield ("entry", "where"), j.entry.where
        if j.entry.condition:
            yield ("entry", "condition"), j.entry.condition
        if j.goal and j.goal.where:
            yield ("goal", "where"), j.goal.where
        for k, m in enumerate(j.exit_on):
            if m.where:
                yield ("exit_on", k, "where"), m.where
        for name, text in j.segments.items():
            yield ("segments", name), text
        for i, step in enumerate(j.steps):
            if isinstance(step, SendStep):
                for k, v in enumerate(step.variants):
                    yield ("steps", i, "variants", k, "when"), v.when
            elif isinstance(step, SplitStep):
                for k, b in enumerate(step.branches):
                    yield ("steps", i, "branches", k, "when"), b.when
            elif isinstance(step, WaitStep):
                for k, m in enumerate(step.for_):
                    if m.where:
                        yield ("steps", i, "for", k, "where"), m.where

    def check_conditions(self) -> None:
        segments = set(self.j.segments) | set(self.catalog.segments)
        for path, text in self.condition_sites():
            try:
                cond = compile_condition(text)
            except ConditionError as exc:
                self.add(path, f"bad condition: {exc}", offset=exc.offset)
                continue
            self.conditions[path] = cond
            for ev in sorted(cond.events):
                why = self.known_event(ev)
                if why:
                    self.add(
                        path,
                        f"the condition counts event {ev!r}, which can never arrive: {why}",
                    )
            for seg in sorted(cond.segments - segments):
                self.add(
                    path,
                    f"unknown segment {seg!r}{suggest(seg, segments)}; segments are: "
                    f"{listing(segments)}",
                )
        self.check_segment_cycles()

    def check_segment_cycles(self) -> None:
        """A segment defined through itself (``a: segment('b')``, ``b: segment('a')``) has
        no answer: evaluating it would recurse forever."""
        refs: dict[str, frozenset[str]] = {}
        for name, text in self.catalog.segments.items():
            try:
                refs[name] = compile_condition(text).segments
            except ConditionError:
                refs[name] = frozenset()
        for name in self.j.segments:
            cond = self.conditions.get(("segments", name))
            refs[name] = cond.segments if cond else frozenset()
        for name in sorted(self.j.segments):
            cycle = segment_cycle(name, refs)
            if cycle:
                self.add(
                    ("segments", name),
                    f"segment {name!r} is defined through itself ({' -> '.join(cycle)}); "
                    "break the circle",
                )

    def known_event(self, name: str) -> str | None:
        """None if ``name`` can arrive, else why it cannot."""
        if name in BUILTIN_EVENTS:
            return None
        prefix = name.split(".", 1)[0]
        medium_events = self.catalog.medium_events
        if "." in name and prefix in medium_events:
            if name not in medium_events[prefix]:
                return (
                    f"{prefix} channels produce only: {listing(medium_events[prefix])}"
                    f"{suggest(name, medium_events[prefix])}"
                )
            if self.catalog.channels is not None and prefix not in self.catalog.media():
                return f"no {prefix} channel is configured"
            return None
        plan = self.catalog.events
        if plan is not None and name not in plan:
            return (
                "it is neither in the tracking plan ([events] known in the config) nor "
                f"produced by a configured channel{suggest(name, plan)}"
            )
        return None

    def check_events(self, steps: dict[str, AnyStep], reverse: dict[str, list[Edge]]) -> None:
        j = self.j
        sites: list[tuple[Path, str, str]] = []
        if j.entry.event:
            sites.append((("entry", "event"), j.entry.event, "entry event"))
        if j.goal:
            sites.append((("goal", "event"), j.goal.event, "goal event"))
        for k, m in enumerate(j.exit_on):
            sites.append((("exit_on", k), m.event, "exit event"))
        for i, step in enumerate(j.steps):
            if isinstance(step, WaitStep):
                for k, m in enumerate(step.for_):
                    sites.append((("steps", i, "for", k), m.event, f"wait {step.id!r} event"))
        for path, name, what in sites:
            why = self.known_event(name)
            if why:
                self.add(path, f"{what} {name!r} can never arrive: {why}")
        if j.goal and any(m.event == j.goal.event and m.where is None for m in j.exit_on):
            self.add(
                ("goal", "event"),
                f"{j.goal.event!r} is both the goal and an exit event; "
                "a conversion would be counted as an exit",
            )
        chans = self.catalog.channels or {}
        for i, step in enumerate(j.steps):
            if not isinstance(step, WaitStep) or not step.match_message:
                continue
            sends = preceding_sends(step.id, steps, reverse)
            if not sends:
                self.add(
                    ("steps", i, "match_message"),
                    f"wait {step.id!r} matches the message "
                    "just sent, but no send step comes before it",
                )
                continue
            for m_i, m in enumerate(step.for_):
                for sid in sorted(sends):
                    send = steps[sid]
                    assert isinstance(send, SendStep)
                    info = chans.get(send.channel)
                    if info and not m.event.startswith(info.medium + "."):
                        self.add(
                            ("steps", i, "for", m_i),
                            f"wait {step.id!r} waits for "
                            f"{m.event!r} about the message from {sid!r}, "
                            f"{_article(info.medium)} {info.medium} message: that event can "
                            "never arrive for it; wait for "
                            f"{listing(self.catalog.medium_events.get(info.medium, frozenset()))}",
                        )

    # -- the owned-first rule ----------------------------------------------------------
    def check_owned_first(
        self,
        steps: dict[str, AnyStep],
        adjacency: dict[str, list[Edge]],
        reverse: dict[str, list[Edge]],
    ) -> None:
        """A paid step must only be reachable through the no-reaction (timeout) edge of a wait
        that follows owned messages only. We remove those edges and look whether the paid
        step is still reachable: if so, some path gets there without an owned channel first."""
        chans = self.catalog.channels
        if not self.j.owned_first or chans is None:
            return
        paid = {
            sid
            for sid, s in steps.items()
            if isinstance(s, SendStep) and s.channel in chans and chans[s.channel].kind == "paid"
        }
        if not paid:
            return
        owned_timeouts: set[Edge] = set()
        for sid, s in steps.items():
            if isinstance(s, WaitStep):
                sends = preceding_sends(sid, steps, reverse)
                if sends and all(
                    isinstance(snd := steps[x], SendStep)
                    and snd.channel in chans
                    and chans[snd.channel].kind == "owned"
                    for x in sends
                ):
                    owned_timeouts |= {e for e in adjacency.get(sid, []) if e.kind == "timeout"}
        seen = reachable(self.j.steps[0].id, adjacency, skip=owned_timeouts)
        for i, s in enumerate(self.j.steps):
            if s.id in paid and s.id in seen:
                assert isinstance(s, SendStep)
                self.add(
                    ("steps", i, "channel"),
                    f"paid channel step {s.id!r} (channel "
                    f"{s.channel!r}) can be reached without an owned channel getting no "
                    "reaction first: reach it only through the on_timeout of a wait after "
                    "an email or site message, or set 'owned_first: false' on the journey",
                )

    def check_timezones(self) -> None:
        pairs: list[tuple[Path, str]] = [(("entry", "timezone"), self.j.entry.timezone)]
        if self.j.quiet_hours:
            pairs.append((("quiet_hours", "default_timezone"), self.j.quiet_hours.default_timezone))
        for path, tz in pairs:
            try:
                zoneinfo.ZoneInfo(tz)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                self.add(
                    path,
                    f"unknown timezone {tz!r}: use an IANA name such as Europe/Amsterdam or UTC",
                )


def segment_cycle(start: str, refs: Mapping[str, frozenset[str]]) -> list[str] | None:
    """The path from ``start`` back to itself through segment references, if any."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(refs.get(node, frozenset())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None
