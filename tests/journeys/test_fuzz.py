"""Property-based tests: whatever a designer (or a fuzzer) writes, loading either succeeds
or fails with JourneyLoadError whose every problem names a place in the file. Nothing else
may escape: no KeyError, no RecursionError, no pydantic internals, no half-loaded set."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys import (
    ConditionError,
    JourneyLoadError,
    JourneySet,
    Scope,
    compile_condition,
    load_texts,
)
from journeys.schema import STEP_TYPES
from tests.journeys.helpers import CATALOG, MINIMAL

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def load_or_problems(text: str) -> JourneySet | None:
    """Load ``text``; on failure check that every problem is located in the file."""
    try:
        loaded = load_texts([("fuzz.yaml", text)], CATALOG)
    except JourneyLoadError as exc:
        assert exc.problems, "a load error without problems"
        # YAML also breaks lines at \r, NEL and the Unicode separators; splitlines knows them
        lines = len(text.splitlines()) + 2
        for p in exc.problems:
            assert p.file == "fuzz.yaml"
            assert 0 < p.line <= lines, p
            assert p.column >= 1, p
            assert p.message and "Traceback" not in p.message
        return None
    assert len(loaded) == 1
    return loaded


# -- random text --------------------------------------------------------------------------
@FUZZ
@given(st.text(max_size=300))
def test_random_text_never_crashes(text: str) -> None:
    load_or_problems(text)


YAML_BITS = st.sampled_from(
    [
        "journey: t\n",
        "entry:\n",
        "  event: cart_abandoned\n",
        "steps:\n",
        "  - id: a\n",
        "    type: send\n",
        "    type: wait\n",
        "    for: [email.opened]\n",
        "    timeout: 2d\n",
        "    on_timeout: a\n",
        "    on_reaction: a\n",
        "  - id: done\n    type: exit\n",
        "- ",
        ": ",
        "{",
        "}",
        "[",
        "]",
        "&x ",
        "*x ",
        "<<: *x\n",
        "!!str ",
        "!!python/object ",
        "'",
        '"',
        "#",
        "\t",
        "---\n",
        "...\n",
        "? ",
        "|\n",
        ">\n",
        "%YAML 1.1\n",
        "\\",
        "\x00",
        "\ufeff",
        "é",
        "🙂",
        "    ",
        "\n",
    ]
)


@FUZZ
@given(st.lists(YAML_BITS, max_size=40).map("".join))
def test_yaml_shaped_noise_never_crashes(text: str) -> None:
    load_or_problems(text)


@FUZZ
@given(st.data())
def test_mutated_valid_journey_never_crashes(data: st.DataObject) -> None:
    text = MINIMAL
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, max(len(text) - 1, 0)))
        op = data.draw(st.sampled_from(["delete", "insert", "replace", "dup-line", "drop-line"]))
        if op == "delete":
            text = text[:i] + text[i + 1 :]
        elif op == "insert":
            text = text[:i] + data.draw(st.sampled_from(list(" :-\n'\"[]{}#&*!a1"))) + text[i:]
        elif op == "replace":
            text = text[:i] + data.draw(st.characters()) + text[i + 1 :]
        else:
            lines = text.splitlines(keepends=True)
            k = data.draw(st.integers(0, len(lines) - 1))
            lines[k : k + 1] = [lines[k]] * (2 if op == "dup-line" else 0)
            text = "".join(lines)
    load_or_problems(text)


# -- random documents built from the journey vocabulary ------------------------------------
NAMES = st.sampled_from(["a", "b", "done", "mail", "wait", "x", "1bad", "", "a b"])
EVENTS = st.sampled_from(
    [
        "cart_abandoned",
        "order_completed",
        "email.opened",
        "email.clicked",
        "site.clicked",
        "email.nope",
        "unknown_event",
        "bad event",
        "",
    ]
)
DURATIONS = st.one_of(
    st.sampled_from(["2d", "1h30m", "0s", "2 days", "1.5d", "-1d", "1w", ""]),
    st.integers(-5, 100),
    st.none(),
)
CONDITIONS = st.sampled_from(
    [
        "traits.country == 'NL'",
        "properties.total > 1",
        "segment('vip')",
        "segment('nope')",
        "count('order_completed', within='30d') > 1",
        "traits.__class__",
        "lambda: 1",
        "(",
        "days_since('email.opened') < 3",
        "",
        "x",
        "traits.a = 1",
    ]
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=8)
)


def scalar_or(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right kind of value, sometimes any scalar, list or mapping."""
    return st.one_of(
        strategy,
        strategy,
        strategy,
        SCALARS,
        st.lists(SCALARS, max_size=2),
        st.dictionaries(st.text(max_size=4), SCALARS, max_size=2),
    )


def partial(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Mappings with some of ``fields`` and, now and then, an unknown one."""
    return st.fixed_dictionaries(
        {},
        optional={**{k: scalar_or(v) for k, v in fields.items()}, "bogus": SCALARS},
    )


EVENT_REF = st.one_of(EVENTS, partial({"event": EVENTS, "where": CONDITIONS}))
STEP = st.one_of(
    partial(
        {
            "id": NAMES,
            "type": st.sampled_from([*STEP_TYPES, "sned"]),
            "channel": st.sampled_from(["email", "site", "retargeting", "fax"]),
            "template": st.sampled_from(["reminder", "banner", "nope"]),
            "next": NAMES,
            "label": st.text(max_size=10),
            "variants": st.lists(partial({"when": CONDITIONS, "template": NAMES}), max_size=2),
        }
    ),
    partial(
        {
            "id": NAMES,
            "type": st.just("wait"),
            "for": st.lists(EVENT_REF, max_size=3),
            "timeout": DURATIONS,
            "on_timeout": NAMES,
            "match_message": st.booleans(),
            "on_reaction": st.one_of(NAMES, st.dictionaries(EVENTS, NAMES, max_size=2)),
        }
    ),
    partial(
        {
            "id": NAMES,
            "type": st.just("delay"),
            "duration": DURATIONS,
            "next": NAMES,
            "until": st.one_of(
                st.sampled_from(["09:00-17:00", "9-5", "25:00-26:00"]),
                partial(
                    {
                        "window": st.just("09:00-18:00"),
                        "days": st.lists(st.sampled_from(["mon", "fri", "funday"]), max_size=3),
                    }
                ),
            ),
        }
    ),
    partial(
        {
            "id": NAMES,
            "type": st.just("split"),
            "otherwise": NAMES,
            "branches": st.lists(partial({"when": CONDITIONS, "next": NAMES}), max_size=3),
        }
    ),
    partial(
        {
            "id": NAMES,
            "type": st.just("experiment"),
            "arms": st.lists(
                partial(
                    {
                        "name": NAMES,
                        "weight": st.floats(-1, 100),
                        "next": NAMES,
                        "control": st.booleans(),
                    }
                ),
                max_size=3,
            ),
        }
    ),
    partial({"id": NAMES, "type": st.just("exit"), "reason": st.text(max_size=8)}),
)
JOURNEY = partial(
    {
        "journey": st.sampled_from(["t", "Cart Recovery", "", "x-1"]),
        "description": st.text(max_size=20),
        "entry": partial(
            {
                "event": EVENTS,
                "where": CONDITIONS,
                "condition": CONDITIONS,
                "schedule": st.sampled_from(["0 9 * * mon", "0 25 * * *", "* * *", "nonsense"]),
                "timezone": st.sampled_from(["UTC", "Europe/Amsterdam", "Mars/Base"]),
                "manual": st.booleans(),
                "reentry": st.sampled_from(
                    ["never", "always", "after 30d", "after x", "sometimes"]
                ),
                "key": st.sampled_from(["properties.cart_id", "cart_id", "traits.x"]),
            }
        ),
        "goal": partial({"event": EVENTS, "where": CONDITIONS, "within": DURATIONS}),
        "exit_on": st.lists(EVENT_REF, max_size=2),
        "quiet_hours": partial(
            {"window": st.just("21:00-08:00"), "default_timezone": st.just("UTC")}
        ),
        "owned_first": st.booleans(),
        "transactional": st.booleans(),
        "segments": st.dictionaries(NAMES, CONDITIONS, max_size=2),
        "steps": st.lists(STEP, max_size=6),
    }
)


@FUZZ
@given(JOURNEY, st.sampled_from(["block", "flow"]))
def test_random_structured_journeys_never_crash(doc: dict[str, Any], style: str) -> None:
    text = yaml.safe_dump(doc, default_flow_style=style == "flow", allow_unicode=True)
    load_or_problems(text)


@FUZZ
@given(st.dictionaries(st.sampled_from(["journey", "entry", "steps", "goal"]), SCALARS))
def test_wrong_kinds_at_the_top_never_crash(doc: dict[str, Any]) -> None:
    load_or_problems(yaml.safe_dump(doc))


# -- conditions -----------------------------------------------------------------------------
TOKENS = st.sampled_from(
    [
        "traits",
        "properties",
        "customer",
        "event",
        ".",
        "x",
        "country",
        "[",
        "]",
        "'NL'",
        "1",
        "2.5",
        "==",
        "!=",
        "<",
        ">=",
        "in",
        "not",
        "and",
        "or",
        "(",
        ")",
        ",",
        "+",
        "-",
        "*",
        "/",
        "count(",
        "days_since(",
        "segment(",
        "exists(",
        "lower(",
        "len(",
        "'order_completed'",
        "within='3d'",
        'where="properties.x > 1"',
        "null",
        "true",
        "__class__",
        "lambda",
        ":",
        "**",
        "[x for x in traits]",
        "{",
        "}",
        " ",
    ]
)


@FUZZ
@given(st.one_of(st.text(max_size=60), st.lists(TOKENS, max_size=15).map(" ".join)))
def test_conditions_compile_or_fail_with_an_offset(text: str) -> None:
    try:
        cond = compile_condition(text)
    except ConditionError as exc:
        assert 0 <= exc.offset <= len(text) + 1
        assert str(exc)
        return
    # whatever compiled evaluates without raising, on any values
    for scope in (
        Scope(),
        Scope(traits={"x": None, "country": "NL"}, properties={"x": [1]}, event="e"),
        Scope(traits={"x": {"y": 1}, "country": 3}, properties={"x": "s"}),
    ):
        cond(scope)


@FUZZ
@given(
    st.sampled_from(
        [
            "traits.a == properties.b",
            "traits.a > properties.b",
            "traits.a in properties.b",
            "traits.a + properties.b == 1",
            "len(traits.a) >= len(properties.b)",
            "lower(traits.a) == lower(properties.b)",
            "-traits.a < properties.b / 2",
            "exists(traits.a) and not exists(properties.b)",
            'traits.a.b.c == properties.b["k"]',
        ]
    ),
    st.recursive(
        SCALARS | st.just([]),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=6,
    ),
    st.recursive(
        SCALARS,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=6,
    ),
)
def test_evaluation_never_raises_whatever_the_values(text: str, a: Any, b: Any) -> None:
    result = compile_condition(text)(Scope(traits={"a": a}, properties={"b": b}))
    assert isinstance(result, bool)


# -- the edges a fuzzer rarely reaches -------------------------------------------------------
def test_deeply_nested_document_is_a_clear_error() -> None:
    assert load_or_problems("description: " + "[" * 5000 + "]" * 5000 + "\n") is None
    assert load_or_problems("a:\n" + "".join("  " * i + "b:\n" for i in range(1, 400))) is None


def test_byte_order_mark_and_crlf_are_fine() -> None:
    assert load_or_problems("\ufeff" + MINIMAL.replace("\n", "\r\n")) is not None


def test_several_documents_in_one_file_are_refused_at_the_second() -> None:
    try:
        load_texts([("two.yaml", MINIMAL + "---\n" + MINIMAL)], CATALOG)
    except JourneyLoadError as exc:
        (p,) = exc.problems
        assert p.line == MINIMAL.count("\n") + 1
        assert "YAML syntax error" in p.message
    else:  # pragma: no cover
        raise AssertionError("two documents in one file must not load")
