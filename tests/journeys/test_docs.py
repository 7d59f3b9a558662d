"""The documentation stays true: its examples load and compile, and every field of the
format is documented."""

from __future__ import annotations

import re

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter

from journeys import Catalog, compile_condition, load_texts
from journeys.conditions import _FUNCTIONS
from journeys.schema import Journey, Step
from tests.journeys.helpers import CATALOG, ROOT

DOCS = ROOT / "docs"
LANGUAGE = (DOCS / "journey-language.md").read_text()
CONDITIONS = (DOCS / "conditions.md").read_text()


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize(
    "condition",
    [line for b in blocks(CONDITIONS, "condition") for line in b.splitlines() if line.strip()],
)
def test_condition_examples_compile(condition: str) -> None:
    compile_condition(condition)


def test_every_function_is_documented() -> None:
    for name in _FUNCTIONS:
        assert f"`{name}(" in CONDITIONS, name


YAML = blocks(LANGUAGE, "yaml")


def test_complete_journey_example_loads() -> None:
    journeys = [b for b in YAML if b.startswith("journey:")]
    assert journeys
    catalog = Catalog(
        channels=CATALOG.channels,
        events=CATALOG.events,
        medium_events=CATALOG.medium_events,
    )
    loaded = load_texts([(f"doc{i}.yaml", t) for i, t in enumerate(journeys)], catalog)
    assert len(loaded) == len(journeys)


@pytest.mark.parametrize("text", [b for b in YAML if b.startswith("- id:")])
def test_step_examples_are_valid_steps(text: str) -> None:
    (step,) = yaml.safe_load(text)
    TypeAdapter(Step).validate_python(step)


@pytest.mark.parametrize(
    "text", [b for b in YAML if re.match(r"^(entry|goal|exit_on):", b)], ids=lambda t: t[:10]
)
def test_fragment_examples_are_valid(text: str) -> None:
    fragment = yaml.safe_load(text)
    Journey.model_validate(
        {"journey": "t", "entry": {"manual": True}, "steps": [{"id": "x", "type": "exit"}]}
        | fragment
    )


def _fields(model: type[BaseModel]) -> set[str]:
    return {f.alias or n for n, f in model.model_fields.items()}


def test_every_field_of_the_format_is_documented() -> None:
    from journeys import schema

    models = [
        schema.Journey,
        schema.Entry,
        schema.Goal,
        schema.EventMatch,
        schema.QuietHours,
        schema.TimeWindow,
        schema.SendStep,
        schema.Variant,
        schema.WaitStep,
        schema.DelayStep,
        schema.SplitStep,
        schema.Branch,
        schema.ExperimentStep,
        schema.Arm,
        schema.ExitStep,
    ]
    missing = {f"{m.__name__}.{f}" for m in models for f in _fields(m) if f"`{f}`" not in LANGUAGE}
    assert not missing, f"undocumented fields in docs/journey-language.md: {sorted(missing)}"
