"""Compiling a validated journey into an immutable ``JourneyVersion``.

A version is identified by a hash of the journey's canonical form (its normalised JSON, not
the file's bytes), so reformatting a file or reordering keys does not create a new version
but any change of behaviour does. Each version holds exactly one ``transitions.Machine``,
built once with ``model=None`` and ``auto_transitions=False``; the engine fires triggers
for a customer with ``machine.events[name].trigger(model)`` on a light model that carries
the state. Never a machine or ``add_model`` per customer (see DESIGN.md for the numbers).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson
from transitions import Machine, MachineError, Transition

from journeys.conditions import Condition, compile_condition
from journeys.schema import ExitStep, Journey, SendStep, WaitStep
from journeys.validate import AnyStep, Edge, edges
from journeys.yamlsource import Path

CONVERTED = "@converted"
EXITED = "@exited"
CANCELLED = "@cancelled"
TERMINALS = (CONVERTED, EXITED, CANCELLED)

#: Triggers every live step accepts.
CONVERT, LEAVE, CANCEL = "convert", "leave", "cancel"


class StateModel:
    """The light object a trigger moves: just the state. Slotted to stay a few dozen bytes."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


class InvalidTrigger(RuntimeError):
    """A trigger that the current state does not accept (a bug or a stale event)."""


def canonical_json(journey: Journey) -> str:
    """The canonical form a version hash is taken over: normalised values (``48h`` and
    ``2d`` are one duration), sorted keys, and no fields left at their default. Leaving
    defaults out means writing a default explicitly changes nothing, and a parcours upgrade
    that adds an optional field does not give every deployed journey a new version (which
    would split new entrants from old ones for no change in behaviour)."""
    data = journey.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()


def version_id(journey: Journey) -> str:
    return hashlib.sha256(canonical_json(journey).encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class JourneyVersion:
    """One immutable, compiled journey version. Customers stay on the version they entered."""

    name: str
    version: str
    definition: Journey
    source: str
    machine: Machine
    start: str
    steps: Mapping[str, AnyStep]
    edges: tuple[Edge, ...]
    #: Compiled conditions by their path in the journey file.
    conditions: Mapping[Path, Condition] = field(default_factory=dict)
    #: Each step's position in the file: condition paths are ``("steps", position, ...)``.
    positions: Mapping[str, int] = field(default_factory=dict)

    def fire(self, model: StateModel, trigger: str) -> str:
        """Fire ``trigger`` on ``model`` on the shared machine; return the new state.

        Our machines carry no conditions and no callbacks (``build_machine`` adds none), so
        firing is: the machine's own transition registered for (current state, trigger)
        decides the destination. We read it from ``machine.events[trigger].transitions``
        instead of running ``Event.trigger``, whose generic queue, event data, callback
        chains and debug logging cost about 20 microseconds a trigger for nothing here
        (a third of a timer's cost on the engine's hot path). ``fire_via_transitions``
        keeps the library path, and a test asserts both agree for every state and trigger.
        """
        event = self.machine.events.get(trigger)
        if event is None:
            raise InvalidTrigger(f"journey {self.name!r} has no trigger {trigger!r}")
        found = event.transitions.get(model.state)
        if not found:
            raise InvalidTrigger(f"Can't trigger event {trigger} from state {model.state}!")
        dest = found[0].dest
        assert dest is not None  # no internal transitions in a journey machine
        model.state = dest
        return dest

    def fire_via_transitions(self, model: StateModel, trigger: str) -> str:
        """The same move through ``transitions``' ``Event.trigger`` (reference path)."""
        event = self.machine.events.get(trigger)
        if event is None:
            raise InvalidTrigger(f"journey {self.name!r} has no trigger {trigger!r}")
        try:
            event.trigger(model)
        except MachineError as exc:
            raise InvalidTrigger(str(exc)) from None
        return model.state

    def step(self, step_id: str) -> AnyStep:
        return self.steps[step_id]

    def target(self, step_id: str, trigger: str) -> str:
        """Where ``trigger`` leads from ``step_id``, without firing it (for previews)."""
        for e in self.edges:
            if e.source == step_id and e.trigger == trigger:
                return e.target
        raise InvalidTrigger(f"{trigger!r} does not leave step {step_id!r}")

    def condition(self, path: Path) -> Condition:
        return self.conditions[path]

    @property
    def ends(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.steps.values() if isinstance(s, ExitStep))

    def sends(self) -> tuple[SendStep, ...]:
        return tuple(s for s in self.steps.values() if isinstance(s, SendStep))

    def waits(self) -> tuple[WaitStep, ...]:
        return tuple(s for s in self.steps.values() if isinstance(s, WaitStep))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "steps": list(self.steps),
        }


_NO_CALLBACKS: Any = ()  # typed as the lists it stands in for


class _Transition(Transition):
    """A transition without callbacks shares one empty tuple for its callback lists.

    transitions gives every Transition four lists; a 20-step journey has ~80 transitions
    (most of them convert/leave/cancel from every live step), so a thousand journeys kept
    over 300,000 empty lists alive for the garbage collector to walk. Journey machines have
    no callbacks (the engine performs a step's effects itself); with callbacks the normal
    behaviour applies.
    """

    def __init__(
        self,
        source: str,
        dest: str,
        conditions: Any = None,
        unless: Any = None,
        before: Any = None,
        after: Any = None,
        prepare: Any = None,
    ) -> None:
        if conditions is unless is before is after is prepare is None:
            self.source = source
            self.dest = dest
            self.prepare = self.before = self.after = self.conditions = _NO_CALLBACKS
        else:
            super().__init__(source, dest, conditions, unless, before, after, prepare)

    def _change_state(self, event_data: Any) -> None:
        # Leave the state the model is actually in: one "from every live step" transition
        # is shared by all its sources (see ``build_machine``), so ``self.source`` is "*".
        machine = event_data.machine
        machine.get_state(event_data.state.name).exit(event_data)
        machine.set_state(self.dest, event_data.model)
        event_data.update(getattr(event_data.model, machine.model_attribute))
        dest = machine.get_state(self.dest)
        dest.enter(event_data)
        if dest.final:
            machine.callbacks(machine.on_final, event_data)


class JourneyMachine(Machine):
    """The transitions Machine of one journey version (see ``_Transition``)."""

    transition_cls = _Transition


def build_machine(journey: Journey, graph: tuple[Edge, ...]) -> Machine:
    """One Machine for the version: steps plus terminal states; goal, exit-event and manual
    cancel transitions from every live step."""
    live = [s.id for s in journey.steps if not isinstance(s, ExitStep)]
    states = [s.id for s in journey.steps] + list(TERMINALS)
    machine = JourneyMachine(
        model=None,
        states=states,
        initial=journey.steps[0].id,
        auto_transitions=False,
        send_event=False,
    )
    # ``Machine.add_transition`` re-checks every source and destination name, and the three
    # "from every live step" triggers would be one transition per step; that was a third of
    # the compile time of a large set. Every name here is a state we just created, so the
    # events are built directly, and each global trigger has one transition object listed
    # under every live step (``_Transition._change_state`` leaves the model's real state).
    events = machine.events
    for e in graph:
        event = events.get(e.trigger)
        if event is None:
            event = events[e.trigger] = machine._create_event(e.trigger, machine)
        event.add_transition(machine._create_transition(e.source, e.target))
    if live:
        for trigger, dest in ((CONVERT, CONVERTED), (LEAVE, EXITED), (CANCEL, CANCELLED)):
            event = events[trigger] = machine._create_event(trigger, machine)
            # one immutable tuple for every source: no per-step list for the collector to walk
            shared = (machine._create_transition("*", dest),)
            for source in live:
                event.transitions[source] = shared  # type: ignore[assignment]
    return machine


def compile_journey(
    journey: Journey,
    source: str,
    conditions: Mapping[Path, Condition] | None = None,
    graph: tuple[Edge, ...] | None = None,
) -> JourneyVersion:
    """Compile a journey that has passed validation (``conditions`` and ``graph``, when the
    validator already computed them, are reused rather than rebuilt)."""
    if graph is None:
        graph = tuple(edges(journey))
    compiled = dict(conditions or {})
    if not compiled:
        from journeys.catalog import Catalog
        from journeys.validate import Validator
        from journeys.yamlsource import SourceMap

        v = Validator(journey, SourceMap(source), Catalog())
        for path, text in v.condition_sites():
            compiled[path] = compile_condition(text)
    return JourneyVersion(
        name=journey.journey,
        version=version_id(journey),
        definition=journey,
        source=source,
        machine=build_machine(journey, graph),
        start=journey.steps[0].id,
        steps=MappingProxyType({s.id: s for s in journey.steps}),
        edges=graph,
        conditions=MappingProxyType(compiled),
        positions=MappingProxyType({st.id: i for i, st in enumerate(journey.steps)}),
    )
