"""Loading a journey set: parse -> validate -> compile, all or nothing.

Every file is parsed and checked even after the first failure, so ``parcours validate``
reports everything at once; but if any file has a problem, no journey of the set is
returned (a daemon never runs half a configuration).
"""

from __future__ import annotations

import gc
import re
import typing
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from journeys.catalog import Catalog
from journeys.compiler import JourneyVersion, compile_journey
from journeys.errors import JourneyLoadError, Problem
from journeys.schema import STEP_TYPES, Journey
from journeys.validate import Validator, listing, suggest
from journeys.yamlsource import Path, SourceMap, read_yaml

JOURNEY_SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 1_000_000


@dataclass(frozen=True)
class JourneySet:
    """The journeys of one configuration, by name."""

    journeys: Mapping[str, JourneyVersion]

    def __getitem__(self, name: str) -> JourneyVersion:
        try:
            return self.journeys[name]
        except KeyError:
            raise KeyError(
                f"no journey named {name!r}; journeys are: {listing(set(self.journeys))}"
            ) from None

    def __iter__(self) -> Iterator[JourneyVersion]:
        return iter(self.journeys.values())

    def __len__(self) -> int:
        return len(self.journeys)

    def __contains__(self, name: object) -> bool:
        return name in self.journeys


def journey_files(paths: Iterable[str | FsPath]) -> list[FsPath]:
    """Files named by ``paths``; a directory contributes its ``*.yaml``/``*.yml`` (not
    sub-directories, where templates live)."""
    out: list[FsPath] = []
    for p in map(FsPath, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix in JOURNEY_SUFFIXES and f.is_file())
        else:
            out.append(p)
    return out


def load_paths(paths: Iterable[str | FsPath], catalog: Catalog) -> JourneySet:
    """Load every journey under ``paths``; raise JourneyLoadError with every problem."""
    sources: list[tuple[str, str]] = []
    problems: list[Problem] = []
    for f in journey_files(paths):
        try:
            if f.stat().st_size > MAX_FILE_BYTES:
                problems.append(
                    Problem(
                        str(f),
                        0,
                        0,
                        f"file is larger than {MAX_FILE_BYTES} "
                        "bytes; a journey file should be small",
                    )
                )
                continue
            sources.append((str(f), f.read_text(encoding="utf-8")))
        except FileNotFoundError:
            problems.append(Problem(str(f), 0, 0, "no such file or directory"))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(f), 0, 0, f"cannot read the file: {exc}"))
    if problems:
        raise JourneyLoadError(problems)
    return load_texts(sources, catalog)


@contextmanager
def _cyclic_gc_paused() -> Generator[None, None, None]:
    """Pause the cyclic garbage collector while a set is built.

    Loading allocates many long-lived container objects (models, machines, compiled
    conditions); each allocation burst triggers collections that walk all of them again,
    which doubled the time of a 1,000-journey load. Reference counting still frees garbage
    meanwhile; the collector runs again as usual afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            _age_young_objects()
            gc.enable()


def _age_young_objects() -> None:
    """Move everything allocated during the load into the oldest generation.

    Resumed as is, the collector would first walk the whole new set as "young" objects
    (a tenth of the load time for 1,000 journeys), only to promote them. ``freeze`` then
    ``unfreeze`` moves them to the oldest generation without walking them; they are looked
    at in the next full collection, like any long-lived data, and garbage among them is
    still collected then. Skipped when the application froze objects itself (unfreezing
    would undo that).
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


def load_texts(sources: Iterable[tuple[str, str]], catalog: Catalog) -> JourneySet:
    """Load journeys from ``(file name, text)`` pairs (the core of ``load_paths``)."""
    with _cyclic_gc_paused():
        return _load_texts(sources, catalog)


def _load_texts(sources: Iterable[tuple[str, str]], catalog: Catalog) -> JourneySet:
    problems: list[Problem] = []
    versions: dict[str, JourneyVersion] = {}
    first_seen: dict[str, str] = {}
    for file, text in sources:
        version, file_problems = load_one(file, text, catalog)
        problems += file_problems
        if version is None:
            continue
        if version.name in first_seen:
            problems.append(
                Problem(
                    file,
                    1,
                    1,
                    f"journey name {version.name!r} is already used "
                    f"by {first_seen[version.name]}; names must be unique",
                )
            )
            continue
        first_seen[version.name] = file
        versions[version.name] = version
    if problems:
        raise JourneyLoadError(problems)
    return JourneySet(versions)


def load_one(file: str, text: str, catalog: Catalog) -> tuple[JourneyVersion | None, list[Problem]]:
    """Parse, validate and compile one file; return the version or the problems."""
    data, smap, problems = read_yaml(text, file)
    if problems:
        return None, problems
    if not isinstance(data, dict):
        return None, [
            smap.problem(
                (),
                "a journey file is a mapping with 'journey', 'entry' and "
                f"'steps' at the top; found {type(data).__name__}",
            )
        ]
    try:
        journey = Journey.model_validate(data)
    except ValidationError as exc:
        # a value that fits no member of a union fails once per member: report it once
        found = {_problem(smap, data, err): None for err in exc.errors()}
        return None, list(found)
    validator = Validator(journey, smap, catalog)
    problems = validator.run()
    if problems:
        return None, problems
    return compile_journey(journey, file, validator.conditions, validator.edges), []


# -- turning pydantic's errors into a designer's -----------------------------------------
#: Union member tags pydantic puts into error locations, which are not keys of the file.
_UNION_TAGS = frozenset({"str", "constrained-str", "int", "float", "bool", "none"})
_MODEL_TAGS = frozenset({"EventMatch", "TimeWindow"})


def _is_tag(part: str) -> bool:
    return (
        part in _UNION_TAGS
        or part in _MODEL_TAGS
        or part.startswith(("function-", "dict[", "list["))
        or part == "[key]"
    )


def _normalise(loc: tuple[int | str, ...]) -> Path:
    """Drop discriminator tags pydantic puts into locations (``steps.2.wait.timeout``),
    union member tags (``constrained-str``, ``dict[...]``) and function-validator markers,
    leaving the path as written in the file."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and (
            (
                part in STEP_TYPES
                and i >= 2
                and loc[i - 2] == "steps"
                and isinstance(loc[i - 1], int)
            )
            or _is_tag(part)
        ):
            continue
        out.append(part)
    return tuple(out)


def _where(path: Path, data: Any) -> str:
    """A path as a designer reads it: ``step 'wait': for[0].where`` rather than
    ``steps.1.for.0.where``."""
    if not path:
        return "the top level"
    head = ""
    rest = path
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        steps = data.get("steps") if isinstance(data, dict) else None
        step = steps[path[1]] if isinstance(steps, list) and path[1] < len(steps) else None
        sid = step.get("id") if isinstance(step, dict) else None
        head = f"step {sid!r}" if isinstance(sid, str) else f"steps[{path[1]}]"
        rest = path[2:]
    text = ""
    for part in rest:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    if head:
        return f"{head}: {text}" if text else head
    return text


def _models_in(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(tp):
        found += _models_in(arg)
    return found


def _pick(candidates: list[type[BaseModel]], node: Any) -> type[BaseModel] | None:
    if len(candidates) == 1:
        return candidates[0]
    if isinstance(node, dict) and isinstance(node.get("type"), str):
        for c in candidates:
            field = c.model_fields.get("type")
            if field is not None and node["type"] in typing.get_args(field.annotation):
                return c
    return None


def _model_at(data: Any, path: Path) -> type[BaseModel] | None:
    """The model class that describes the mapping at ``path`` (to list its valid fields)."""
    candidates: list[type[BaseModel]] = [Journey]
    node = data
    for part in path:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            continue
        model = _pick(candidates, node)
        if model is None:
            return None
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return None
        candidates = _models_in(field.annotation)
        node = node.get(part) if isinstance(node, dict) else None
    return _pick(candidates, node)


def _fields(model: type[BaseModel]) -> set[str]:
    return {f.alias or n for n, f in model.model_fields.items()}


def _problem(smap: SourceMap, data: Any, err: ErrorDetails) -> Problem:
    loc = tuple(err["loc"])
    path = _normalise(loc)
    kind = err["type"]
    where = _where(path, data)
    if loc and loc[-1] == "[key]":
        name = str(path[-1]) if path else ""
        return smap.problem(
            path,
            f"invalid name {name!r} in {_where(path[:-1], data)}: names start with a letter "
            "and use letters, digits, '_' and '-'",
            key=True,
        )
    if "on_reaction" in path[-2:]:
        return smap.problem(
            path,
            f"{where}: write a step id (on_reaction: thanks), or a mapping from each "
            "awaited event to a step id (on_reaction: {email.clicked: thanks})",
        )
    if kind == "extra_forbidden":
        model = _model_at(data, path[:-1])
        name = str(path[-1])
        valid = _fields(model) if model else set()
        return smap.problem(
            path,
            f"unknown field {name!r}{suggest(name, valid)}; valid fields here: {listing(valid)}",
            key=True,
        )
    if kind == "missing":
        model = _model_at(data, path[:-1])
        ctx = f" in {model.__name__.removesuffix('Step').lower()}" if model else ""
        if model is not None and model.__name__.endswith("Step"):
            ctx = f" in this {model.__name__.removesuffix('Step').lower()} step"
        return smap.problem(path, f"missing required field {str(path[-1])!r}{ctx}")
    if kind == "union_tag_invalid":
        tag = str(err.get("input", {}).get("type") if isinstance(err.get("input"), dict) else "")
        return smap.problem(
            (*path, "type"),
            f"unknown step type {tag!r}"
            f"{suggest(tag, set(STEP_TYPES))}; valid types: "
            f"{', '.join(STEP_TYPES)}",
        )
    if kind == "union_tag_not_found":
        return smap.problem(path, f"a step needs 'type': one of {', '.join(STEP_TYPES)}")
    if kind == "string_pattern_mismatch":
        value = err.get("input")
        field = str(path[-1]) if path else "value"
        hint = {
            "id": "ids start with a letter and use letters, digits, '_' and '-'",
            "journey": "journey names are lower-case: letters, digits, '_' and '-'",
        }.get(field, f"it must match {err.get('ctx', {}).get('pattern', '')}")
        if field in ("event",) or (len(path) >= 2 and path[-2] in ("for", "exit_on")):
            hint = "event names start with a letter and use letters, digits, '.', '_', ':', '-'"
        return smap.problem(path, f"invalid {field} {value!r}: {hint}")
    message = err["msg"].removeprefix("Value error, ")
    if "instance of EventMatch" in message:
        message = "write an event name (email.opened) or {event: email.clicked, where: ...}"
    elif "instance of TimeWindow" in message:
        message = "write a window ('09:00-18:00') or {window: '09:00-18:00', days: [mon, tue]}"
    else:
        message = _INSTANCE_OF.sub("", message).replace("valid dictionary", "mapping (key: value)")
    return smap.problem(path, f"{where}: {message}")


_INSTANCE_OF = re.compile(r" or instance of \w+")
