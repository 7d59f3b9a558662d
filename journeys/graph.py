"""Journey diagrams: Mermaid (renders on GitHub, GitLab and in most editors) and Graphviz DOT.

We render from the journey itself rather than from the state machine because a designer
needs what a machine does not know: the channel and template of a send, the timeout of a
wait, the goal and exit events that apply from every step, and which channels are paid.
"""

from __future__ import annotations

from collections.abc import Callable

from journeys.compiler import JourneyVersion
from journeys.durations import format_duration
from journeys.schema import DelayStep, ExitStep, ExperimentStep, SendStep, SplitStep, WaitStep
from journeys.validate import AnyStep

PaidCheck = Callable[[str], bool]


def _plain(text: str) -> str:
    return text


def _label(step: AnyStep, esc: Callable[[str], str] = _plain) -> str:
    """The lines of a step's box, joined with ``<br/>``; ``esc`` escapes the designer's
    text (ids, labels, names) but not the ``<br/>`` separators we put between them."""
    title = esc(step.label or step.id)
    if isinstance(step, SendStep):
        detail = f"send via {esc(step.channel)}"
        if step.template:
            detail += f"<br/>template {esc(step.template)}"
        if step.variants:
            detail += f"<br/>{len(step.variants)} variant(s)"
        return f"{title}<br/>{detail}"
    if isinstance(step, WaitStep):
        events = esc(" / ".join(m.event for m in step.for_))
        t = format_duration(step.timeout) if step.timeout else "?"
        return f"{title}<br/>wait up to {t} for {events}"
    if isinstance(step, DelayStep):
        parts = []
        if step.duration:
            parts.append(f"delay {format_duration(step.duration)}")
        if step.until:
            parts.append(f"until {esc(step.until.window)} local")
        return f"{title}<br/>{' then '.join(parts)}"
    if isinstance(step, SplitStep):
        return f"{title}<br/>split"
    if isinstance(step, ExperimentStep):
        return f"{title}<br/>experiment"
    return f"{title}<br/>exit: {esc(step.reason)}"


#: Mermaid entity codes for every character that could end a quoted label, start markup or
#: markdown, or be read as an entity; one pass, so the codes themselves are never re-escaped.
_MERMAID_ESCAPES = str.maketrans(
    {
        "#": "#35;",
        '"': "#quot;",
        "<": "#lt;",
        ">": "#gt;",
        "&": "#amp;",
        "`": "#96;",
        "%": "#37;",  # "%%" starts a Mermaid comment, even inside quotes
        "\n": " ",
        "\r": " ",
    }
)


def _esc(text: str) -> str:
    """Designer text made safe inside a quoted Mermaid label (shown as written)."""
    return text.translate(_MERMAID_ESCAPES)


def mermaid(version: JourneyVersion, is_paid: PaidCheck | None = None) -> str:
    """A Mermaid flowchart of the journey: steps, reaction and timeout edges, goal, exits."""
    j = version.definition
    ids = {sid: f"s{i}" for i, sid in enumerate(version.steps)}
    lines = ["flowchart TD"]
    entry = j.entry
    if entry.kind == "event":
        text = f"entry: event {_esc(entry.event or '')}"
        if entry.where:
            text += f"<br/>where {_esc(entry.where)}"
    elif entry.kind == "schedule":
        text = f"entry: schedule {_esc(entry.schedule or '')}"
    elif entry.kind == "manual":
        text = "entry: manual enrollment"
    else:
        text = f"entry: when {_esc(entry.condition or '')}"
    if entry.key:
        text += f"<br/>one per {_esc(entry.key)}"
    text += f"<br/>re-entry {_esc(entry.reentry)}"
    lines.append(f'    entry(["{text}"])')
    for sid, step in version.steps.items():
        label = _label(step, _esc)
        nid = ids[sid]
        if isinstance(step, WaitStep):
            lines.append(f'    {nid}{{{{"{label}"}}}}')
        elif isinstance(step, (SplitStep, ExperimentStep)):
            lines.append(f'    {nid}{{"{label}"}}')
        elif isinstance(step, ExitStep):
            lines.append(f'    {nid}(["{label}"])')
        elif isinstance(step, DelayStep):
            lines.append(f'    {nid}[/"{label}"/]')
        else:
            lines.append(f'    {nid}["{label}"]')
    lines.append(f"    entry --> {ids[version.start]}")
    for e in version.edges:
        a, b = ids[e.source], ids[e.target]
        if e.kind == "timeout":
            lines.append(f'    {a} -. "{_esc(e.label)}" .-> {b}')
        elif e.label:
            lines.append(f'    {a} -- "{_esc(e.label)}" --> {b}')
        else:
            lines.append(f"    {a} --> {b}")
    if j.goal:
        g = f"goal: {_esc(j.goal.event)}"
        if j.goal.within:
            g += f" within {format_duration(j.goal.within)}"
        lines.append(f'    goal(("{g}<br/>from any step"))')
        lines.append('    goal --> converted(["converted"])')
    for k, m in enumerate(j.exit_on):
        lines.append(f'    exit{k}(("exit on {_esc(m.event)}<br/>from any step"))')
        lines.append(f'    exit{k} --> exited(["exited"])')
    lines += [
        "    classDef owned fill:#e3f2fd,stroke:#1565c0",
        "    classDef paid fill:#fdecea,stroke:#c62828,stroke-width:2px",
        "    classDef wait fill:#fff8e1,stroke:#f9a825",
        "    classDef done fill:#e8f5e9,stroke:#2e7d32",
    ]
    for sid, step in version.steps.items():
        if isinstance(step, SendStep):
            cls = "paid" if is_paid and is_paid(step.channel) else "owned"
        elif isinstance(step, (WaitStep, DelayStep)):
            cls = "wait"
        elif isinstance(step, ExitStep):
            cls = "done"
        else:
            continue
        lines.append(f"    class {ids[sid]} {cls}")
    return "\n".join(lines) + "\n"


def dot(version: JourneyVersion, is_paid: PaidCheck | None = None) -> str:
    """The same diagram as Graphviz DOT, for ``dot -Tsvg``."""

    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("<br/>", "\\n") + '"'

    lines = [f"digraph {q(version.name)} {{", "  rankdir=TB; node [fontname=Helvetica];"]
    lines.append(f"  entry [shape=oval, label={q('entry')}];")
    for sid, step in version.steps.items():
        shape = {
            WaitStep: "hexagon",
            SplitStep: "diamond",
            ExperimentStep: "diamond",
            ExitStep: "oval",
            DelayStep: "parallelogram",
        }.get(type(step), "box")
        color = (
            "red" if isinstance(step, SendStep) and is_paid and is_paid(step.channel) else "black"
        )
        lines.append(f"  {q(sid)} [shape={shape}, color={color}, label={q(_label(step))}];")
    lines.append(f"  entry -> {q(version.start)};")
    for e in version.edges:
        style = "dashed" if e.kind == "timeout" else "solid"
        lines.append(f"  {q(e.source)} -> {q(e.target)} [label={q(e.label)}, style={style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
