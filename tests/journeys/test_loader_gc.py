"""Loading pauses the cyclic garbage collector and hands the new set to the oldest
generation; nothing may leak and the application's own gc settings must survive."""

from __future__ import annotations

import gc
import weakref

from journeys import load_texts
from tests.journeys.helpers import CATALOG, MINIMAL


def test_collector_is_enabled_again_and_a_dropped_set_is_collected() -> None:
    assert gc.isenabled()
    loaded = load_texts([("a.yaml", MINIMAL)], CATALOG)
    assert gc.isenabled()
    machine_ref = weakref.ref(loaded["t"].machine)
    del loaded
    gc.collect()
    assert machine_ref() is None, "a dropped journey set must be garbage-collected"


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        load_texts([("a.yaml", MINIMAL)], CATALOG)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_objects_the_application_froze_stay_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        load_texts([("a.yaml", MINIMAL)], CATALOG)
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
