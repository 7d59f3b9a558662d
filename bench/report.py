"""The one way a benchmark reports: JSON on stdout, a rich table on stderr, and a file.

Every benchmark ends with ``emit(name, rows, meta)``:

* ``rows`` are the measurements, one mapping per row, all rows with the same keys
  (e.g. ``{"case": "1000 journeys", "seconds": 0.81}``);
* ``meta`` says what was measured and how (sizes, repeats, the command);
* the machine (cpu count, python version, platform) and a UTC timestamp are added here so
  no benchmark forgets them.

The JSON goes to stdout so ``python -m bench.x | jq`` works; the table goes to stderr for
the human watching. The same document is written to ``bench/results/<name>.json``
(git-ignored); ``docs/benchmarks.md`` keeps the figures worth remembering.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def document(
    name: str, rows: Sequence[Mapping[str, object]], meta: Mapping[str, object]
) -> dict[str, Any]:
    """The JSON document ``emit`` prints and writes (exposed for tests and reuse)."""
    if not _NAME.match(name):
        raise ValueError(f"benchmark name {name!r}: use letters, digits, '.', '_' and '-'")
    return {
        "name": name,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "meta": dict(meta),
        "rows": [dict(r) for r in rows],
    }


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table(name: str, rows: Sequence[Mapping[str, object]]) -> Table:
    """The rows as a rich table; columns in first-seen order across all rows."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    t = Table(title=name)
    for c in columns:
        t.add_column(c, justify="left" if not rows or isinstance(rows[0].get(c), str) else "right")
    for r in rows:
        t.add_row(*(_cell(r.get(c, "")) for c in columns))
    return t


def emit(
    name: str,
    rows: Sequence[Mapping[str, object]],
    meta: Mapping[str, object],
    *,
    results_dir: Path | None = None,
    stdout: Any = None,
    stderr: Any = None,
) -> Path:
    """Print ``rows`` as JSON (stdout) and as a table (stderr); write the JSON to
    ``<results_dir>/<name>.json`` and return that path."""
    doc = document(name, rows, meta)
    text = json.dumps(doc, indent=2, default=str)
    (stdout or sys.stdout).write(text + "\n")
    Console(file=stderr or sys.stderr, highlight=False).print(table(name, rows))
    directory = results_dir or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(text + "\n", encoding="utf-8")
    return path
