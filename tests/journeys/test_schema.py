"""The JSON Schema editors use: it accepts every journey the loader accepts (the examples,
the benchmark's generated journeys, the shorthands) and rejects structural mistakes; the
copy in docs/ is the one ``parcours schema`` prints."""

from __future__ import annotations

import json
import random
from typing import Any

import jsonschema_rs
import pytest
import yaml

from bench.journey_load import journey_text
from journeys import json_schema
from tests.journeys.helpers import EXAMPLES, MINIMAL, ROOT

DOCS_SCHEMA = ROOT / "docs" / "journey.schema.json"


@pytest.fixture(scope="module")
def validator() -> Any:
    return jsonschema_rs.validator_for(json_schema())


def errors(validator: Any, doc: Any) -> list[str]:
    return [e.message for e in validator.iter_errors(doc)]


def test_schema_is_draft_2020_12_with_an_id() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "parcours journey"
    assert set(schema["required"]) == {"journey", "entry", "steps"}


def test_docs_copy_is_up_to_date() -> None:
    assert json.loads(DOCS_SCHEMA.read_text()) == json_schema(), (
        "docs/journey.schema.json is stale: run `parcours schema > docs/journey.schema.json`"
    )


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_validate_and_reference_the_schema(validator: Any, path: Any) -> None:
    text = path.read_text()
    assert errors(validator, yaml.safe_load(text)) == []
    first = text.splitlines()[0]
    assert first == "# yaml-language-server: $schema=../../docs/journey.schema.json"
    assert (path.parent / "../../docs/journey.schema.json").resolve() == DOCS_SCHEMA


def test_generated_journeys_validate(validator: Any) -> None:
    rng = random.Random(7)
    for n in range(30):
        assert errors(validator, yaml.safe_load(journey_text(n, rng))) == []


def test_shorthands_validate(validator: Any) -> None:
    doc = yaml.safe_load(MINIMAL)
    doc["exit_on"] = ["email.unsubscribed", {"event": "signed_up", "where": "true"}]
    doc["steps"].insert(1, {"id": "pause", "type": "delay", "until": "09:00-17:00"})
    assert errors(validator, doc) == []


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d: d.update(stepz=[]), "stepz"),
        (lambda d: d.pop("entry"), "entry"),
        (lambda d: d["steps"][0].update(type="sned"), ""),
        (lambda d: d["steps"][1].update(timeout="2 days"), ""),
        (lambda d: d["steps"][0].update(id="1st"), ""),
        (lambda d: d.update(journey="Cart Recovery"), "Cart Recovery"),
        (lambda d: d["steps"].clear(), ""),
    ],
    ids=[
        "unknown-field",
        "missing-entry",
        "bad-type",
        "bad-duration",
        "bad-id",
        "bad-name",
        "no-steps",
    ],
)
def test_structural_mistakes_are_rejected(validator: Any, change: Any, fragment: str) -> None:
    doc = yaml.safe_load(MINIMAL)
    assert errors(validator, doc) == []
    change(doc)
    found = errors(validator, doc)
    assert found
    assert any(fragment in m for m in found)
