"""Reading YAML: the same values PyYAML's safe loader builds, plus where each came from."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml

from journeys.yamlsource import Position, read_yaml

SCALARS = """\
a: 1
b: '1'
c: "yes"
d: yes
e: ~
f: 0o17
g: 1_000
h: 1e3
i: .NaN
j: 2001-12-14t21:59:43.10-05:00
k: !!str 5
l: [1, "2", three, null, true, Off, ON, -x, <]
m: {x: 1}
n: !!int "7"
o: -.inf
p: 0x_1F
q: +12
s: 1:30
u: 2024-01-31
v: |
  block
w: "multi
  line"
z: ''
empty:
"""


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def test_values_match_pyyaml_safe_load() -> None:
    ours, _, problems = read_yaml(SCALARS, "f.yaml")
    assert problems == []
    theirs = yaml.safe_load(SCALARS)
    assert list(ours) == list(theirs)
    for key in theirs:
        assert same(ours[key], theirs[key]), key


def test_a_lone_equals_sign_is_a_string() -> None:
    assert read_yaml("reason: =\n", "f.yaml")[0] == {"reason": "="}


def test_positions_of_values_and_keys() -> None:
    text = "journey: t\nsteps:\n  - id: a\n    next:   b\n  - [x, y]\n"
    _, smap, _ = read_yaml(text, "f.yaml")
    assert smap.locate(("journey",)) == Position(1, 10)
    assert smap.locate(("journey",), key=True) == Position(1, 1)
    assert smap.locate(("steps", 0, "next")) == Position(4, 13)
    assert smap.locate(("steps", 0, "next"), key=True) == Position(4, 5)
    assert smap.locate(("steps", 1, 1)) == Position(5, 9)
    # a path that goes further than the file points at the nearest existing value
    assert smap.locate(("steps", 0, "missing", 3)) == Position(3, 5)
    assert smap.locate(("steps", 7)) == Position(3, 3)
    assert smap.locate(()) == Position(1, 1)


def test_duplicate_keys_are_reported_and_the_first_is_located() -> None:
    _, smap, problems = read_yaml("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert [(p.line, p.column, p.message) for p in problems] == [
        (3, 1, "duplicate key 'a': each key may appear once")
    ]
    assert smap.locate(("a",)) == Position(1, 4)


@pytest.mark.parametrize(
    ("text", "message", "line", "column"),
    [
        ("a: [1, 2\n", "YAML syntax error", 2, 1),
        ("a: 1\n b: 2\n", "YAML syntax error", 2, 3),
        ("? [a, b]\n: 1\n", "mapping keys must be plain strings", 1, 3),
        ("a: !!float abc\n", "bad value", 1, 4),
        ("a: !!timestamp 2024-13-45\n", "bad value", 1, 4),
        ("a: !!python/name:os.system x\n", "bad value", 1, 4),
        ("a: *nope\n", "YAML syntax error", 1, 4),
        ("<<: 5\n", "'<<' merges a mapping (or a list of mappings)", 1, 5),
        ("", "the file is empty", 1, 1),
    ],
)
def test_problems_are_located(text: str, message: str, line: int, column: int) -> None:
    data, _, problems = read_yaml(text, "f.yaml")
    assert problems, data
    p = problems[0]
    assert message in p.message
    assert (p.file, p.line, p.column) == ("f.yaml", line, column)


def test_merge_keys_written_keys_win() -> None:
    data, _, problems = read_yaml(
        "base: &b {x: 1, y: 2}\nmore: &m {z: 3}\nc:\n  <<: [*b, *m]\n  y: 9\n", "f.yaml"
    )
    assert problems == []
    assert data["c"] == {"y": 9, "x": 1, "z": 3}
