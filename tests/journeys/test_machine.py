"""The compiled state machine: one per version, shared by every customer; triggers move a
light StateModel; goal, leave and cancel work from every live step."""

from __future__ import annotations

import pytest

from journeys import StateModel
from journeys.compiler import (
    CANCEL,
    CANCELLED,
    CONVERT,
    CONVERTED,
    EXITED,
    LEAVE,
    InvalidTrigger,
    JourneyVersion,
    compile_journey,
)
from journeys.schema import ExitStep
from tests.journeys.helpers import load

JOURNEY = """\
journey: escalate
entry:
  event: cart_abandoned
goal:
  event: order_completed
exit_on: [email.unsubscribed]
steps:
  - id: mail
    type: send
    channel: email
    template: reminder
  - id: wait
    type: wait
    for: [email.opened, email.clicked]
    timeout: 2d
    on_reaction:
      email.opened: pause
      email.clicked: clicked
    on_timeout: pick
  - id: pick
    type: split
    branches:
      - when: traits.ads_ok == true
        next: ads
    otherwise: test
  - id: test
    type: experiment
    arms:
      - { name: a, weight: 1, next: pause }
      - { name: b, weight: 1, next: clicked }
  - id: ads
    type: send
    channel: retargeting
  - id: pause
    type: delay
    duration: 1d
    next: clicked
  - id: clicked
    type: exit
    reason: clicked
"""


@pytest.fixture(scope="module")
def version() -> JourneyVersion:
    return load(JOURNEY)


def test_one_machine_per_version_and_no_models_attached(version: JourneyVersion) -> None:
    assert version.machine is version.machine
    assert version.machine.models == []
    a, b = StateModel(version.start), StateModel(version.start)
    version.fire(a, "advance")
    assert (a.state, b.state) == ("wait", "mail")
    assert version.machine.models == []
    # the model stays a slotted object with only a state
    assert not hasattr(a, "__dict__")


def test_machine_has_steps_and_terminal_states(version: JourneyVersion) -> None:
    assert set(version.machine.states) == {*version.steps, CONVERTED, EXITED, CANCELLED}
    assert version.machine.initial == version.start == "mail"


@pytest.mark.parametrize(
    ("start", "trigger", "dest"),
    [
        ("mail", "advance", "wait"),
        ("wait", "react:email.opened", "pause"),
        ("wait", "react:email.clicked", "clicked"),
        ("wait", "timeout", "pick"),
        ("pick", "branch:0", "ads"),
        ("pick", "otherwise", "test"),
        ("test", "arm:a", "pause"),
        ("test", "arm:b", "clicked"),
        ("ads", "advance", "pause"),
        ("pause", "advance", "clicked"),
    ],
)
def test_every_edge_is_a_trigger(
    version: JourneyVersion, start: str, trigger: str, dest: str
) -> None:
    model = StateModel(start)
    assert version.fire(model, trigger) == dest == model.state
    assert version.target(start, trigger) == dest


def test_edges_match_the_machine(version: JourneyVersion) -> None:
    for e in version.edges:
        model = StateModel(e.source)
        assert version.fire(model, e.trigger) == e.target


@pytest.mark.parametrize(
    ("trigger", "terminal"), [(CONVERT, CONVERTED), (LEAVE, EXITED), (CANCEL, CANCELLED)]
)
def test_goal_leave_cancel_from_every_live_step(
    version: JourneyVersion, trigger: str, terminal: str
) -> None:
    live = [sid for sid, s in version.steps.items() if not isinstance(s, ExitStep)]
    assert live == ["mail", "wait", "pick", "test", "ads", "pause"]
    for sid in live:
        model = StateModel(sid)
        assert version.fire(model, trigger) == terminal


@pytest.mark.parametrize("trigger", [CONVERT, LEAVE, CANCEL, "advance"])
def test_exit_steps_and_terminals_accept_nothing(version: JourneyVersion, trigger: str) -> None:
    for state in ("clicked", CONVERTED, EXITED, CANCELLED):
        model = StateModel(state)
        with pytest.raises(InvalidTrigger):
            version.fire(model, trigger)
        assert model.state == state


def test_invalid_triggers_raise_and_leave_the_state(version: JourneyVersion) -> None:
    model = StateModel("wait")
    with pytest.raises(InvalidTrigger, match="Can't trigger event advance from state wait"):
        version.fire(model, "advance")
    with pytest.raises(InvalidTrigger, match="journey 'escalate' has no trigger 'explode'"):
        version.fire(model, "explode")
    with pytest.raises(InvalidTrigger, match="does not leave step 'wait'"):
        version.target("wait", "advance")
    assert model.state == "wait"


def test_version_accessors(version: JourneyVersion) -> None:
    assert version.ends == ("clicked",)
    assert [s.id for s in version.sends()] == ["mail", "ads"]
    assert [s.id for s in version.waits()] == ["wait"]
    assert version.describe()["steps"] == list(version.steps)
    assert version.condition(("steps", 2, "branches", 0, "when")).source == "traits.ads_ok == true"
    with pytest.raises(TypeError):
        version.steps["x"] = version.steps["mail"]  # type: ignore[index]


def test_compile_journey_without_validator_conditions(version: JourneyVersion) -> None:
    again = compile_journey(version.definition, "elsewhere.yaml")
    assert again.version == version.version
    assert set(again.conditions) == set(version.conditions)
    assert again.machine is not version.machine


def test_machines_are_independent_between_versions() -> None:
    a = load(JOURNEY)
    b = load(JOURNEY.replace("duration: 1d", "duration: 2d"))
    assert a.version != b.version
    assert a.machine is not b.machine


def test_a_whole_path_through_the_journey(version: JourneyVersion) -> None:
    model = StateModel(version.start)
    for trigger in ("advance", "timeout", "otherwise", "arm:a", "advance"):
        version.fire(model, trigger)
    assert model.state == "clicked"


def test_global_triggers_leave_the_state_the_model_is_in() -> None:
    v = load(JOURNEY)
    left: list[str] = []
    for sid in ("mail", "wait"):
        v.machine.get_state(sid).add_callback("exit", lambda *a, sid=sid: left.append(sid))
    # State callbacks run on the library path only; the engine's machines have none.
    model = StateModel("wait")
    v.fire_via_transitions(model, CONVERT)
    assert (model.state, left) == (CONVERTED, ["wait"])
    model = StateModel("mail")
    v.fire_via_transitions(model, CANCEL)
    assert (model.state, left) == (CANCELLED, ["wait", "mail"])


def test_fire_matches_the_transitions_library_for_every_state_and_trigger() -> None:
    """``JourneyVersion.fire`` reads the machine's transition table directly; it must land
    exactly where ``transitions``' own ``Event.trigger`` does, and refuse the same moves."""
    from pathlib import Path

    from journeys import Catalog, load_paths
    from journeys.compiler import InvalidTrigger, StateModel

    examples = Path(__file__).resolve().parents[2] / "journeys" / "examples"
    for version in load_paths([examples], Catalog()):
        states = list(version.machine.states)
        for trigger in version.machine.events:
            for state in states:
                fast, slow = StateModel(state), StateModel(state)
                try:
                    expected: str | None = version.fire_via_transitions(slow, trigger)
                except InvalidTrigger:
                    expected = None
                try:
                    got: str | None = version.fire(fast, trigger)
                except InvalidTrigger:
                    got = None
                assert got == expected, (version.name, state, trigger)
