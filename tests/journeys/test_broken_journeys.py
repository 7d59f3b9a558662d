"""Every broken journey names the file, the line and column of the mistake, and what would
be valid. One case per mistake a designer can make (see broken_cases.py)."""

from __future__ import annotations

import pytest

from journeys import JourneyLoadError, load_texts
from tests.journeys.broken_cases import CASES, Broken
from tests.journeys.helpers import CATALOG, FILE, MINIMAL, load, problems


def test_there_are_at_least_25_distinct_broken_journeys() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 25
    assert len({c.text for c in CASES}) == len(CASES), "each case is a different journey"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_broken_journey_is_reported_at_its_place(case: Broken) -> None:
    found = problems(case.text)
    matching = [p for p in found if case.message in p.message]
    assert matching, f"expected {case.message!r} among:\n" + "\n".join(map(str, found))
    p = matching[0]
    assert (p.file, p.line, p.column) == (FILE, case.line, case.column), str(p)
    assert str(p).startswith(f"{FILE}:{case.line}:{case.column}: ")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_problem_is_located(case: Broken) -> None:
    for p in problems(case.text):
        assert p.file == FILE
        assert p.line >= 1
        assert p.column >= 1
        assert p.message.strip()


def test_all_problems_of_a_file_are_reported_in_one_pass() -> None:
    text = (
        MINIMAL.replace("channel: email", "channel: emial")
        .replace("template: reminder", "template: nope")
        .replace("on_timeout: done", "on_timeout: nowhere")
    )
    messages = [p.message for p in problems(text)]
    assert any("unknown channel 'emial'" in m for m in messages)
    assert any("unknown step 'nowhere'" in m for m in messages)
    # sorted by position, so a designer reads them top to bottom
    found = problems(text)
    assert found == sorted(found)


def test_a_set_loads_whole_or_not_at_all() -> None:
    good = ("good.yaml", MINIMAL)
    bad = ("bad.yaml", MINIMAL.replace("journey: t", "journey: u").replace("2d", "2 days"))
    with pytest.raises(JourneyLoadError) as info:
        load_texts([good, bad], CATALOG)
    assert {p.file for p in info.value.problems} == {"bad.yaml"}
    # and with the broken file removed, the same good file loads
    assert "t" in load_texts([good], CATALOG)


def test_problems_in_several_files_are_all_reported() -> None:
    a = ("a.yaml", MINIMAL.replace("channel: email", "channel: nope"))
    b = ("b.yaml", MINIMAL.replace("journey: t", "journey: u").replace("type: exit", "type: ext"))
    with pytest.raises(JourneyLoadError) as info:
        load_texts([a, b], CATALOG)
    assert {p.file for p in info.value.problems} == {"a.yaml", "b.yaml"}
    text = str(info.value)
    assert "a.yaml:7:14: unknown channel 'nope'" in text
    assert "b.yaml:16:11: unknown step type 'ext'" in text


def test_two_files_with_one_journey_name() -> None:
    with pytest.raises(JourneyLoadError) as info:
        load_texts([("a.yaml", MINIMAL), ("b.yaml", MINIMAL)], CATALOG)
    (p,) = info.value.problems
    assert (p.file, p.line, p.column) == ("b.yaml", 1, 1)
    assert "journey name 't' is already used by a.yaml; names must be unique" in p.message


def test_owned_first_false_lets_a_paid_step_come_first() -> None:
    text = MINIMAL.replace(
        "steps:\n",
        "owned_first: false\nsteps:\n  - id: ads\n    type: send\n    channel: retargeting\n",
    )
    version = load(text)
    assert version.start == "ads"
    assert version.definition.owned_first is False


def test_paid_step_behind_an_owned_timeout_is_allowed() -> None:
    text = MINIMAL.replace("on_timeout: done", "on_timeout: ads").replace(
        "  - id: done\n", "  - id: ads\n    type: send\n    channel: retargeting\n  - id: done\n"
    )
    version = load(text)
    assert version.target("wait", "timeout") == "ads"


def test_paid_step_behind_a_split_after_an_owned_timeout_is_allowed() -> None:
    text = MINIMAL.replace("on_timeout: done", "on_timeout: pick").replace(
        "  - id: done\n",
        """\
  - id: pick
    type: split
    branches:
      - when: traits.ads_ok == true
        next: ads
    otherwise: done
  - id: ads
    type: send
    channel: retargeting
  - id: done
""",
    )
    assert "ads" in load(text).steps


def test_without_configuration_channels_and_templates_are_not_checked() -> None:
    from journeys.catalog import OPEN_CATALOG

    text = MINIMAL.replace("channel: email", "channel: carrier_pigeon")
    assert "carrier_pigeon" in problems(text)[0].message
    assert load(text, catalog=OPEN_CATALOG).sends()[0].channel == "carrier_pigeon"
