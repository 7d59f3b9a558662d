"""The journey language: schema, loader, validator, compiler and diagrams.

Pure: no database, no network; it reads files and nothing else.
"""

from journeys.catalog import Catalog, ChannelInfo
from journeys.compiler import JourneyVersion, StateModel, compile_journey
from journeys.conditions import Condition, Scope, compile_condition
from journeys.errors import ConditionError, JourneyLoadError, Problem
from journeys.loader import JourneySet, load_paths, load_texts
from journeys.schema import Journey, json_schema

__all__ = [
    "Catalog",
    "ChannelInfo",
    "Condition",
    "ConditionError",
    "Journey",
    "JourneyLoadError",
    "JourneySet",
    "JourneyVersion",
    "Problem",
    "Scope",
    "StateModel",
    "compile_condition",
    "compile_journey",
    "json_schema",
    "load_paths",
    "load_texts",
]
