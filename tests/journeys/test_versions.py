"""Version ids: a hash of the journey's meaning, not of the file's bytes."""

from __future__ import annotations

from tests.journeys.helpers import MINIMAL, load

REFORMATTED = """\
# the same journey, written differently
steps:
  - {id: mail, type: send, template: reminder, channel: email}
  - id: wait
    on_timeout: done
    on_reaction: done
    timeout: 48h          # 2d, spelt in hours
    for:
      - event: email.opened
    type: wait
  - {type: exit, id: done, reason: completed}
entry: {event: cart_abandoned, reentry: never}
journey: "t"
"""


def test_same_journey_reformatted_or_reordered_has_the_same_version() -> None:
    a, b = load(MINIMAL), load(REFORMATTED)
    assert a.version == b.version
    assert len(a.version) == 16
    assert int(a.version, 16) >= 0


def test_comments_and_descriptions_of_layout_do_not_matter() -> None:
    assert load("# hello\n" + MINIMAL + "\n\n# bye\n").version == load(MINIMAL).version


def test_version_is_stable_across_loads() -> None:
    assert load(MINIMAL).version == load(MINIMAL).version


def test_every_behaviour_change_makes_a_new_version() -> None:
    changes = [
        MINIMAL.replace("timeout: 2d", "timeout: 3d"),
        MINIMAL.replace("template: reminder", "template: offer"),
        MINIMAL.replace("for: [email.opened]", "for: [email.clicked]"),
        MINIMAL.replace("on_reaction: done", "on_reaction: mail"),
        MINIMAL.replace("event: cart_abandoned", "event: signed_up"),
        MINIMAL.replace(
            "  event: cart_abandoned\n", "  event: cart_abandoned\n  reentry: always\n"
        ),
        MINIMAL.replace("    type: exit\n", "    type: exit\n    reason: finished\n"),
        MINIMAL.replace("steps:\n", "goal:\n  event: order_completed\nsteps:\n"),
        MINIMAL.replace("steps:\n", "exit_on: [email.unsubscribed]\nsteps:\n"),
    ]
    base = load(MINIMAL).version
    versions = {load(text).version for text in changes}
    assert base not in versions
    assert len(versions) == len(changes)


def test_name_is_part_of_the_version() -> None:
    assert load(MINIMAL).version != load(MINIMAL.replace("journey: t", "journey: u")).version


def test_writing_defaults_explicitly_does_not_change_the_version() -> None:
    explicit = MINIMAL.replace(
        "  event: cart_abandoned\n",
        "  event: cart_abandoned\n  reentry: never\n  timezone: UTC\n  manual: false\n",
    ).replace("steps:\n", "owned_first: true\ntransactional: false\nexit_on: []\nsteps:\n")
    explicit = explicit.replace("    type: exit\n", "    type: exit\n    reason: completed\n")
    assert load(explicit).version == load(MINIMAL).version


def test_canonical_form_leaves_defaults_out() -> None:
    import json

    from journeys.compiler import canonical_json

    data = json.loads(canonical_json(load(MINIMAL).definition))
    assert "owned_first" not in data and "transactional" not in data
    assert data["steps"][1] == {
        "id": "wait",
        "type": "wait",
        "for": [{"event": "email.opened"}],
        "timeout": "2d",
        "on_reaction": "done",
        "on_timeout": "done",
    }
