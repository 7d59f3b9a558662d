"""The designer's commands: ``parcours validate``, ``graph`` and ``schema``, run through
typer's CliRunner on the real application and the default configuration."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema_rs
import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "journeys" / "examples"
CONFIG = ROOT / "config" / "parcours.toml"

runner = CliRunner()

BROKEN = """\
journey: broken
entry:
  event: cart_abandoned
steps:
  - id: mail
    type: send
    channel: emial
    template: cart_reminder
  - id: wait
    type: wait
    for: [email.opened]
    on_reaction: done
    on_timeout: done
  - id: done
    type: exit
"""


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # the default configuration names journeys and templates relative to the repository
    monkeypatch.chdir(ROOT)


def test_validate_examples_exits_0() -> None:
    result = runner.invoke(app, ["validate", "journeys/examples", "--config", str(CONFIG)])
    assert result.exit_code == 0, result.output
    for name in ("cart-recovery", "welcome-series", "win-back"):
        assert re.search(
            rf"ok journeys/examples/{name}\.yaml: journey '{name}' version [0-9a-f]{{16}}",
            result.output,
        )


def test_validate_broken_file_exits_1_with_file_line_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = runner.invoke(app, ["validate", str(path), "--config", str(CONFIG)])
    assert result.exit_code == 1
    out = result.output
    assert f"{path}:7:14: error: unknown channel 'emial' (did you mean 'email'?)" in out
    assert f"{path}:9:5: error: wait step 'wait' has no timeout" in out
    assert "2 problems; nothing was loaded" in out
    assert "ok " not in out


def test_validate_is_all_or_nothing_across_files(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text((EXAMPLES / "cart-recovery.yaml").read_text())
    (tmp_path / "bad.yaml").write_text(BROKEN)
    result = runner.invoke(app, ["validate", str(tmp_path), "--config", str(CONFIG)])
    assert result.exit_code == 1
    assert "cart-recovery" not in result.output
    assert f"{tmp_path / 'bad.yaml'}:7:14:" in result.output


def test_validate_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "syntax.yaml"
    path.write_text("journey: x\nentry: [\n")
    result = runner.invoke(app, ["validate", str(path), "--config", str(CONFIG)])
    assert result.exit_code == 1
    assert re.search(rf"{re.escape(str(path))}:\d+:\d+: error: YAML syntax error", result.output)


def test_validate_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    result = runner.invoke(app, ["validate", str(path), "--config", str(CONFIG)])
    assert result.exit_code == 1
    assert f"{path}: error: no such file or directory" in result.output
    assert ":0:0" not in result.output  # a file-level problem has no line to point at


NODE = re.compile(r'^    (s\d+)(?:\[/|\{\{|\(\[|\[|\{)"([^"]*)"')


def test_graph_cart_recovery_prints_mermaid_with_every_step_and_edge() -> None:
    result = runner.invoke(app, ["graph", "cart-recovery", "--config", str(CONFIG)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "flowchart TD"
    doc = yaml.safe_load((EXAMPLES / "cart-recovery.yaml").read_text())
    steps = [s["id"] for s in doc["steps"]]
    nodes = {m[1]: m[2] for line in lines if (m := NODE.match(line))}
    assert len(nodes) == len(steps)
    ids = {}
    for sid in steps:
        (nid,) = [
            n for n, label in nodes.items() if label.split("<br/>")[0] in (sid, _label(doc, sid))
        ]
        ids[sid] = nid
    assert f"    entry --> {ids[steps[0]]}" in lines
    # the escalation: email wait -> timeout -> site banner -> timeout -> paid retargeting
    assert any(
        line.startswith(f'    {ids["wait_email"]} -. "no reaction in 2d" .-> {ids["site_banner"]}')
        for line in lines
    )
    assert any(
        line.startswith(f'    {ids["wait_site"]} -. "no reaction in 3d" .-> {ids["retarget"]}')
        for line in lines
    )
    assert f"    class {ids['retarget']} paid" in lines
    assert f"    class {ids['reminder_email']} owned" in lines
    assert '    goal(("goal: order_completed within 2w<br/>from any step"))' in lines
    # every label is quoted: an odd number of quotes on a line would break the diagram
    assert all(line.count('"') % 2 == 0 for line in lines)


def _label(doc: dict[str, object], sid: str) -> str | None:
    steps = doc["steps"]
    assert isinstance(steps, list)
    step = next(s for s in steps if s["id"] == sid)
    label = step.get("label")
    return str(label).replace('"', "#quot;") if label else None


def test_graph_from_a_file_and_as_dot() -> None:
    result = runner.invoke(
        app, ["graph", "journeys/examples/win-back.yaml", "-f", "dot", "--config", str(CONFIG)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith('digraph "win-back" {')


def test_graph_unknown_journey_names_the_known_ones() -> None:
    result = runner.invoke(app, ["graph", "cart-recovry", "--config", str(CONFIG)])
    assert result.exit_code == 2
    assert "no journey named 'cart-recovry'" in result.output
    assert "cart-recovery" in result.output


def test_schema_prints_the_json_schema_that_examples_validate_against() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema == json.loads((ROOT / "docs" / "journey.schema.json").read_text())
    validator = jsonschema_rs.validator_for(schema)
    for path in sorted(EXAMPLES.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        assert [e.message for e in validator.iter_errors(doc)] == [], path
    assert not validator.is_valid(yaml.safe_load(BROKEN) | {"stepz": []})


def test_validate_refuses_a_directory_without_journeys(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "no journey files" in result.output


def test_schema_writes_a_file(tmp_path: Path) -> None:
    target = tmp_path / "journey.schema.json"
    result = CliRunner().invoke(app, ["schema", "--output", str(target)])
    assert result.exit_code == 0
    assert json.loads(target.read_text())["title"] == "parcours journey"
