"""YAML reading that remembers where every value came from.

PyYAML's composer gives node marks (line, column); we walk the node tree ourselves to build
plain Python data plus a map from each value's path to its position. That map is what lets
every validation error, including pydantic's, name a line and column. Duplicate mapping
keys are reported instead of silently overwritten, and only plain data types are built
(no Python object tags), so reading a file can never execute anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from journeys.errors import Problem

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    """1-based line and column of a value (or of a mapping key)."""

    line: int
    column: int


@dataclass(slots=True)
class SourceMap:
    """Positions of values and keys by path, for one file.

    Positions are looked up in the YAML node tree only when a problem is reported: loading a
    valid file never pays for them (a start-up with a thousand journeys would, otherwise).
    """

    file: str
    root: yaml.Node | None = None

    def locate(self, path: Path, *, key: bool = False) -> Position:
        """The position of ``path``, or of its nearest located ancestor. With ``key`` the
        position of the mapping key that names the value (where an unknown field is)."""
        node = self.root
        if node is None:
            return Position(1, 1)
        found = _pos(node)
        for part in path:
            child: yaml.Node | None = None
            key_node: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                for knode, vnode in node.value:
                    if isinstance(knode, yaml.ScalarNode) and str(knode.value) == part:
                        key_node, child = knode, vnode
                        break
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(part, int)
                and 0 <= part < len(node.value)
            ):
                child = node.value[part]
            if child is None:
                break
            node = child
            found = _pos(key_node) if key and key_node is not None else _pos(child)
        return found

    def problem(self, path: Path, message: str, *, key: bool = False, offset: int = 0) -> Problem:
        pos = self.locate(path, key=key)
        return Problem(self.file, pos.line, pos.column + offset, message)


# libyaml's parser (when PyYAML was built with it) is several times faster than the pure
# Python one and gives the same marks; a daemon loading a thousand journeys at start-up feels
# the difference (see docs/benchmarks.md).
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """SafeLoader: only standard tags, never arbitrary objects.

    Plain scalars are tagged ``!plain`` instead of being resolved here: most are strings,
    and ``_Builder`` resolves the few that may be numbers, booleans or null itself, which
    spares a regular-expression pass per scalar."""

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode:
            return _PLAIN if implicit[0] else _STR_TAG  # quoted scalars are strings
        # untagged mappings and sequences always get the default tags
        return _MAP_TAG if kind is yaml.MappingNode else _SEQ_TAG

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        """No path resolvers are registered; skip the per-node bookkeeping."""

    def ascend_resolver(self) -> None:
        """See ``descend_resolver``."""


_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN = "!plain"
#: First characters of plain scalars that YAML 1.1 may resolve to something else than a
#: string (numbers, booleans, null, timestamps, ``<<`` merge keys). A lone ``=`` (YAML 1.1
#: "value" tag, which PyYAML cannot build) stays a string.
_MAYBE_TYPED = frozenset("0123456789+-.~nNtTfFyYoO<")
_RESOLVER = yaml.resolver.Resolver()
#: The only words YAML 1.1 (as PyYAML reads it) turns into booleans or null.
_WORDS = frozenset(
    [
        "yes",
        "Yes",
        "YES",
        "no",
        "No",
        "NO",
        "true",
        "True",
        "TRUE",
        "false",
        "False",
        "FALSE",
        "on",
        "On",
        "ON",
        "off",
        "Off",
        "OFF",
        "null",
        "Null",
        "NULL",
    ]
)
#: Aliases can make a small file expand into an enormous document ("billion laughs").
MAX_NODES = 200_000


def _pos(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _TooLarge(Exception):
    pass


class _Builder:
    """Builds plain data from a node tree. A class rather than a recursive closure: a closure
    that calls itself is a reference cycle, which kept every node of every file alive until
    the cyclic collector ran."""

    __slots__ = ("budget", "constructor", "file", "problems")

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        self.constructor = SafeConstructor()
        self.budget = MAX_NODES

    def report(self, node: yaml.Node, message: str) -> None:
        pos = _pos(node)
        self.problems.append(Problem(self.file, pos.line, pos.column, message))

    def build(self, node: yaml.Node) -> Any:
        # The hot loop of a load: plain string scalars (most values) are taken inline
        # without a call, and the alias-bomb budget is counted per collection item.
        if type(node) is yaml.ScalarNode:
            return self.scalar(node)
        if type(node) is yaml.MappingNode:
            items = node.value
            self.spend(len(items))
            out: dict[str, Any] = {}
            merged: list[yaml.MappingNode] = []
            for knode, vnode in items:
                if type(knode) is not yaml.ScalarNode:
                    self.report(knode, "mapping keys must be plain strings")
                    continue
                k = knode.value
                if k == "<<" and knode.tag in (_PLAIN, _MERGE_TAG):
                    sources = vnode.value if type(vnode) is yaml.SequenceNode else [vnode]
                    for src in sources:
                        if type(src) is yaml.MappingNode:
                            merged.append(src)
                        else:
                            self.report(src, "'<<' merges a mapping (or a list of mappings)")
                    continue
                if k in out:
                    self.report(knode, f"duplicate key {k!r}: each key may appear once")
                    continue
                if type(vnode) is yaml.ScalarNode and vnode.tag == _PLAIN:
                    v = vnode.value
                    if v and v[0] not in _MAYBE_TYPED:
                        out[k] = v
                        continue
                out[k] = self.build(vnode)
            for src in merged:  # keys written here win over merged ones, first merge wins
                for k, v in self.build(src).items():
                    out.setdefault(k, v)
            return out
        if type(node) is yaml.SequenceNode:
            self.spend(len(node.value))
            return [self.build(item) for item in node.value]
        self.report(node, "unsupported YAML node")
        return None

    def spend(self, n: int) -> None:
        self.budget -= n
        if self.budget < 0:
            raise _TooLarge

    def scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        if tag == _PLAIN:
            value: str = node.value
            if not value:
                return None  # an empty plain scalar is null
            first = value[0]
            if first not in _MAYBE_TYPED or (first.isalpha() and value not in _WORDS):
                return value
            tag = node.tag = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
        if tag == _STR_TAG:
            return node.value
        try:
            return self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            self.report(node, f"bad value: {exc}")
            return None


def read_yaml(text: str, file: str) -> tuple[Any, SourceMap, list[Problem]]:
    """Parse one YAML document into plain data and its source map.

    Returns ``(data, source_map, problems)``; on a syntax error data is ``None`` and the
    problem points at the mark PyYAML reports.
    """
    smap = SourceMap(file)
    problems: list[Problem] = []
    try:
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or str(exc)
        problems.append(Problem(file, line, col, f"YAML syntax error: {what}"))
        return None, smap, problems
    except yaml.YAMLError as exc:
        problems.append(Problem(file, 1, 1, f"YAML error: {exc}"))
        return None, smap, problems
    if root is None:
        problems.append(
            Problem(
                file,
                1,
                1,
                "the file is empty: a journey needs at least 'journey', 'entry' and 'steps'",
            )
        )
        return None, smap, problems
    smap.root = root
    builder = _Builder(file, problems)
    try:
        data = builder.build(root)
    except RecursionError:
        problems.append(Problem(file, 1, 1, "the document is nested too deeply"))
        return None, smap, problems
    except _TooLarge:
        problems.append(
            Problem(
                file,
                1,
                1,
                f"the document expands to more than {MAX_NODES} values "
                "(through aliases?); a journey file should be small",
            )
        )
        return None, smap, problems
    return data, smap, problems


def _astuple(p: Position) -> tuple[int, int]:
    return p.line, p.column
