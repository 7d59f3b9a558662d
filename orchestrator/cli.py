"""The ``parcours`` command line: the journey designer's and the operator's tools.

Commands that only read journeys (``validate``, ``graph``, ``schema``) need no database;
the runtime commands live in ``orchestrator.cli_runtime`` and are registered here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from journeys import JourneyLoadError, JourneySet, json_schema, load_paths
from journeys.graph import dot, mermaid
from journeys.loader import journey_files
from orchestrator.catalog import build_catalog
from orchestrator.config import ConfigError, Settings, load_settings

app = typer.Typer(
    name="parcours",
    help="Cross-channel customer journeys: owned channels first, paid audiences only when "
    "there is no reaction.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="configuration file (default: config/parcours.toml)"),
]


def settings_or_exit(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


def load_journeys_or_exit(settings: Settings, paths: list[Path] | None = None) -> JourneySet:
    """Load journeys (the configured ones unless ``paths`` are given), or print every
    problem with its location and exit 1."""
    try:
        catalog = build_catalog(settings)
        return load_paths(paths or [Path(p) for p in settings.journeys], catalog)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except JourneyLoadError as exc:
        for p in exc.problems:
            where = f"{p.file}:{p.line}:{p.column}" if p.line else p.file
            err.print(f"[bold]{escape(where)}:[/bold] [red]error:[/red] {escape(p.message)}")
        n = len(exc.problems)
        err.print(f"[red]{n} problem{'s' if n != 1 else ''}[/red]; nothing was loaded")
        raise typer.Exit(1) from None


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="journey files or directories")],
    config: ConfigOption = None,
) -> None:
    """Check journeys against the language and the configuration; exit 1 on any problem."""
    settings = settings_or_exit(config)
    if not journey_files(paths):
        shown = ", ".join(str(p) for p in paths)
        err.print(f"[red]error:[/red] no journey files (*.yaml, *.yml) in {escape(shown)}")
        raise typer.Exit(1)
    loaded = load_journeys_or_exit(settings, paths)
    for v in loaded:
        out.print(
            f"[green]ok[/green] {v.source}: journey {v.name!r} version {v.version}, "
            f"{len(v.steps)} steps"
        )


@app.command()
def graph(
    journey: Annotated[str, typer.Argument(help="journey name or file")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="mermaid or dot")] = "mermaid",
    config: ConfigOption = None,
) -> None:
    """Print a diagram of a journey: steps, reaction and timeout edges, goal and exits."""
    settings = settings_or_exit(config)
    as_path = Path(journey)
    if as_path.suffix in (".yaml", ".yml") or as_path.exists():
        loaded = load_journeys_or_exit(settings, [as_path])
        version = next(iter(loaded))
    else:
        loaded = load_journeys_or_exit(settings)
        try:
            version = loaded[journey]
        except KeyError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc.args[0]))}")
            raise typer.Exit(2) from None
    chans = build_catalog(settings).channels or {}

    def is_paid(name: str) -> bool:
        return name in chans and chans[name].kind == "paid"

    if fmt == "mermaid":
        sys.stdout.write(mermaid(version, is_paid))
    elif fmt == "dot":
        sys.stdout.write(dot(version, is_paid))
    else:
        err.print(f"[red]error:[/red] unknown format {fmt!r}; use mermaid or dot")
        raise typer.Exit(2)


@app.command()
def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to this file instead")
    ] = None,
) -> None:
    """Print the JSON Schema of the journey format (for editor completion and checks)."""
    text = json.dumps(json_schema(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        out.print(f"wrote {output}")


def _register_runtime() -> None:
    import importlib

    try:
        runtime = importlib.import_module("orchestrator.cli_runtime")
    except ModuleNotFoundError:  # pragma: no cover - during bootstrap only
        return
    runtime.register(app)


_register_runtime()


def main() -> None:
    app()
