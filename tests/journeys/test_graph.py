"""Journey diagrams: the Mermaid flowchart has every step as a node, every edge, and labels
that are quoted and escaped so any designer text renders as written. When node and npm are
available the diagram also goes through the real Mermaid parser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from journeys import JourneyVersion
from journeys.graph import dot, mermaid
from tests.journeys.helpers import CATALOG, load

ESCALATION = """\
journey: escalate
entry:
  event: cart_abandoned
  where: properties.total > 0
  key: properties.cart_id
goal:
  event: order_completed
  within: 14d
exit_on: [email.unsubscribed]
steps:
  - id: mail
    label: Reminder "1"
    type: send
    channel: email
    template: reminder
  - id: wait
    type: wait
    for: [email.opened, email.clicked]
    timeout: 2d
    on_reaction: done
    on_timeout: pick
  - id: pick
    type: split
    branches:
      - when: 'traits.note == "50% off <b>now</b> & #1 %% not a comment"'
        next: ads
    otherwise: test
  - id: test
    type: experiment
    arms:
      - { name: a, weight: 1, next: pause }
      - { name: b, weight: 1, next: done, control: true }
  - id: ads
    type: send
    channel: retargeting
  - id: pause
    type: delay
    duration: 1d
    until: "09:00-17:00"
    next: done
  - id: done
    type: exit
    reason: "the end"
"""

NODE = re.compile(
    r"^    (?P<id>\w+)"
    r"(?P<open>\[/|\{\{|\(\[|\(\(|\[|\{)"
    r'"(?P<label>[^"]*)"'
    r"(?P<close>/\]|\}\}|\]\)|\)\)|\]|\})$"
)
EDGE = re.compile(
    r"^    (?P<a>\w+) "
    r'(?:(?P<solid>-- "(?P<l1>[^"]*)" -->)|(?P<dotted>-\. "(?P<l2>[^"]*)" \.->)|-->) '
    r"(?P<b>\w+)$"
)


def parse(diagram: str) -> tuple[dict[str, str], list[tuple[str, str, str, bool]]]:
    """Nodes (id -> label) and edges (from, to, label, dotted) of our Mermaid output; every
    other line must be a known statement, so nothing unparsed slips through."""
    lines = diagram.splitlines()
    assert lines[0] == "flowchart TD"
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str, bool]] = []
    for line in lines[1:]:
        if m := NODE.match(line):
            nodes[m["id"]] = m["label"]
        elif m := EDGE.match(line):
            edges.append((m["a"], m["b"], m["l1"] or m["l2"] or "", bool(m["dotted"])))
        elif re.match(r"^    goal --> converted\(\[\"converted\"\]\)$", line):
            edges.append(("goal", "converted", "", False))
        elif m := re.match(r'^    (exit\d+) --> exited\(\["exited"\]\)$', line):
            edges.append((m[1], "exited", "", False))
        else:
            assert re.match(r"^    (classDef \w+ \S+|class \w+ \w+)$", line), line
    return nodes, edges


@pytest.fixture(scope="module")
def version() -> JourneyVersion:
    return load(ESCALATION)


def is_paid(name: str) -> bool:
    return CATALOG.channels is not None and CATALOG.channels[name].kind == "paid"


def test_every_step_is_a_node_and_every_edge_is_drawn(version: JourneyVersion) -> None:
    nodes, edges = parse(mermaid(version, is_paid))
    ids = {sid: f"s{i}" for i, sid in enumerate(version.steps)}
    for sid, nid in ids.items():
        assert nid in nodes
        step = version.steps[sid]
        assert nodes[nid].startswith((step.label or sid).replace('"', "#quot;"))
    drawn = {(a, b, label) for a, b, label, _ in edges}
    assert ("entry", ids[version.start], "") in drawn
    for e in version.edges:
        assert (ids[e.source], ids[e.target], e.label.translate(ESC)) in drawn, e
    # timeouts are dotted, every other edge solid
    dotted = {(a, b) for a, b, _, d in edges if d}
    assert dotted == {(ids["wait"], ids["pick"])}
    assert ("goal", "converted", "") in drawn
    assert ("exit0", "exited", "") in drawn


ESC = str.maketrans(
    {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;", "%": "#37;"}
)


def test_labels_are_quoted_and_escaped(version: JourneyVersion) -> None:
    diagram = mermaid(version, is_paid)
    nodes, edges = parse(diagram)
    assert nodes["s0"].startswith("Reminder #quot;1#quot;<br/>send via email")
    branch = next(label for a, _, label, _ in edges if a == "s2" and label != "otherwise")
    assert branch == (
        "traits.note == #quot;50#37; off #lt;b#gt;now#lt;/b#gt; #amp; #35;1 "
        "#37;#37; not a comment#quot;"
    )
    # nothing a designer writes can open a comment, a tag or close a quote
    for label in [*nodes.values(), *(e[2] for e in edges)]:
        assert "%%" not in label
        assert '"' not in label
        assert "<" not in label.replace("<br/>", "")


def test_nodes_have_a_shape_and_class_by_kind(version: JourneyVersion) -> None:
    diagram = mermaid(version, is_paid)
    assert '    s1{{"wait<br/>wait up to 2d for email.opened / email.clicked"}}' in diagram
    assert '    s2{"pick<br/>split"}' in diagram
    assert '    s3{"test<br/>experiment"}' in diagram
    assert '    s5[/"pause<br/>delay 1d then until 09:00-17:00 local"/]' in diagram
    assert '    s6(["done<br/>exit: the end"])' in diagram
    assert "    class s4 paid" in diagram
    assert "    class s0 owned" in diagram
    assert "class s2 " not in diagram  # splits are not coloured


def test_entry_goal_and_exit_nodes(version: JourneyVersion) -> None:
    diagram = mermaid(version)
    assert (
        '    entry(["entry: event cart_abandoned<br/>where properties.total #gt; 0'
        '<br/>one per properties.cart_id<br/>re-entry never"])'
    ) in diagram
    assert '    goal(("goal: order_completed within 2w<br/>from any step"))' in diagram
    assert '    exit0(("exit on email.unsubscribed<br/>from any step"))' in diagram


def test_dot_has_every_step_and_edge(version: JourneyVersion) -> None:
    text = dot(version, is_paid)
    assert text.startswith('digraph "escalate" {')
    for sid in version.steps:
        assert f'  "{sid}" [shape=' in text
    for e in version.edges:
        assert f'  "{e.source}" -> "{e.target}"' in text
    assert '"ads" [shape=box, color=red' in text
    assert 'label="Reminder \\"1\\"\\nsend via email' in text


# -- the real Mermaid parser ---------------------------------------------------------------
CHECKER = Path(__file__).parent / "mermaid"


def _mermaid_dir() -> Path:
    """A cache directory with mermaid and jsdom installed; skip (saying why) if impossible."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to run the real Mermaid parser")
    cache = Path(
        os.environ.get("PARCOURS_MERMAID_CACHE", Path.home() / ".cache" / "parcours-mermaid")
    )
    cache.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "check.mjs"):
        src, dst = CHECKER / name, cache / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)
    if not (cache / "node_modules" / "mermaid").is_dir():
        try:
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--silent"],
                cwd=cache,
                check=True,
                capture_output=True,
                timeout=240,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"could not install mermaid with npm into {cache}: {exc}")
    return cache


def real_parse(diagram: str) -> dict[str, Any]:
    cache = _mermaid_dir()
    run = subprocess.run(
        ["node", str(cache / "check.mjs")],
        input=diagram,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result: dict[str, Any] = json.loads(run.stdout or '{"ok": false, "error": "no output"}')
    assert result["ok"], f"Mermaid rejected the diagram: {result.get('error')}\n{diagram}"
    return result


@pytest.fixture(scope="module")
def parsed(version: JourneyVersion) -> dict[str, Any]:
    return real_parse(mermaid(version, is_paid))


def test_mermaid_parses_it_as_a_flowchart(parsed: dict[str, Any]) -> None:
    assert parsed["type"] == "flowchart-v2"


def test_mermaid_sees_every_step_and_edge(version: JourneyVersion, parsed: dict[str, Any]) -> None:
    ids = {sid: f"s{i}" for i, sid in enumerate(version.steps)}
    vertices: dict[str, str] = parsed["vertices"]
    assert set(ids.values()) | {"entry", "goal", "converted", "exit0", "exited"} == set(vertices)
    edges = {(e["start"], e["end"], e["text"]) for e in parsed["edges"]}
    for e in version.edges:
        assert (ids[e.source], ids[e.target], e.label) in edges
    assert len(parsed["edges"]) == len(version.edges) + 3  # entry, goal and exit arrows


def test_mermaid_shows_designer_text_as_written(parsed: dict[str, Any]) -> None:
    vertices: dict[str, str] = parsed["vertices"]
    assert vertices["s0"] == 'Reminder "1"\nsend via email\ntemplate reminder'
    assert vertices["s6"] == "done\nexit: the end"
    branch = next(e["text"] for e in parsed["edges"] if e["start"] == "s2" and e["end"] == "s4")
    assert branch == 'traits.note == "50% off <b>now</b> & #1 %% not a comment"'
