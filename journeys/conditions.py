"""The condition language: one small, safe expression form for entries, splits, variants,
goals and segments.

Why this shape: designers already read ``traits.country == 'NL' and properties.total > 20``.
We reuse Python's parser (``ast.parse(mode="eval")``) for the syntax and its column
offsets, accept only a whitelist of node types, and compile the tree into closures. Nothing
is ever passed to ``eval``/``exec``; attribute access only reads keys of plain mappings, so
there is no route to Python objects. Compiled closures evaluate in microseconds, which
matters on the event hot path.

The language (documented in ``docs/conditions.md``):

* names: ``traits.<field>``, ``properties.<field>`` (the current event), ``customer.id``,
  ``customer.timezone``, ``event`` (the current event's name), ``arm`` (the customer's
  experiment arm in this journey), ``true``/``false``/``null``;
* literals: numbers, strings, lists; operators ``and or not == != < <= > >= in not in
  + - * /``; a missing field is ``null``, and ordering against ``null`` is false;
* functions: ``count(event, within='90d', where="properties.category == 'x'")``,
  ``days_since(event)`` (``null`` if never), ``segment(name)``, ``exists(value)``,
  ``lower(text)``, ``len(value)``.
"""

from __future__ import annotations

import ast
import difflib
import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from journeys.durations import parse_duration
from journeys.errors import ConditionError


class HistoryScope(Protocol):
    """What a condition may ask about a customer beyond the values at hand.

    The orchestrator implements it with database queries; ``StaticScope`` implements it
    over an in-memory event list for previews and tests.
    """

    def count_events(
        self, name: str, within: timedelta | None, where: Callable[[Mapping[str, Any]], bool] | None
    ) -> int: ...

    def days_since(self, name: str) -> float | None: ...

    def in_segment(self, name: str) -> bool: ...


@dataclass(slots=True)
class Scope:
    """The values a condition reads, plus the history it may query."""

    traits: Mapping[str, Any] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)
    customer: Mapping[str, Any] = field(default_factory=dict)
    event: str | None = None
    history: HistoryScope | None = None
    #: The customer's arm of this journey's experiment (``None`` before any experiment step):
    #: content variants per arm are written ``when: arm == 'discount'``.
    arm: str | None = None


@dataclass(frozen=True, slots=True)
class PastEvent:
    """An event in a customer's history, for ``StaticScope``."""

    name: str
    at: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class StaticScope:
    """History over an in-memory list: for ``simulate`` previews and tests."""

    events: Sequence[PastEvent]
    now: datetime
    segments: Mapping[str, Callable[[], bool]] = field(default_factory=dict)

    def count_events(
        self, name: str, within: timedelta | None, where: Callable[[Mapping[str, Any]], bool] | None
    ) -> int:
        since = self.now - within if within else None
        return sum(
            1
            for e in self.events
            if e.name == name
            and (since is None or e.at >= since)
            and (where is None or where(e.properties))
        )

    def days_since(self, name: str) -> float | None:
        times = [e.at for e in self.events if e.name == name]
        if not times:
            return None
        return (self.now - max(times)).total_seconds() / 86400

    def in_segment(self, name: str) -> bool:
        check = self.segments.get(name)
        return bool(check and check())


Evaluator = Callable[[Scope], Any]

_ROOTS = ("traits", "properties", "customer")
_CONSTANTS: Mapping[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}
_FUNCTIONS = ("count", "days_since", "segment", "exists", "lower", "len")
_CMP: Mapping[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_ARITH: Mapping[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
MAX_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled condition. ``segments`` and ``events`` list what it refers to, so the
    validator can check that they exist and the engine knows what history it needs."""

    source: str
    evaluate: Evaluator
    segments: frozenset[str]
    events: frozenset[str]
    uses_history: bool

    def __call__(self, scope: Scope) -> bool:
        return bool(self.evaluate(scope))


def compile_condition(source: str) -> Condition:
    """Parse and compile ``source``; raise ConditionError with the offending offset."""
    if not isinstance(source, str) or not source.strip():
        raise ConditionError(
            "a condition must be a non-empty expression, e.g. traits.country == 'NL'"
        )
    if len(source) > MAX_LENGTH:
        raise ConditionError(f"a condition may be at most {MAX_LENGTH} characters")
    text = " ".join(source.splitlines())
    lead = len(text) - len(text.lstrip())
    body = text.strip()
    try:
        tree = ast.parse(body, mode="eval")
    except SyntaxError as exc:
        if not exc.offset or exc.offset > len(body):
            # Python reports an expression that stops half-way at offset 0; the designer
            # needs the end, where the missing part goes.
            raise ConditionError(
                "not a valid expression: it ends too early; something is missing at the end",
                lead + len(body),
            ) from None
        at = exc.offset - 1
        hint = ""
        if body[at : at + 1] == "=" and body[at : at + 2] != "==":
            hint = "; compare with == (a single = assigns, which a condition cannot)"
        raise ConditionError(f"not a valid expression: {exc.msg}{hint}", lead + at) from None
    except (ValueError, RecursionError, MemoryError):
        raise ConditionError("not a valid expression") from None
    if "#" in body:
        _refuse_comments(body, lead)
    compiler = _Compiler(lead, body)
    try:
        fn = compiler.node(tree.body)
    except RecursionError:
        raise ConditionError("the expression is nested too deeply") from None
    return Condition(
        source=source,
        evaluate=fn,
        segments=frozenset(compiler.segments),
        events=frozenset(compiler.events),
        uses_history=compiler.uses_history,
    )


def _refuse_comments(body: str, lead: int) -> None:
    """Python would read ``# ...`` as a comment and silently drop the rest of the
    condition; a '#' belongs inside quotes."""
    import io
    import tokenize

    try:
        for tok in tokenize.generate_tokens(io.StringIO(body).readline):
            if tok.type == tokenize.COMMENT:
                raise ConditionError(
                    "'#' outside quotes would make the rest of the condition a comment; "
                    "put it inside quotes, e.g. traits.code == '#1'",
                    lead + tok.start[1],
                )
    except (tokenize.TokenError, SyntaxError):  # pragma: no cover - ast.parse accepted it
        return


def _field(root: str, keys: tuple[str, ...]) -> Evaluator:
    """Read ``root.key1.key2...`` from a scope; a missing key or a non-mapping is null."""
    if len(keys) == 1:
        (key,) = keys

        def one(s: Scope) -> Any:
            value = getattr(s, root)
            return value.get(key) if isinstance(value, Mapping) else None

        return one

    def walk(s: Scope) -> Any:
        value = getattr(s, root)
        for key in keys:
            if not isinstance(value, Mapping):
                return None
            value = value.get(key)
        return value

    return walk


def _get(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(key)
    return None


def _safe_cmp(op: Callable[[Any, Any], bool], a: Any, b: Any) -> bool:
    if op in (operator.eq, operator.ne):
        return op(a, b)
    if a is None or b is None:
        return False
    try:
        return op(a, b)
    except TypeError:
        return False


def _contains(container: Any, item: Any) -> bool:
    if container is None:
        return False
    try:
        return item in container
    except TypeError:
        return False


class _Compiler:
    """Turns a whitelisted AST into closures, collecting what the expression refers to."""

    def __init__(self, lead: int, body: str = "") -> None:
        self.lead = lead
        self.body = body
        self.ascii = body.isascii()
        self.segments: set[str] = set()
        self.events: set[str] = set()
        self.uses_history = False

    def col(self, byte_offset: int) -> int:
        """Python's AST counts columns in UTF-8 bytes; designers count characters."""
        if self.ascii:
            return byte_offset
        return len(self.body.encode()[:byte_offset].decode("utf-8", errors="ignore"))

    def fail(self, node: ast.AST, message: str) -> ConditionError:
        return ConditionError(message, self.lead + self.col(getattr(node, "col_offset", 0)))

    def node(self, n: ast.AST) -> Evaluator:
        if isinstance(n, ast.BoolOp):
            parts = [self.node(v) for v in n.values]
            if isinstance(n.op, ast.And):
                return lambda s: all(p(s) for p in parts)
            return lambda s: any(p(s) for p in parts)
        if isinstance(n, ast.UnaryOp):
            inner = self.node(n.operand)
            if isinstance(n.op, ast.Not):
                return lambda s: not inner(s)
            if isinstance(n.op, ast.USub):
                return lambda s: _neg(inner(s))
            raise self.fail(n, "only 'not' and '-' may stand before a value")
        if isinstance(n, ast.Compare):
            return self.compare(n)
        if isinstance(n, ast.BinOp):
            op = _ARITH.get(type(n.op))
            if op is None:
                raise self.fail(n, "only + - * / are allowed as arithmetic")
            left, right = self.node(n.left), self.node(n.right)
            return lambda s: _arith(op, left(s), right(s))
        if isinstance(n, ast.Constant):
            if not isinstance(n.value, (str, int, float, bool)) and n.value is not None:
                raise self.fail(n, "only numbers, strings, true, false and null are literals")
            value = n.value
            return lambda s: value
        if isinstance(n, (ast.List, ast.Tuple)):
            items = [self.node(e) for e in n.elts]
            return lambda s: [i(s) for i in items]
        if isinstance(n, ast.Name):
            return self.name(n)
        if isinstance(n, ast.Attribute):
            return self.attribute(n)
        if isinstance(n, ast.Subscript):
            path = self.field_path(n)
            if path is not None:
                return _field(*path)
            if not isinstance(n.slice, ast.Constant) or not isinstance(n.slice.value, str):
                raise self.fail(n, "use a quoted key: traits['first name']")
            base, key = self.node(n.value), n.slice.value
            return lambda s: _get(base(s), key)
        if isinstance(n, ast.Call):
            return self.call(n)
        raise self.fail(
            n,
            f"'{type(n).__name__}' is not allowed in a condition; "
            "see docs/conditions.md for what is",
        )

    def compare(self, n: ast.Compare) -> Evaluator:
        operands = [self.node(n.left), *(self.node(c) for c in n.comparators)]
        steps: list[Callable[[Any, Any], bool]] = []
        for op in n.ops:
            if isinstance(op, ast.In):
                steps.append(lambda a, b: _contains(b, a))
            elif isinstance(op, ast.NotIn):
                steps.append(lambda a, b: not _contains(b, a))
            elif isinstance(op, (ast.Eq, ast.NotEq)):
                steps.append(_CMP[type(op)])  # equality is defined for every pair, null too
            elif type(op) in _CMP:
                steps.append(functools.partial(_safe_cmp, _CMP[type(op)]))
            else:
                raise self.fail(n, "use == != < <= > >= in or 'not in' to compare")
        if len(steps) == 1:  # the usual case: one closure, no loop
            step, (left_fn, right_fn) = steps[0], operands
            return lambda s: step(left_fn(s), right_fn(s))

        def run(s: Scope) -> bool:
            left = operands[0](s)
            for step, right_fn in zip(steps, operands[1:], strict=True):
                right = right_fn(s)
                if not step(left, right):
                    return False
                left = right
            return True

        return run

    def name(self, n: ast.Name) -> Evaluator:
        if n.id in _CONSTANTS:
            value = _CONSTANTS[n.id]
            return lambda s: value
        if n.id == "event":
            return lambda s: s.event
        if n.id == "arm":
            return lambda s: s.arm
        if n.id in _ROOTS:
            root = n.id
            return lambda s: getattr(s, root)
        raise self.fail(
            n,
            f"unknown name {n.id!r}: write traits.{n.id}, properties.{n.id} or customer.{n.id},"
            " or quote it as a string",
        )

    def attribute(self, n: ast.Attribute) -> Evaluator:
        path = self.field_path(n)
        if path is not None:
            return _field(*path)
        base = self.node(n.value)
        key = self.field_name(n)
        return lambda s: _get(base(s), key)

    def field_name(self, n: ast.Attribute) -> str:
        key = n.attr
        if key.startswith("_"):
            # point at the field name itself, not at the start of the whole expression
            end = n.end_col_offset if n.end_col_offset is not None else n.col_offset
            raise ConditionError(
                "field names may not start with an underscore",
                self.lead + self.col(end) - len(key),
            )
        return key

    def field_path(self, n: ast.expr) -> tuple[str, tuple[str, ...]] | None:
        """``traits.address.city`` as ``("traits", ("address", "city"))``: a field read
        becomes one closure walking the keys, rather than one closure per dot."""
        keys: list[str] = []
        chain: list[ast.Attribute | ast.Subscript] = []
        while isinstance(n, (ast.Attribute, ast.Subscript)):
            chain.append(n)
            n = n.value
        if not (isinstance(n, ast.Name) and n.id in _ROOTS):
            return None
        for link in reversed(chain):  # left to right, so the first bad name is reported
            if isinstance(link, ast.Attribute):
                keys.append(self.field_name(link))
            elif isinstance(link.slice, ast.Constant) and isinstance(link.slice.value, str):
                keys.append(link.slice.value)
            else:
                raise self.fail(link, "use a quoted key: traits['first name']")
        return n.id, tuple(keys)

    def call(self, n: ast.Call) -> Evaluator:
        available = ", ".join(_FUNCTIONS)
        if not isinstance(n.func, ast.Name):
            raise self.fail(
                n,
                f"unknown function: only {available} can be called, "
                "as in lower(traits.name) (not traits.name.lower())",
            )
        if n.func.id not in _FUNCTIONS:
            close = difflib.get_close_matches(n.func.id, _FUNCTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.fail(n, f"unknown function {n.func.id!r}{hint}; available: {available}")
        fname = n.func.id
        kwargs = {k.arg: k.value for k in n.keywords if k.arg}
        if any(k.arg is None for k in n.keywords) or any(
            isinstance(a, ast.Starred) for a in n.args
        ):
            raise self.fail(n, "* and ** are not allowed")
        if fname in ("exists", "lower", "len"):
            if len(n.args) != 1 or kwargs:
                raise self.fail(n, f"{fname}() takes exactly one value")
            arg = self.node(n.args[0])
            if fname == "exists":
                return lambda s: arg(s) is not None
            if fname == "lower":
                return lambda s: v.lower() if isinstance(v := arg(s), str) else v
            return lambda s: len(v) if isinstance(v := arg(s), (str, list, dict)) else 0
        if fname == "segment":
            seg = self.literal_str(n, n.args, "segment('name')")
            self.segments.add(seg)
            self.uses_history = True
            return lambda s: bool(s.history and s.history.in_segment(seg))
        if fname == "days_since":
            ev = self.literal_str(n, n.args, "days_since('email.opened')")
            self.events.add(ev)
            self.uses_history = True
            return lambda s: s.history.days_since(ev) if s.history else None
        # count(event, within='90d', where="...")
        if not n.args or len(n.args) > 1 or set(kwargs) - {"within", "where"}:
            raise self.fail(n, "use count('event', within='90d', where=\"properties.x == 1\")")
        ev = self.literal_str(n, n.args, "count('order_completed')")
        self.events.add(ev)
        self.uses_history = True
        within: timedelta | None = None
        if "within" in kwargs:
            w = kwargs["within"]
            if not isinstance(w, ast.Constant) or not isinstance(w.value, str):
                raise self.fail(w, "within= takes a quoted duration such as '90d'")
            try:
                within = parse_duration(w.value)
            except ValueError as exc:
                raise self.fail(w, str(exc)) from None
        where: Callable[[Mapping[str, Any]], bool] | None = None
        if "where" in kwargs:
            w = kwargs["where"]
            if not isinstance(w, ast.Constant) or not isinstance(w.value, str):
                raise self.fail(w, "where= takes a quoted condition over properties")
            try:
                inner = compile_condition(w.value)
            except ConditionError as exc:
                # inside the quotes: one past the opening quote, plus the inner offset
                raise ConditionError(
                    f"in where=: {exc}", self.lead + self.col(w.col_offset) + 1 + exc.offset
                ) from None
            if inner.uses_history:
                raise self.fail(w, "where= may only test the event's properties")

            def where_fn(props: Mapping[str, Any], inner: Condition = inner) -> bool:
                return inner(Scope(properties=props))

            where = where_fn
        return lambda s: s.history.count_events(ev, within, where) if s.history else 0

    def literal_str(self, n: ast.Call, args: list[ast.expr], example: str) -> str:
        if (
            len(args) != 1
            or not isinstance(args[0], ast.Constant)
            or not isinstance(args[0].value, str)
        ):
            raise self.fail(n, f"expected one quoted name, e.g. {example}")
        return args[0].value


def _neg(v: Any) -> Any:
    return -v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _arith(op: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    if op is operator.add and isinstance(a, str) and isinstance(b, str):
        return a + b
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
        return None
    try:
        return op(a, b)
    except ZeroDivisionError:
        return None
