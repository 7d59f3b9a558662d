"""The journey format as pydantic models: the single source of truth for what a journey file
may contain. The same models produce ``parcours schema`` (JSON Schema for editors), so the
documentation and the checker can never drift apart.

Structural checks live here (types, required fields, unknown keys, durations, cron syntax);
checks that need the whole journey or the configuration (step targets, reachability, the
owned-first rule, known channels and templates) live in ``journeys.validate``.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from journeys.durations import DURATION_HELP, format_duration, parse_duration

STEP_ID = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
EVENT_NAME = r"^[A-Za-z][A-Za-z0-9_.:-]{0,127}$"

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+[smhdw])+$", "description": DURATION_HELP}),
]
StepId = Annotated[str, Field(pattern=STEP_ID, description="the id of a step in this journey")]
EventName = Annotated[str, Field(pattern=EVENT_NAME, description="an event name")]
ConditionText = Annotated[
    str,
    Field(
        min_length=1,
        description="a condition, e.g. traits.country == 'NL' (see docs/conditions.md)",
    ),
]

_CRON_FIELDS = 5
_REENTRY = re.compile(r"^(never|always|after\s+(\S+))$")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EventMatch(_Model):
    """An event name, optionally filtered on its properties."""

    event: EventName
    where: ConditionText | None = None


def _event_match(value: Any) -> Any:
    return {"event": value} if isinstance(value, str) else value


# The shorthand (a bare event name) must be in the JSON Schema too, or editors flag every
# ``for: [email.opened]`` in the examples as an error.
EventRef = Annotated[
    EventMatch, BeforeValidator(_event_match, json_schema_input_type=EventName | EventMatch)
]


def parse_window(text: str) -> tuple[time, time]:
    """``"09:00-17:30"`` -> (start, end). An end before the start wraps past midnight."""
    m = _WINDOW.match(text.strip())
    if not m:
        raise ValueError(f"invalid time window {text!r}: write HH:MM-HH:MM, e.g. 09:00-17:30")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    end = time(23, 59, 59) if h2 == 24 else time(h2, m2)
    return time(h1, m1), end


class TimeWindow(_Model):
    """A local time window in the customer's timezone, e.g. ``09:00-18:00`` on weekdays."""

    window: str = Field(description="HH:MM-HH:MM in the customer's local time")
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None

    @field_validator("window")
    @classmethod
    def _check_window(cls, v: str) -> str:
        parse_window(v)
        return v.strip()


def _window(value: Any) -> Any:
    return {"window": value} if isinstance(value, str) else value


Window = Annotated[
    TimeWindow,
    BeforeValidator(
        _window,
        json_schema_input_type=Annotated[str, Field(description="HH:MM-HH:MM")] | TimeWindow,
    ),
]


class Entry(_Model):
    """How customers enter: exactly one of ``event``, ``condition`` (on its own: entered when
    a trait change makes it true), ``schedule`` (cron, over ``condition``) or ``manual``."""

    event: EventName | None = None
    where: ConditionText | None = Field(None, description="filter on the entry event")
    condition: ConditionText | None = Field(None, description="a condition over traits/history")
    schedule: str | None = Field(None, description="cron: minute hour day month weekday")
    timezone: str = Field("UTC", description="timezone of the schedule")
    manual: bool = False
    reentry: str = Field("never", description="never | always | after <duration>")
    key: str | None = Field(
        None, description="one live enrollment per value of this field, e.g. properties.cart_id"
    )

    @field_validator("schedule")
    @classmethod
    def _check_cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from apscheduler.triggers.cron import CronTrigger

        if len(v.split()) != _CRON_FIELDS:
            raise ValueError(
                f"invalid cron {v!r}: five fields are needed (minute hour day month weekday),"
                " e.g. '0 9 * * mon'"
            )
        try:
            CronTrigger.from_crontab(v)
        except ValueError as exc:
            raise ValueError(f"invalid cron {v!r}: {exc}") from None
        return v

    @field_validator("reentry")
    @classmethod
    def _check_reentry(cls, v: str) -> str:
        m = _REENTRY.match(v.strip())
        if not m:
            raise ValueError(f"invalid reentry {v!r}: use never, always or 'after 30d'")
        if m.group(2):
            parse_duration(m.group(2))
        return v.strip()

    @field_validator("key")
    @classmethod
    def _check_key(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^(properties|traits)(\.[A-Za-z0-9_-]+)+$", v):
            raise ValueError(
                f"invalid key {v!r}: name an event property or trait, e.g. properties.cart_id"
            )
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> Entry:
        kinds = [
            k
            for k, on in (
                ("event", self.event is not None),
                ("schedule", self.schedule is not None),
                ("manual", self.manual),
            )
            if on
        ]
        if not kinds and self.condition is None:
            raise ValueError(
                "an entry needs one of: event, condition, schedule (with condition) or manual"
            )
        if len(kinds) > 1:
            raise ValueError(f"an entry has exactly one trigger; found {' and '.join(kinds)}")
        if self.where is not None and self.event is None:
            raise ValueError("'where' filters the entry event; use 'condition' for traits")
        if self.event is not None and self.condition is not None:
            raise ValueError("use 'where' to filter an event entry, not 'condition'")
        return self

    @property
    def reentry_after(self) -> timedelta | None:
        m = _REENTRY.match(self.reentry)
        return parse_duration(m.group(2)) if m and m.group(2) else None

    @property
    def kind(self) -> Literal["event", "condition", "schedule", "manual"]:
        if self.event is not None:
            return "event"
        if self.schedule is not None:
            return "schedule"
        if self.manual:
            return "manual"
        return "condition"


class Goal(_Model):
    """The conversion: reaching it exits the customer from any step with reason converted."""

    event: EventName
    where: ConditionText | None = None
    within: Duration | None = Field(None, description="count it only within this time of entry")


class QuietHours(_Model):
    """No sends inside this local window; sends that fall inside wait until it ends."""

    window: str = Field(description="HH:MM-HH:MM, e.g. 21:00-08:00 (wraps past midnight)")
    default_timezone: str = "Europe/Amsterdam"

    @field_validator("window")
    @classmethod
    def _check(cls, v: str) -> str:
        parse_window(v)
        return v.strip()


class Variant(_Model):
    """Content for customers matching ``when``; the first matching variant wins."""

    when: ConditionText
    template: str


class _Step(_Model):
    id: StepId
    label: str | None = Field(None, description="a human title for diagrams and reports")


class SendStep(_Step):
    """Send a message on a channel instance, then go on at once to ``next``."""

    type: Literal["send"]
    channel: str
    template: str | None = None
    variants: list[Variant] = Field(default_factory=list)
    next: StepId | None = Field(None, description="defaults to the following step")
    on_cap: Literal["skip", "defer"] = Field(
        "skip",
        description="when a frequency cap is reached: skip the message (the customer moves "
        "on) or defer it until the cap allows",
    )


class WaitStep(_Step):
    """Wait for a reaction, or time out."""

    type: Literal["wait"]
    for_: list[EventRef] = Field(alias="for", min_length=1)
    match_message: bool = Field(
        False, description="count only reactions to the message sent just before this wait"
    )
    timeout: Duration | None = None
    on_reaction: StepId | dict[EventName, StepId] | None = None
    on_timeout: StepId | None = None


class DelayStep(_Step):
    """Pause for a duration, or until a local time window opens (or both: duration first)."""

    type: Literal["delay"]
    duration: Duration | None = None
    until: Window | None = None
    next: StepId | None = None

    @model_validator(mode="after")
    def _something(self) -> DelayStep:
        if self.duration is None and self.until is None:
            raise ValueError("a delay needs a duration (e.g. 1d) or until (e.g. 09:00-18:00)")
        return self


class Branch(_Model):
    when: ConditionText
    next: StepId


class SplitStep(_Step):
    """Go to the first branch whose condition holds, else to ``otherwise``."""

    type: Literal["split"]
    branches: list[Branch] = Field(min_length=1)
    otherwise: StepId


class Arm(_Model):
    name: Annotated[str, Field(pattern=STEP_ID)]
    weight: float = Field(gt=0)
    next: StepId
    control: bool = Field(False, description="a holdout: receives nothing, measured all the same")


class ExperimentStep(_Step):
    """Weighted random arms, sticky per customer (a hash, not a random draw)."""

    type: Literal["experiment"]
    arms: list[Arm] = Field(min_length=2)

    @model_validator(mode="after")
    def _arms(self) -> ExperimentStep:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError("experiment arm names must be unique")
        if sum(1 for a in self.arms if a.control) > 1:
            raise ValueError("an experiment may have at most one control arm")
        return self


class ExitStep(_Step):
    """End the journey with a reason shown in reports."""

    type: Literal["exit"]
    reason: str = "completed"


Step = Annotated[
    SendStep | WaitStep | DelayStep | SplitStep | ExperimentStep | ExitStep,
    Field(discriminator="type"),
]
STEP_TYPES = ("send", "wait", "delay", "split", "experiment", "exit")


class Journey(_Model):
    """One journey file."""

    journey: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$", description="the name")]
    description: str | None = None
    entry: Entry
    goal: Goal | None = None
    exit_on: list[EventRef] = Field(default_factory=list)
    quiet_hours: QuietHours | None = None
    transactional: bool = Field(False, description="bypasses marketing caps, never consent")
    owned_first: bool = Field(
        True,
        description="paid channels only after an owned channel got no reaction; false opts out",
    )
    segments: dict[Annotated[str, Field(pattern=STEP_ID)], ConditionText] = Field(
        default_factory=dict, description="named conditions usable as segment('name')"
    )
    steps: list[Step] = Field(min_length=1)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a journey file, for editors (yaml-language-server and others)."""
    schema = Journey.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://parcours.dev/schema/journey.json"
    schema["title"] = "parcours journey"
    return schema
