"""Message templates: a directory of YAML files, one template per file, rendered with Jinja2.

Why this shape:

* One file per template, named by its stem, so the journey validator can check a
  ``template: welcome`` reference with :meth:`TemplateSet.names` before anything runs.
* The kind follows from the parts: ``subject``/``text``/``html`` is an email, ``slot``/``html``
  (and an optional ``ttl``) a site message, ``body`` (a JSON object whose string values are
  templates) a webhook payload.
* Rendering runs in Jinja2's *immutable sandbox*: templates are written by designers, not
  trusted code, so ``{{ ''.__class__.__mro__ }}`` and friends raise a clear error instead of
  reaching Python internals. HTML parts are autoescaped; subjects, text and webhook values
  are not (they are not HTML, and JSON encoding is done afterwards).
* Undefined variables are errors (``StrictUndefined``): a half-personalised email is worse
  than a delivery that fails with "customer.first_name is undefined". ``default`` still
  works: ``{{ customer.first_name | default('daar') }}``.
* Syntax errors are reported when the set is loaded, with file and line, and nothing is
  half-loaded: every problem of the directory is collected into one ``TemplateLoadError``.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2 import Template as JinjaTemplate
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from channels.base import Recipient
from channels.durations import parse_duration
from channels.tracking import UNSUBSCRIBE_PLACEHOLDER

TemplateKind = Literal["email", "site", "webhook"]

#: Parts each kind may have; the first group is required.
_REQUIRED: Mapping[TemplateKind, tuple[str, ...]] = {
    "email": ("subject",),
    "site": ("slot", "html"),
    "webhook": ("body",),
}
_OPTIONAL: Mapping[TemplateKind, tuple[str, ...]] = {
    "email": ("text", "html"),
    "site": ("ttl",),
    "webhook": (),
}
_HTML_PARTS = frozenset({"html"})
_MAX_STRING = 1_000_000
_MISSING_RE = re.compile(r"^(\S+) is undefined")


class TemplateRenderError(Exception):
    """Rendering one template part failed; says which template, part and variable."""

    def __init__(self, template: str, part: str, message: str, variable: str | None = None):
        super().__init__(f"template {template!r}, part {part!r}: {message}")
        self.template = template
        self.part = part
        self.variable = variable


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    """One thing wrong in a template file, with where it is."""

    path: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.message}"


class TemplateLoadError(ValueError):
    """The template directory cannot be loaded; ``problems`` lists every reason."""

    def __init__(self, problems: list[TemplateProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class _Missing(StrictUndefined):
    """``StrictUndefined`` whose message names the full variable path (customer.first_name)."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        name = self._undefined_name
        parent = getattr(self._undefined_obj, "_parcours_path", None)
        path = f"{parent}.{name}" if parent and name is not None else str(name)
        return f"{path} is undefined"


class _Scope(dict[str, Any]):
    """A context mapping that knows its own path, so a missing key can be named."""

    _parcours_path: str = ""


def _scoped(value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        scope = _Scope({str(k): _scoped(v, f"{path}.{k}") for k, v in value.items()})
        scope._parcours_path = path
        return scope
    if isinstance(value, list | tuple):
        return [_scoped(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus a cap on ``*`` and ``**`` so ``'x' * 10**10`` cannot eat
    the dispatcher's memory."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**" and isinstance(right, int) and right > 100:
            raise SecurityError("exponent too large in template")
        if operator_ == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > _MAX_STRING:
                    raise SecurityError("result of * too large in template")
            return operator.mul(left, right)
        return super().call_binop(context, operator_, left, right)


def _environment(autoescape: bool) -> _Sandbox:
    env = _Sandbox(undefined=_Missing, autoescape=autoescape, keep_trailing_newline=False)
    for unsafe_global in ("cycler", "joiner", "lipsum"):
        env.globals.pop(unsafe_global, None)
    return env


_HTML_ENV = _environment(autoescape=True)
_TEXT_ENV = _environment(autoescape=False)

#: A compiled webhook body: nested dicts/lists whose string leaves are templates.
CompiledBody = Any


@dataclass(frozen=True, slots=True)
class Template:
    """One loaded, compiled template."""

    name: str
    kind: TemplateKind
    path: Path
    parts: Mapping[str, JinjaTemplate] = field(default_factory=dict)
    body: CompiledBody = None
    ttl: timedelta | None = None


def customer_context(recipient: Recipient) -> dict[str, Any]:
    """What templates see as ``customer``: the traits plus ``id`` and ``email``."""
    customer: dict[str, Any] = dict(recipient.traits)
    customer["id"] = recipient.customer_id
    customer["email"] = recipient.email
    return customer


class TemplateSet:
    """All templates of a directory, by name."""

    def __init__(self, templates: Mapping[str, Template]) -> None:
        self._templates = dict(templates)

    @classmethod
    def load(cls, directory: str | Path) -> TemplateSet:
        """Load every ``*.yaml``/``*.yml`` file or raise ``TemplateLoadError`` with all problems."""
        root = Path(directory)
        if not root.is_dir():
            raise TemplateLoadError([TemplateProblem(root, None, "template directory not found")])
        problems: list[TemplateProblem] = []
        templates: dict[str, Template] = {}
        files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
        for path in files:
            if path.stem in templates:
                problems.append(TemplateProblem(path, None, f"second template named {path.stem!r}"))
                continue
            template = _load_file(path, problems)
            if template is not None:
                templates[template.name] = template
        if problems:
            raise TemplateLoadError(problems)
        return cls(templates)

    def names(self) -> frozenset[str]:
        """The template names, for the journey validator."""
        return frozenset(self._templates)

    def __contains__(self, name: object) -> bool:
        return name in self._templates

    def get(self, name: str) -> Template:
        try:
            return self._templates[name]
        except KeyError:
            known = ", ".join(sorted(self._templates)) or "none"
            raise KeyError(f"unknown template {name!r}; known templates: {known}") from None

    def kind(self, name: str) -> TemplateKind:
        return self.get(name).kind

    def render(
        self,
        name: str,
        *,
        recipient: Recipient,
        event: Mapping[str, Any] | None = None,
        journey: Any = None,
        step: Any = None,
        unsubscribe_url: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """Render every part of template ``name`` for one recipient.

        Returns the ``Delivery.content`` mapping: ``subject``/``text``/``html`` for email,
        ``slot``/``html`` (plus ``ttl`` and, when ``now`` is given, ``expires_at`` in ISO
        8601) for site messages, ``body`` (a JSON document) for webhooks. Raises
        ``TemplateRenderError`` naming the template, part and missing variable.
        Without ``unsubscribe_url``, ``{{ unsubscribe_url }}`` renders a placeholder that
        ``tracking.apply_tracking`` replaces with the delivery's signed URL.
        """
        template = self.get(name)
        context = {
            "customer": _scoped(customer_context(recipient), "customer"),
            "event": _scoped(dict(event or {}), "event"),
            "journey": _scoped(journey, "journey"),
            "step": _scoped(step, "step"),
        }
        context["unsubscribe_url"] = unsubscribe_url or UNSUBSCRIBE_PLACEHOLDER
        out: dict[str, str] = {}
        for part, compiled in template.parts.items():
            out[part] = _render_part(name, part, partial(compiled.render, context))
        if template.kind == "webhook":
            rendered = _render_body(name, template.body, context, "body")
            out["body"] = json.dumps(rendered, ensure_ascii=False, sort_keys=True)
        if template.ttl is not None:
            out["ttl"] = f"{int(template.ttl.total_seconds())}s"
            if now is not None:
                out["expires_at"] = (now + template.ttl).isoformat()
        return out


def _render_part(template: str, part: str, render: Callable[[], str]) -> str:
    try:
        return render()
    except UndefinedError as exc:
        message = str(exc)
        found = _MISSING_RE.match(message)
        variable = found.group(1) if found else None
        hint = (
            f"; pass it in the customer traits or event, or write "
            f"{{{{ {variable} | default('...') }}}}"
            if variable
            else ""
        )
        raise TemplateRenderError(template, part, message + hint, variable=variable) from None
    except SecurityError as exc:
        raise TemplateRenderError(
            template, part, f"blocked by the template sandbox: {exc}"
        ) from None
    except Exception as exc:
        raise TemplateRenderError(template, part, f"{type(exc).__name__}: {exc}") from None


def _render_body(template: str, node: CompiledBody, context: Mapping[str, Any], path: str) -> Any:
    if isinstance(node, JinjaTemplate):
        return _render_part(template, path, partial(node.render, context))
    if isinstance(node, dict):
        return {k: _render_body(template, v, context, f"{path}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_render_body(template, v, context, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


def _first_line(node: yaml.Node) -> int:
    """1-based file line where the scalar's text starts (block scalars start a line later)."""
    line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        line += 1
    return line


def _compile(
    path: Path, part: str, source: str, node: yaml.Node, problems: list[TemplateProblem]
) -> JinjaTemplate | None:
    env = _HTML_ENV if part in _HTML_PARTS else _TEXT_ENV
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        line = _first_line(node) + (exc.lineno or 1) - 1
        problems.append(TemplateProblem(path, line, f"part {part!r}: {exc.message}"))
        return None


def _node_for(mapping: yaml.Node, key: str) -> yaml.Node:
    if isinstance(mapping, yaml.MappingNode):
        for key_node, value_node in mapping.value:
            if getattr(key_node, "value", None) == key:
                return cast(yaml.Node, value_node)
    return mapping


def _compile_body(
    path: Path, value: Any, node: yaml.Node, problems: list[TemplateProblem], where: str
) -> CompiledBody:
    if isinstance(value, str):
        if "{" not in value:  # no Jinja syntax: a constant, not worth a render per send
            return value
        return _compile(path, where, value, node, problems)
    if isinstance(value, dict):
        return {
            str(k): _compile_body(path, v, _node_for(node, str(k)), problems, f"{where}.{k}")
            for k, v in value.items()
        }
    if isinstance(value, list):
        items = node.value if isinstance(node, yaml.SequenceNode) else [node] * len(value)
        return [
            _compile_body(path, v, n, problems, f"{where}[{i}]")
            for i, (v, n) in enumerate(zip(value, items, strict=False))
        ]
    return value


def _detect_kind(data: Mapping[str, Any]) -> TemplateKind | None:
    declared = data.get("kind")
    if declared in _REQUIRED:
        return cast(TemplateKind, declared)
    if "subject" in data:
        return "email"
    if "slot" in data:
        return "site"
    if "body" in data:
        return "webhook"
    return None


def _load_file(path: Path, problems: list[TemplateProblem]) -> Template | None:
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        problems.append(TemplateProblem(path, line, f"invalid YAML: {exc.problem}"))
        return None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problems.append(TemplateProblem(path, None, f"cannot read template: {exc}"))
        return None
    if not isinstance(data, dict) or node is None:
        problems.append(TemplateProblem(path, 1, "a template file must be a YAML mapping"))
        return None
    kind = _detect_kind(data)
    if kind is None:
        problems.append(
            TemplateProblem(
                path,
                1,
                "cannot tell the template kind: an email has 'subject' (and 'text'/'html'), "
                "a site message 'slot' and 'html', a webhook 'body'",
            )
        )
        return None
    allowed = {"kind", *_REQUIRED[kind], *_OPTIONAL[kind]}
    before = len(problems)
    for key in data:
        if key not in allowed:
            line = _node_for(node, str(key)).start_mark.line + 1
            valid = ", ".join(sorted(allowed))
            problems.append(
                TemplateProblem(path, line, f"unknown key {key!r} for a {kind} template ({valid})")
            )
    for key in _REQUIRED[kind]:
        if key not in data:
            problems.append(TemplateProblem(path, 1, f"a {kind} template needs {key!r}"))
    if kind == "email" and "text" not in data and "html" not in data:
        problems.append(TemplateProblem(path, 1, "an email template needs 'text' or 'html'"))
    if len(problems) > before:
        return None

    parts: dict[str, JinjaTemplate] = {}
    body: CompiledBody = None
    ttl: timedelta | None = None
    for key, value in data.items():
        value_node = _node_for(node, str(key))
        if key == "kind":
            continue
        if key == "ttl":
            try:
                ttl = parse_duration(str(value))
            except ValueError as exc:
                problems.append(TemplateProblem(path, _first_line(value_node), str(exc)))
            continue
        if key == "body":
            if not isinstance(value, dict):
                problems.append(
                    TemplateProblem(path, _first_line(value_node), "'body' must be a mapping")
                )
                continue
            body = _compile_body(path, value, value_node, problems, "body")
            continue
        if not isinstance(value, str):
            problems.append(
                TemplateProblem(path, _first_line(value_node), f"part {key!r} must be text")
            )
            continue
        compiled = _compile(path, str(key), value, value_node, problems)
        if compiled is not None:
            parts[str(key)] = compiled
    if len(problems) > before:
        return None
    return Template(name=path.stem, kind=kind, path=path, parts=parts, body=body, ttl=ttl)
