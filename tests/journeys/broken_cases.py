"""Broken journeys, each with the message a designer must see and where it must point.

Each case: (id, journey text, a fragment of the expected message, line, column). Lines and
columns are 1-based and point at the offending value (or key, for unknown fields).
"""

from __future__ import annotations

from typing import NamedTuple


class Broken(NamedTuple):
    id: str
    text: str
    message: str
    line: int
    column: int


HEAD = """\
journey: t
entry:
  event: cart_abandoned
steps:
"""
MAIL = """\
  - id: mail
    type: send
    channel: email
    template: reminder
"""
WAIT = """\
  - id: wait
    type: wait
    for: [email.opened]
    timeout: 2d
    on_reaction: done
    on_timeout: done
"""
DONE = """\
  - id: done
    type: exit
"""

CASES: list[Broken] = [
    Broken(
        "unknown-step-target",
        HEAD + MAIL + WAIT.replace("on_timeout: done", "on_timeout: nowhere") + DONE,
        "step 'wait' goes to unknown step 'nowhere'; steps are: done, mail, wait",
        14,
        17,
    ),
    Broken(
        "misspelt-step-target-suggests",
        HEAD + MAIL + WAIT.replace("on_reaction: done", "on_reaction: dnoe") + DONE,
        "unknown step 'dnoe' (did you mean 'done'?)",
        13,
        18,
    ),
]

CASES += [
    Broken(
        "unreachable-step",
        HEAD + MAIL + WAIT + DONE + "  - id: orphan\n    type: exit\n",
        "step 'orphan' is unreachable: no step leads to it from the first step",
        17,
        9,
    ),
    Broken(
        "wait-without-timeout",
        HEAD + MAIL + WAIT.replace("    timeout: 2d\n", "") + DONE,
        "wait step 'wait' has no timeout: a customer who never reacts would wait forever",
        9,
        5,
    ),
    Broken(
        "wait-without-on-timeout",
        HEAD + MAIL + WAIT.replace("    on_timeout: done\n", "") + DONE,
        "wait step 'wait' has no on_timeout",
        9,
        5,
    ),
    Broken(
        "wait-without-on-reaction",
        HEAD + MAIL + WAIT.replace("    on_reaction: done\n", "") + DONE,
        "wait step 'wait' has no on_reaction",
        9,
        5,
    ),
    Broken(
        "loop-without-wait-or-delay",
        HEAD
        + MAIL
        + """\
    next: again
  - id: again
    type: split
    branches:
      - when: traits.country == 'NL'
        next: mail
    otherwise: done
"""
        + DONE,
        "steps again -> mail -> again form a loop with no wait or delay",
        10,
        9,
    ),
    Broken(
        "duplicate-step-id",
        HEAD + MAIL + WAIT + DONE + "  - id: mail\n    type: exit\n",
        "duplicate step id 'mail': step ids must be unique within a journey",
        17,
        9,
    ),
    Broken(
        "unknown-channel-suggests",
        HEAD + MAIL.replace("channel: email", "channel: emial") + WAIT + DONE,
        "unknown channel 'emial' (did you mean 'email'?); configured channels: "
        "email, retargeting, site",
        7,
        14,
    ),
    Broken(
        "unknown-template",
        HEAD + MAIL.replace("template: reminder", "template: remindr") + WAIT + DONE,
        "unknown template 'remindr' (did you mean 'reminder'?); templates are: "
        "banner, offer, reminder",
        8,
        15,
    ),
    Broken(
        "unknown-variant-template",
        HEAD
        + MAIL
        + "    variants:\n      - when: traits.locale == 'en'\n        template: reminder_en\n"
        + WAIT
        + DONE,
        "unknown template 'reminder_en'",
        11,
        19,
    ),
    Broken(
        "invalid-duration-words",
        HEAD + MAIL + WAIT.replace("timeout: 2d", "timeout: 2 days") + DONE,
        "invalid duration '2 days'; a duration is a number and a unit: 30s, 90m, 12h, 2d, 1w",
        12,
        14,
    ),
    Broken(
        "zero-duration",
        HEAD + MAIL + WAIT.replace("timeout: 2d", "timeout: 0h") + DONE,
        "duration '0h' must be longer than zero",
        12,
        14,
    ),
    Broken(
        "duration-not-a-string",
        HEAD + MAIL + WAIT.replace("timeout: 2d", "timeout: 48") + DONE,
        "expected a duration string, got 48",
        12,
        14,
    ),
    Broken(
        "cron-with-four-fields",
        """\
journey: t
entry:
  schedule: "0 9 * *"
  condition: traits.active == true
steps:
  - id: done
    type: exit
""",
        "invalid cron '0 9 * *': five fields are needed (minute hour day month weekday)",
        3,
        13,
    ),
    Broken(
        "cron-hour-out-of-range",
        """\
journey: t
entry:
  schedule: "0 25 * * mon"
  condition: traits.active == true
steps:
  - id: done
    type: exit
""",
        "invalid cron '0 25 * * mon'",
        3,
        13,
    ),
    Broken(
        "goal-event-never-arrives",
        HEAD.replace("steps:\n", "goal:\n  event: order_complete\nsteps:\n") + MAIL + WAIT + DONE,
        "goal event 'order_complete' can never arrive: it is neither in the tracking plan "
        "([events] known in the config) nor produced by a configured channel "
        "(did you mean 'order_completed'?)",
        5,
        10,
    ),
    Broken(
        "exit-event-never-arrives",
        HEAD.replace("steps:\n", "exit_on: [email.unsubscribe]\nsteps:\n") + MAIL + WAIT + DONE,
        "exit event 'email.unsubscribe' can never arrive: email channels produce only: "
        "email.bounced, email.clicked, email.delivered, email.opened, email.unsubscribed "
        "(did you mean 'email.unsubscribed'?)",
        4,
        11,
    ),
    Broken(
        "wait-for-event-never-arrives",
        HEAD + MAIL + WAIT.replace("for: [email.opened]", "for: [site.opened]") + DONE,
        "wait 'wait' event 'site.opened' can never arrive: site channels produce only: "
        "site.clicked, site.dismissed, site.viewed",
        11,
        11,
    ),
    Broken(
        "goal-is-also-exit-event",
        HEAD.replace(
            "steps:\n", "goal:\n  event: order_completed\nexit_on: [order_completed]\nsteps:\n"
        )
        + MAIL
        + WAIT
        + DONE,
        "'order_completed' is both the goal and an exit event",
        5,
        10,
    ),
    Broken(
        "paid-step-first",
        HEAD + "  - id: ads\n    type: send\n    channel: retargeting\n" + MAIL + WAIT + DONE,
        "paid channel step 'ads' (channel 'retargeting') can be reached without an owned "
        "channel getting no reaction first",
        7,
        14,
    ),
    Broken(
        "paid-step-after-a-reaction",
        HEAD
        + MAIL
        + WAIT.replace("on_reaction: done", "on_reaction: ads")
        + "  - id: ads\n    type: send\n    channel: retargeting\n    next: done\n"
        + DONE,
        "paid channel step 'ads' (channel 'retargeting') can be reached without an owned "
        "channel getting no reaction first: reach it only through the on_timeout of a wait "
        "after an email or site message, or set 'owned_first: false' on the journey",
        17,
        14,
    ),
    Broken(
        "paid-step-after-a-wait-with-no-owned-send",
        HEAD + "  - id: pause\n    type: wait\n    for: [order_completed]\n    timeout: 1d\n"
        "    on_reaction: done\n    on_timeout: ads\n"
        "  - id: ads\n    type: send\n    channel: retargeting\n    next: done\n" + DONE,
        "paid channel step 'ads' (channel 'retargeting') can be reached without an owned",
        13,
        14,
    ),
    Broken(
        "unknown-top-level-field-suggests",
        HEAD.replace("steps:\n", "stepz: []\nsteps:\n") + MAIL + WAIT + DONE,
        "unknown field 'stepz' (did you mean 'steps'?); valid fields here: description, entry, "
        "exit_on, goal, journey, owned_first, quiet_hours, segments, steps, transactional",
        4,
        1,
    ),
    Broken(
        "unknown-step-field-suggests",
        HEAD
        + MAIL.replace("    template: reminder\n", "    template: reminder\n    nxet: wait\n")
        + WAIT
        + DONE,
        "unknown field 'nxet' (did you mean 'next'?); valid fields here: channel, id, label, "
        "next, on_cap, template, type, variants",
        9,
        5,
    ),
    Broken(
        "missing-entry",
        "journey: t\nsteps:\n" + MAIL + WAIT + DONE,
        "missing required field 'entry'",
        1,
        1,
    ),
    Broken(
        "step-missing-channel",
        HEAD + MAIL.replace("    channel: email\n", "") + WAIT + DONE,
        "missing required field 'channel' in this send step",
        5,
        5,
    ),
    Broken(
        "unknown-step-type-suggests",
        HEAD + MAIL.replace("type: send", "type: sned") + WAIT + DONE,
        "unknown step type 'sned' (did you mean 'send'?); valid types: send, wait, delay, "
        "split, experiment, exit",
        6,
        11,
    ),
    Broken(
        "step-without-type",
        HEAD + MAIL.replace("    type: send\n", "") + WAIT + DONE,
        "a step needs 'type': one of send, wait, delay, split, experiment, exit",
        5,
        5,
    ),
    Broken(
        "invalid-step-id",
        HEAD + MAIL.replace("id: mail", "id: 1st mail") + WAIT + DONE,
        "invalid id '1st mail': ids start with a letter and use letters, digits, '_' and '-'",
        5,
        9,
    ),
    Broken(
        "invalid-journey-name",
        HEAD.replace("journey: t", "journey: Cart Recovery") + MAIL + WAIT + DONE,
        "invalid journey 'Cart Recovery': journey names are lower-case",
        1,
        10,
    ),
    Broken(
        "invalid-event-name",
        HEAD.replace("event: cart_abandoned", "event: cart abandoned") + MAIL + WAIT + DONE,
        "invalid event 'cart abandoned': event names start with a letter",
        3,
        10,
    ),
    Broken(
        "condition-syntax-error-column",
        HEAD.replace(
            "  event: cart_abandoned\n", "  event: cart_abandoned\n  where: properties.total >\n"
        )
        + MAIL
        + WAIT
        + DONE,
        "bad condition: not a valid expression: it ends too early; something is missing at the end",
        4,
        # the end of the expression, where the missing operand goes
        28,
    ),
    Broken(
        "condition-single-equals",
        HEAD.replace(
            "  event: cart_abandoned\n", "  event: cart_abandoned\n  where: traits.country = 'NL'\n"
        )
        + MAIL
        + WAIT
        + DONE,
        "bad condition: not a valid expression: invalid syntax; compare with ==",
        4,
        25,
    ),
    Broken(
        "condition-dunder-column",
        HEAD.replace(
            "  event: cart_abandoned\n",
            "  event: cart_abandoned\n  where: properties.total > 0 and traits.__class__\n",
        )
        + MAIL
        + WAIT
        + DONE,
        "bad condition: field names may not start with an underscore",
        4,
        # '__class__' starts at offset 32 in the expression, which starts at column 10
        42,
    ),
    Broken(
        "condition-unknown-function-column",
        HEAD.replace(
            "  event: cart_abandoned\n", "  event: cart_abandoned\n  where: open('x') == 1\n"
        )
        + MAIL
        + WAIT
        + DONE,
        "bad condition: unknown function 'open'; available: count, days_since, segment, "
        "exists, lower, len",
        4,
        10,
    ),
    Broken(
        "unknown-segment",
        HEAD
        + """\
  - id: pick
    type: split
    branches:
      - when: segment('vipp')
        next: mail
    otherwise: mail
"""
        + MAIL
        + WAIT
        + DONE,
        "unknown segment 'vipp' (did you mean 'vip'?); segments are: vip",
        8,
        15,
    ),
    Broken(
        "segment-defined-through-itself",
        HEAD.replace(
            "entry:", "segments:\n  a: segment('b') and traits.x == 1\n  b: segment('a')\nentry:"
        )
        + DONE,
        "segment 'a' is defined through itself (a -> b -> a); break the circle",
        3,
        6,
    ),
    Broken(
        "duplicate-yaml-key",
        HEAD
        + MAIL.replace("    template: reminder\n", "    template: reminder\n    channel: site\n")
        + WAIT
        + DONE,
        "duplicate key 'channel': each key may appear once",
        9,
        5,
    ),
    Broken(
        "yaml-syntax-error",
        HEAD + MAIL.replace("    template: reminder\n", "   template: reminder\n") + WAIT + DONE,
        "YAML syntax error",
        8,
        4,
    ),
    Broken(
        "entry-with-two-triggers",
        HEAD.replace("  event: cart_abandoned\n", "  event: cart_abandoned\n  manual: true\n")
        + MAIL
        + WAIT
        + DONE,
        "entry: an entry has exactly one trigger; found event and manual",
        3,
        3,
    ),
    Broken(
        "entry-without-trigger",
        HEAD.replace("  event: cart_abandoned\n", "  reentry: always\n") + MAIL + WAIT + DONE,
        "an entry needs one of: event, condition, schedule (with condition) or manual",
        3,
        3,
    ),
    Broken(
        "entry-where-without-event",
        HEAD.replace(
            "  event: cart_abandoned\n",
            "  condition: traits.active == true\n  where: properties.total > 1\n",
        )
        + MAIL
        + WAIT
        + DONE,
        "'where' filters the entry event; use 'condition' for traits",
        3,
        3,
    ),
    Broken(
        "invalid-reentry",
        HEAD.replace("  event: cart_abandoned\n", "  event: cart_abandoned\n  reentry: sometimes\n")
        + MAIL
        + WAIT
        + DONE,
        "invalid reentry 'sometimes': use never, always or 'after 30d'",
        4,
        12,
    ),
    Broken(
        "reentry-after-bad-duration",
        HEAD.replace(
            "  event: cart_abandoned\n", "  event: cart_abandoned\n  reentry: after a while\n"
        )
        + MAIL
        + WAIT
        + DONE,
        "invalid reentry 'after a while'",
        4,
        12,
    ),
    Broken(
        "invalid-key",
        HEAD.replace("  event: cart_abandoned\n", "  event: cart_abandoned\n  key: cart_id\n")
        + MAIL
        + WAIT
        + DONE,
        "invalid key 'cart_id': name an event property or trait, e.g. properties.cart_id",
        4,
        8,
    ),
    Broken(
        "experiment-duplicate-arms",
        HEAD
        + """\
  - id: test
    type: experiment
    arms:
      - { name: a, weight: 50, next: mail }
      - { name: a, weight: 50, next: mail }
"""
        + MAIL
        + WAIT
        + DONE,
        "experiment arm names must be unique",
        5,
        5,
    ),
    Broken(
        "experiment-two-controls",
        HEAD
        + """\
  - id: test
    type: experiment
    arms:
      - { name: a, weight: 50, next: mail, control: true }
      - { name: b, weight: 50, next: done, control: true }
"""
        + MAIL
        + WAIT
        + DONE,
        "an experiment may have at most one control arm",
        5,
        5,
    ),
    Broken(
        "experiment-one-arm",
        HEAD
        + """\
  - id: test
    type: experiment
    arms:
      - { name: a, weight: 50, next: mail }
"""
        + MAIL
        + WAIT
        + DONE,
        "List should have at least 2 items",
        8,
        7,
    ),
    Broken(
        "experiment-zero-weight",
        HEAD
        + """\
  - id: test
    type: experiment
    arms:
      - { name: a, weight: 0, next: mail }
      - { name: b, weight: 1, next: done }
"""
        + MAIL
        + WAIT
        + DONE,
        "Input should be greater than 0",
        8,
        28,
    ),
    Broken(
        "delay-without-duration-or-until",
        HEAD + MAIL + "  - id: pause\n    type: delay\n" + WAIT + DONE,
        "a delay needs a duration (e.g. 1d) or until (e.g. 09:00-18:00)",
        9,
        5,
    ),
    Broken(
        "invalid-time-window",
        HEAD + MAIL + '  - id: pause\n    type: delay\n    until: "9-17"\n' + WAIT + DONE,
        "invalid time window '9-17': write HH:MM-HH:MM, e.g. 09:00-17:30",
        11,
        12,
    ),
    Broken(
        "unknown-timezone",
        """\
journey: t
entry:
  schedule: "0 9 * * mon"
  timezone: Mars/Olympus
  condition: traits.active == true
steps:
  - id: done
    type: exit
""",
        "unknown timezone 'Mars/Olympus': use an IANA name such as Europe/Amsterdam or UTC",
        4,
        13,
    ),
    Broken(
        "last-send-without-next",
        HEAD + MAIL,
        "step 'mail' is the last step and has no next",
        5,
        5,
    ),
    Broken(
        "on-reaction-for-event-not-waited",
        HEAD
        + MAIL
        + WAIT.replace(
            "    on_reaction: done\n",
            "    on_reaction:\n      email.opened: done\n      email.clicked: done\n",
        )
        + DONE,
        "on_reaction names 'email.clicked', which this wait does not wait for; "
        "it waits for: email.opened",
        15,
        7,
    ),
    Broken(
        "match-message-without-send",
        HEAD
        + WAIT.replace("    timeout: 2d\n", "    timeout: 2d\n    match_message: true\n")
        + DONE,
        "wait 'wait' matches the message just sent, but no send step comes before it",
        9,
        20,
    ),
    Broken(
        "match-message-wrong-medium",
        HEAD
        + MAIL
        + WAIT.replace("for: [email.opened]", "for: [site.clicked]\n    match_message: true")
        + DONE,
        "wait 'wait' waits for 'site.clicked' about the message from 'mail', an email message: "
        "that event can never arrive for it; wait for email.bounced, email.clicked, "
        "email.delivered, email.opened, email.unsubscribed",
        11,
        11,
    ),
    Broken(
        "send-needs-template",
        HEAD + MAIL.replace("    template: reminder\n", "") + WAIT + DONE,
        "send step 'mail' on channel 'email' needs a template",
        5,
        5,
    ),
    Broken(
        "not-a-mapping",
        "- journey: t\n- steps: []\n",
        "a journey file is a mapping with 'journey', 'entry' and 'steps' at the top; found list",
        1,
        1,
    ),
    Broken(
        "empty-file",
        "# nothing here\n",
        "the file is empty: a journey needs at least 'journey', 'entry' and 'steps'",
        1,
        1,
    ),
]

CASES += [
    Broken(
        "loop-through-a-delay-with-only-until",
        HEAD
        + MAIL
        + """\
    next: office_hours
  - id: office_hours
    type: delay
    until: "09:00-17:00"
    next: mail
"""
        + WAIT
        + DONE,
        "steps mail -> office_hours -> mail form a loop with no wait or delay",
        5,
        9,
    ),
    Broken(
        "condition-counts-an-event-that-never-arrives",
        HEAD.replace(
            "  event: cart_abandoned\n",
            "  event: cart_abandoned\n  where: days_since('order_complete') > 30\n",
        )
        + MAIL
        + WAIT
        + DONE,
        "the condition counts event 'order_complete', which can never arrive: it is neither "
        "in the tracking plan",
        4,
        10,
    ),
    Broken(
        "entry-event-never-arrives",
        HEAD.replace("event: cart_abandoned", "event: cart_abandonned") + MAIL + WAIT + DONE,
        "entry event 'cart_abandonned' can never arrive",
        3,
        10,
    ),
    Broken(
        "quiet-hours-unknown-timezone",
        HEAD.replace(
            "steps:\n",
            "quiet_hours:\n  window: '21:00-08:00'\n"
            "  default_timezone: Europe/Amsterdamm\nsteps:\n",
        )
        + MAIL
        + WAIT
        + DONE,
        "unknown timezone 'Europe/Amsterdamm'",
        6,
        21,
    ),
    Broken(
        "invalid-segment-name",
        HEAD.replace("steps:\n", "segments:\n  big spenders: traits.total > 100\nsteps:\n")
        + MAIL
        + WAIT
        + DONE,
        "invalid name 'big spenders' in segments: names start with a letter",
        5,
        3,
    ),
    Broken(
        "on-reaction-of-the-wrong-kind",
        HEAD + MAIL + WAIT.replace("on_reaction: done", "on_reaction: [done]") + DONE,
        "step 'wait': on_reaction: write a step id (on_reaction: thanks), or a mapping from "
        "each awaited event to a step id",
        13,
        18,
    ),
    Broken(
        "wait-for-of-the-wrong-kind",
        HEAD + MAIL + WAIT.replace("for: [email.opened]", "for: [[email.opened]]") + DONE,
        "step 'wait': for[0]: write an event name (email.opened) or {event: email.clicked, "
        "where: ...}",
        11,
        11,
    ),
    Broken(
        "weekday-misspelt",
        HEAD + MAIL + "  - id: pause\n    type: delay\n    until:\n      window: '09:00-17:00'\n"
        "      days: [mon, thurs]\n" + WAIT + DONE,
        "step 'pause': until.days[1]: Input should be 'mon', 'tue', 'wed', 'thu', 'fri', "
        "'sat' or 'sun'",
        13,
        19,
    ),
]
