"""The load benchmark's journeys stay valid and representative, and the shared report
helper prints and records what it is given. (Timings are asserted only by the benchmark
itself, never here: machines are shared and noisy.)"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest

from bench.journey_load import STEPS_PER_JOURNEY, catalog, generate, main
from bench.report import document, emit
from journeys import load_texts


def test_generated_journeys_load_with_every_step_type_and_conditions() -> None:
    loaded = load_texts(generate(40), catalog())
    assert len(loaded) == 40
    kinds: Counter[str] = Counter()
    entries: set[str] = set()
    for v in loaded:
        assert len(v.steps) == STEPS_PER_JOURNEY
        kinds.update(type(s).__name__ for s in v.steps.values())
        entries.add(v.definition.entry.kind)
        assert len(v.conditions) >= 7
        assert any(c.uses_history for c in v.conditions.values())
    assert set(kinds) == {
        "SendStep",
        "WaitStep",
        "DelayStep",
        "SplitStep",
        "ExperimentStep",
        "ExitStep",
    }
    assert entries == {"event", "schedule"}
    assert len({v.version for v in loaded}) == 40


def test_generation_is_deterministic() -> None:
    assert generate(5, seed=3) == generate(5, seed=3)
    assert generate(5, seed=3) != generate(5, seed=4)


def test_emit_prints_json_and_a_table_and_writes_the_file(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    rows = [{"case": "small", "seconds": 0.25, "count": 1000}, {"case": "big", "seconds": 2.5}]
    path = emit("unit-test", rows, {"command": "x"}, results_dir=tmp_path, stdout=out, stderr=err)
    assert path == tmp_path / "unit-test.json"
    printed = json.loads(out.getvalue())
    assert printed == json.loads(path.read_text())
    assert printed["rows"] == rows
    assert printed["meta"] == {"command": "x"}
    assert {"nproc", "python", "platform"} <= set(printed["machine"])
    table = err.getvalue()
    assert "unit-test" in table and "small" in table and "1,000" in table and "0.25" in table


def test_document_refuses_names_that_are_not_file_names() -> None:
    with pytest.raises(ValueError, match="benchmark name"):
        document("../escape", [], {})


def test_benchmark_runs_end_to_end_on_a_small_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("bench.report.RESULTS_DIR", tmp_path)
    assert main(["--journeys", "20", "--repeat", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "journey_load"
    assert doc["meta"]["journeys"] == 20
    assert doc["meta"]["steps"] == 20 * STEPS_PER_JOURNEY
    assert (tmp_path / "journey_load.json").exists()
