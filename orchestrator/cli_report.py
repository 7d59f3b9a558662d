"""``parcours report JOURNEY``: the funnel, conversions by channel, experiment results and
the paid-audience figures of a running journey, as tables, JSON or an SVG funnel chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from orchestrator.cli import ConfigOption, err, out, settings_or_exit


def report(
    journey: Annotated[str, typer.Argument(help="journey name")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="also write the funnel as an SVG bar chart")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """What a journey did and was worth: funnel per step, conversions by the channel of
    the last reaction, experiment arms against control, paid audience and spend saved."""
    from orchestrator.cli_runtime import _runtime
    from orchestrator.reports import funnel_svg, print_report, report_for

    rt = _runtime(settings_or_exit(config), channels=False)
    try:
        result = report_for(rt, journey)
    except KeyError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc.args[0]))}")
        raise typer.Exit(2) from None
    if chart is not None:
        chart.write_text(funnel_svg(result), encoding="utf-8")
    if as_json:
        out.print_json(json.dumps(result.as_dict()))
        return
    print_report(result, out)
    if chart is not None:
        out.print(f"funnel chart written to {chart}")


__all__ = ["report"]
