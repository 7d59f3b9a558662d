"""The condition language: every operator, null handling, the functions, and refusal of
anything that could reach Python objects, with the offset of the offending part."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from journeys import ConditionError, Scope, compile_condition
from journeys.conditions import PastEvent, StaticScope

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def ev(name: str, days_ago: float, **props: Any) -> PastEvent:
    return PastEvent(name, NOW - timedelta(days=days_ago), props)


HISTORY = StaticScope(
    events=[
        ev("order_completed", 400, category="cat-litter", total=30),
        ev("order_completed", 100, category="dog-food", total=80),
        ev("order_completed", 10, category="cat-litter", total=25),
        ev("email.opened", 2.5),
    ],
    now=NOW,
    segments={"vip": lambda: True, "churned": lambda: False},
)

SCOPE = Scope(
    traits={
        "country": "NL",
        "age": 41,
        "score": 2.5,
        "tags": ["a", "b"],
        "name": "Ada LOVELACE",
        "address": {"city": "Utrecht"},
        "first name": "Ada",
        "empty": None,
        "active": True,
    },
    properties={"total": 120, "items": 3, "currency": "EUR"},
    customer={"id": "c1", "timezone": "Europe/Amsterdam"},
    event="cart_abandoned",
    history=HISTORY,
)


def run(text: str, scope: Scope = SCOPE) -> Any:
    return compile_condition(text).evaluate(scope)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # comparisons
        ("traits.country == 'NL'", True),
        ("traits.country != 'NL'", False),
        ("traits.age < 41", False),
        ("traits.age <= 41", True),
        ("traits.age > 40", True),
        ("traits.age >= 42", False),
        ("18 <= traits.age < 65", True),
        ("18 <= traits.age < 30", False),
        # membership
        ("traits.country in ['NL', 'BE']", True),
        ("traits.country not in ['NL', 'BE']", False),
        ("'a' in traits.tags", True),
        ("'LOVE' in traits.name", True),
        # boolean logic
        ("traits.country == 'NL' and properties.total > 100", True),
        ("traits.country == 'DE' or properties.total > 100", True),
        ("not traits.active", False),
        ("traits.active and not (traits.age > 50)", True),
        # arithmetic
        ("properties.total / properties.items == 40", True),
        ("properties.total * 2 - 40 == 200", True),
        ("traits.score + 0.5 == 3", True),
        ("-traits.age < 0", True),
        ("'x' + traits.country == 'xNL'", True),
        # literals and constants
        ("true", True),
        ("false", False),
        ("null == null", True),
        ("True and not False", True),
        ("[1, 2] == [1, 2]", True),
        # fields
        ("traits.address.city == 'Utrecht'", True),
        ("traits['first name'] == 'Ada'", True),
        ("customer.id == 'c1'", True),
        ("customer.timezone == 'Europe/Amsterdam'", True),
        ("event == 'cart_abandoned'", True),
        ("properties.currency == 'EUR'", True),
        ("traits.country != '#NL'", True),
    ],
)
def test_operators(text: str, expected: bool) -> None:
    assert run(text) is expected
    assert compile_condition(text)(SCOPE) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a missing field is null; null equals only null
        ("traits.missing == null", True),
        ("traits.missing != null", False),
        ("traits.empty == null", True),
        ("traits.missing == 0", False),
        # ordering against null is false both ways, never an error
        ("traits.missing > 1", False),
        ("traits.missing < 1", False),
        ("traits.missing >= traits.missing", False),
        ("not (traits.missing > 1)", True),
        # nested fields through missing or non-mapping values are null
        ("traits.missing.deeper == null", True),
        ("traits.age.years == null", True),
        ("traits.tags.first == null", True),
        ("traits.country.upper == null", True),
        # membership in null is false; arithmetic with null or strings is null
        ("'a' in traits.missing", False),
        ("'a' not in traits.missing", True),
        ("traits.missing + 1 == null", True),
        ("traits.country * 2 == null", True),
        ("properties.total / 0 == null", True),
        ("-traits.country == null", True),
        # comparing unlike types is false, not an error
        ("traits.country > 3", False),
        ("1 in traits.age", False),
    ],
)
def test_null_and_type_mismatches(text: str, expected: bool) -> None:
    assert run(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("count('order_completed') == 3", True),
        ("count('order_completed', within='365d') == 2", True),
        ("count('order_completed', within='30d') == 1", True),
        ("count('order_completed', where=\"properties.category == 'cat-litter'\") == 2", True),
        (
            "count('order_completed', within='365d', "
            "where=\"properties.category == 'cat-litter'\") == 1",
            True,
        ),
        ("count('never_happened') == 0", True),
        ("days_since('email.opened') == 2.5", True),
        ("days_since('order_completed') == 10", True),
        ("days_since('never_happened') == null", True),
        ("days_since('never_happened') > 90", False),
        ("segment('vip')", True),
        ("segment('churned')", False),
        ("segment('unknown')", False),
        ("exists(traits.country)", True),
        ("exists(traits.missing)", False),
        ("exists(traits.empty)", False),
        ("lower(traits.name) == 'ada lovelace'", True),
        ("lower(traits.age) == 41", True),
        ("lower(traits.missing) == null", True),
        ("len(traits.tags) == 2", True),
        ("len(traits.country) == 2", True),
        ("len(traits.address) == 1", True),
        ("len(traits.missing) == 0", True),
        ("len(traits.age) == 0", True),
    ],
)
def test_functions_with_a_static_scope(text: str, expected: bool) -> None:
    assert run(text) is expected


def test_history_functions_without_history() -> None:
    scope = Scope(traits={"x": 1})
    assert run("count('order_completed') == 0", scope) is True
    assert run("days_since('order_completed') == null", scope) is True
    assert run("segment('vip')", scope) is False


def test_condition_reports_what_it_refers_to() -> None:
    cond = compile_condition(
        "segment('vip') and count('order_completed') > 1 and days_since('email.opened') < 3"
    )
    assert cond.segments == {"vip"}
    assert cond.events == {"order_completed", "email.opened"}
    assert cond.uses_history is True
    plain = compile_condition("traits.x == 1")
    assert (plain.segments, plain.events, plain.uses_history) == (frozenset(), frozenset(), False)


def test_multi_line_conditions() -> None:
    assert run("traits.country == 'NL'\nand properties.total > 100") is True


@pytest.mark.parametrize(
    ("text", "message", "offset"),
    [
        # reaching Python objects
        ("traits.__class__", "field names may not start with an underscore", 7),
        ("traits.x and traits._secret", "field names may not start with an underscore", 20),
        ("().__class__", "field names may not start with an underscore", 3),
        ("traits.name.__class__.__mro__", "field names may not start with an underscore", 12),
        # names other than the roots
        ("__import__('os')", "unknown function", 0),
        ("os.system('ls')", "unknown function", 0),
        ("open('/etc/passwd')", "unknown function", 0),
        ("eval('1')", "unknown function", 0),
        ("traits.x == foo", "unknown name 'foo': write traits.foo", 12),
        ("traits.name.lower()", "unknown function", 0),
        ("lenght(traits.tags) > 1", "unknown function 'lenght' (did you mean 'len'?)", 0),
        ("traits.name.lower() == 'x'", "not traits.name.lower()", 0),
        # constructs that are not part of the language
        ("lambda: 1", "'Lambda' is not allowed in a condition", 0),
        ("[x for x in traits.tags]", "'ListComp' is not allowed", 0),
        ("{x for x in traits.tags}", "'SetComp' is not allowed", 0),
        ("(x for x in traits.tags)", "'GeneratorExp' is not allowed", 0),
        ("{'a': 1}", "'Dict' is not allowed", 0),
        ("traits.x if true else 1", "'IfExp' is not allowed", 0),
        ("(y := 1)", "'NamedExpr' is not allowed", 1),
        ("f'{traits.x}'", "'JoinedStr' is not allowed", 0),
        ("traits.x is null", "use == != < <= > >= in or 'not in' to compare", 0),
        ("traits.x ** 2", "only + - * / are allowed as arithmetic", 0),
        ("traits.x % 2", "only + - * / are allowed as arithmetic", 0),
        ("~traits.x", "only 'not' and '-' may stand before a value", 0),
        ("b'bytes'", "only numbers, strings, true, false and null are literals", 0),
        ("traits[0]", "use a quoted key", 0),
        ("traits[traits.k]", "use a quoted key", 0),
        # function arguments
        ("count(*traits.tags)", "* and ** are not allowed", 0),
        ("exists(traits.a, traits.b)", "exists() takes exactly one value", 0),
        ("len()", "len() takes exactly one value", 0),
        ("segment(traits.s)", "expected one quoted name, e.g. segment('name')", 0),
        ("days_since()", "expected one quoted name", 0),
        ("count('x', since='3d')", "use count('event', within='90d'", 0),
        ("count('x', within=3)", "within= takes a quoted duration", 18),
        ("count('x', within='3 days')", "invalid duration '3 days'", 18),
        ("count('x', where=1)", "where= takes a quoted condition over properties", 17),
        ("count('x', where='properties.a ==')", "in where=: not a valid expression", 33),
        ("count('x', where=\"segment('vip')\")", "where= may only test the event's properties", 17),
        # syntax
        ("traits.x ==", "it ends too early", 11),
        ("traits.x = 1", "compare with ==", 9),
        ("traits.x == 'NL", "not a valid expression", 12),
        ("", "a condition must be a non-empty expression", 0),
        ("   ", "a condition must be a non-empty expression", 0),
        ("  traits.x = 1", "compare with ==", 11),
        # columns count characters, not UTF-8 bytes
        ("traits.n == 'éé' and traits._x", "field names may not start with an underscore", 28),
        ("traits.n == 'é' and open(1)", "unknown function 'open'", 20),
        ("count('x', where='properties.é ==')", "in where=: not a valid expression", 33),
        # a '#' outside quotes would silently drop the rest of the condition
        ("traits.x == 1 # and traits.y == 2", "'#' outside quotes", 14),
    ],
)
def test_refused_with_offset(text: str, message: str, offset: int) -> None:
    with pytest.raises(ConditionError) as info:
        compile_condition(text)
    assert message in str(info.value)
    assert info.value.offset == offset


def test_too_long_and_too_deep_are_refused_cleanly() -> None:
    with pytest.raises(ConditionError, match="at most"):
        compile_condition("traits.x == 1 or " * 200 + "true")
    with pytest.raises(ConditionError):
        compile_condition("(" * 600 + "1" + ")" * 600)
    with pytest.raises(ConditionError):
        compile_condition("-" * 1500 + "1")


def test_evaluation_never_reaches_python_attributes() -> None:
    class Sneaky:
        secret = "s3cret"

    scope = Scope(traits={"obj": Sneaky(), "text": "abc"})
    assert run("traits.obj.secret == null", scope) is True
    assert run("traits.text.upper == null", scope) is True


def test_compiled_condition_is_reusable_across_scopes() -> None:
    cond = compile_condition("properties.total > 100")
    assert [cond(Scope(properties={"total": t})) for t in (50, 150, None)] == [False, True, False]
